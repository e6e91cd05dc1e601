package service

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream"
)

// TestCatalogRowsAndPricesInStep keeps three descriptions of the same
// columns from drifting apart: the upstream field catalog (names, kinds,
// unit costs, selectability), the row messages of the proto (one field per
// selectable column, of the matching type, with presence), and the unit
// cost each field's comment in rows.proto promises the caller.
func TestCatalogRowsAndPricesInStep(t *testing.T) {
	costs := protoCosts(t, "../proto/linkgate/v1/rows.proto")
	for _, tc := range []struct {
		ep  upstream.Endpoint
		msg protoreflect.MessageDescriptor
	}{
		{upstream.AllBacklinks, (&v1.Backlink{}).ProtoReflect().Descriptor()},
		{upstream.RefDomains, (&v1.RefDomain{}).ProtoReflect().Descriptor()},
		{upstream.BrokenBacklinks, (&v1.BrokenBacklink{}).ProtoReflect().Descriptor()},
	} {
		s := upstream.MustSchema(tc.ep)
		name := string(tc.msg.Name())
		selectable := map[string]bool{}
		for _, f := range s.Fields() {
			if !f.Select {
				if tc.msg.Fields().ByName(protoreflect.Name(f.Name)) != nil {
					t.Errorf("%s.%s: a row field, but the catalog says %s cannot select it", name, f.Name, tc.ep)
				}
				continue
			}
			selectable[f.Name] = true
			fd := tc.msg.Fields().ByName(protoreflect.Name(f.Name))
			if fd == nil {
				t.Errorf("%s has no field %s, which %s can select", name, f.Name, tc.ep)
				continue
			}
			if want, got := protoKind(f.Kind), kindOf(fd); want != got {
				t.Errorf("%s.%s is %s, the catalog's %s needs %s", name, f.Name, got, f.Kind, want)
			}
			if !fd.IsList() && !fd.HasPresence() {
				t.Errorf("%s.%s has no presence: an unselected field would read as zero", name, f.Name)
			}
			if c, ok := costs[name][f.Name]; !ok || c != f.Cost {
				t.Errorf("%s.%s: rows.proto says %d units per row (found %v), the catalog charges %d", name, f.Name, c, ok, f.Cost)
			}
		}
		for i := range tc.msg.Fields().Len() {
			if fd := tc.msg.Fields().Get(i); !selectable[string(fd.Name())] {
				t.Errorf("%s.%s is not a field %s can select", name, fd.Name(), tc.ep)
			}
		}
	}
}

func protoKind(k upstream.Kind) string {
	switch k {
	case upstream.KindString:
		return "string"
	case upstream.KindInt:
		return "int64"
	case upstream.KindFloat:
		return "double"
	case upstream.KindBool:
		return "bool"
	case upstream.KindTime, upstream.KindDate:
		return "google.protobuf.Timestamp"
	case upstream.KindStringList:
		return "repeated string"
	case upstream.KindIntList:
		return "repeated int64"
	}
	return "?"
}

func kindOf(fd protoreflect.FieldDescriptor) string {
	k := fd.Kind().String()
	if fd.Kind() == protoreflect.MessageKind {
		k = string(fd.Message().FullName())
	}
	if fd.IsList() {
		return "repeated " + k
	}
	return k
}

// protoCosts reads "Costs N unit(s) per row" from the comment above each
// field of each message in a proto file.
func protoCosts(t *testing.T, path string) map[string]map[string]int {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	msgRe := regexp.MustCompile(`^message (\w+) \{`)
	fieldRe := regexp.MustCompile(`^\s+(?:optional |repeated )?[\w.]+ (\w+) = \d+;`)
	costRe := regexp.MustCompile(`Costs (\d+) units? per\s+(?://\s*)?row`)
	out := map[string]map[string]int{}
	msg, comment := "", ""
	for _, line := range strings.Split(string(src), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case msgRe.MatchString(line):
			msg = msgRe.FindStringSubmatch(line)[1]
			out[msg] = map[string]int{}
			comment = ""
		case strings.HasPrefix(trimmed, "//"):
			comment += " " + strings.TrimSpace(strings.TrimPrefix(trimmed, "//"))
		case fieldRe.MatchString(line) && msg != "":
			if m := costRe.FindStringSubmatch(comment); m != nil {
				out[msg][fieldRe.FindStringSubmatch(line)[1]], _ = strconv.Atoi(m[1])
			}
			comment = ""
		default:
			comment = ""
		}
	}
	return out
}
