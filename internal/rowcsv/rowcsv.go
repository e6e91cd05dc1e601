// Package rowcsv turns row messages into the columns and cells of a CSV
// table, from their fields through protoreflect: the REST CSV output and
// the CSV parts of an export both write rows with it, so the two cannot
// spell a value differently. A cell is the text the row's JSON
// (protojson with the proto field names) has for the field.
//
// A new/lost row nests the backlink it carries; its table is flat: change
// and change_time first, then the backlink's fields.
package rowcsv

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// EventColumns lead the columns of a new/lost row, in this order.
var EventColumns = []string{"change", "change_time"}

// Columns are the columns of a table: the selected fields in order, each
// once (an item of sel may itself be a comma-separated list), or defaults
// when none is named; for new/lost rows (events) after EventColumns.
func Columns(sel, defaults []string, events bool) []string {
	var cols []string
	for _, item := range sel {
		for name := range strings.SplitSeq(item, ",") {
			name = strings.TrimSpace(name)
			if events && slices.Contains(EventColumns, name) {
				continue // always the first columns
			}
			if name != "" && !slices.Contains(cols, name) {
				cols = append(cols, name)
			}
		}
	}
	if len(cols) == 0 {
		cols = slices.Clone(defaults)
	}
	if events {
		cols = append(slices.Clone(EventColumns), cols...)
	}
	return cols
}

// Lookup finds the field of a column in a row: in the backlink a new/lost
// row carries, whose fields come first, or in the row itself. ok is false
// when the field is absent (not selected, or null), which the row's JSON
// leaves out.
func Lookup(row protoreflect.Message, column string) (m protoreflect.Message, fd protoreflect.FieldDescriptor, ok bool) {
	fields := row.Descriptor().Fields()
	if bl := Nested(row.Descriptor()); bl != nil && row.Has(bl) {
		inner := row.Get(bl).Message()
		if fd := inner.Descriptor().Fields().ByName(protoreflect.Name(column)); fd != nil && inner.Has(fd) {
			return inner, fd, true
		}
	}
	fd = fields.ByName(protoreflect.Name(column))
	if fd == nil || !row.Has(fd) {
		return nil, nil, false
	}
	return row, fd, true
}

// Nested is the field of a row type that carries a nested row (the
// backlink of a new/lost row), or nil.
func Nested(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	if bl := md.Fields().ByName("backlink"); bl != nil && bl.Kind() == protoreflect.MessageKind && !bl.IsList() {
		return bl
	}
	return nil
}

// Cell is the text of one column of a row, empty when the field is absent.
func Cell(row protoreflect.Message, column string) string {
	m, fd, ok := Lookup(row, column)
	if !ok {
		return ""
	}
	return Text(fd, m.Get(fd))
}

// Text renders one value as the JSON of the row spells it: text as is,
// numbers and booleans as JSON writes them, timestamps in RFC 3339 (UTC),
// lists as a JSON array, and the change of a new/lost row as new or lost.
func Text(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	if fd.IsList() {
		l := v.List()
		items := make([]string, l.Len())
		for i := range l.Len() {
			items[i] = Scalar(fd, l.Get(i))
		}
		b, _ := json.Marshal(items)
		return string(b)
	}
	if fd.Kind() == protoreflect.EnumKind && fd.Name() == "change" {
		return strings.ToLower(strings.TrimPrefix(Scalar(fd, v), "CHANGE_"))
	}
	return Scalar(fd, v)
}

// Scalar is one value in protojson's text: 64-bit integers, which JSON
// quotes, and floats as their shortest form (an exponent outside
// [1e-6, 1e21)); NaN and the infinities by name.
func Scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.FormatInt(v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.FormatUint(v.Uint(), 10)
	case protoreflect.DoubleKind:
		return jsonFloat(v.Float(), 64)
	case protoreflect.FloatKind:
		return jsonFloat(v.Float(), 32)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return strconv.Itoa(int(v.Enum()))
	case protoreflect.MessageKind:
		if ts, ok := v.Message().Interface().(*timestamppb.Timestamp); ok {
			return RFC3339(ts)
		}
	}
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(v.Message().Interface())
	return string(b)
}

// jsonFloat formats f as protojson (and encoding/json) do.
func jsonFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21)) {
		format = 'e'
	}
	s := strconv.FormatFloat(f, format, -1, bits)
	if format == 'e' {
		// e-09 to e-9, as JSON writes exponents.
		if n := len(s); n >= 4 && s[n-4] == 'e' && s[n-3] == '-' && s[n-2] == '0' {
			s = s[:n-2] + s[n-1:]
		}
	}
	return s
}

// RFC3339 is a timestamp as protojson writes it: UTC, with 0, 3, 6 or 9
// digits of fraction.
func RFC3339(ts *timestamppb.Timestamp) string {
	t := time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
	s := t.Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return s + "Z"
}
