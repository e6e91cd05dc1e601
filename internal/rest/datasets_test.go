package rest

import (
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
)

// TestDatasetsMatchTheHTTPRules: each dataset of the catalogue is a List
// and a Stream route of the BacklinksService, whose responses hold its rows
// in the field it names, so the CSV writer finds them.
func TestDatasetsMatchTheHTTPRules(t *testing.T) {
	outputs := map[string]protoreflect.MessageDescriptor{}
	methods := v1.File_linkgate_v1_backlinks_service_proto.Services().ByName("BacklinksService").Methods()
	for i := range methods.Len() {
		md := methods.Get(i)
		if rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule); rule != nil && rule.GetGet() != "" {
			outputs[rule.GetGet()] = md.Output()
		}
	}
	for _, d := range paging.Datasets {
		for _, path := range []string{d.RESTPath(), d.RESTPath() + ":stream"} {
			out, ok := outputs[path]
			if !ok {
				t.Errorf("%s: no GET route %s", d.Label(), path)
				continue
			}
			fd := out.Fields().ByName(protoreflect.Name(d.RowsField()))
			if fd == nil || !fd.IsList() || fd.Kind() != protoreflect.MessageKind {
				t.Errorf("%s: %s has no rows field %q", d.Label(), out.FullName(), d.RowsField())
			}
		}
		if got := datasetAt(d.RESTPath() + ":stream"); got != d {
			t.Errorf("datasetAt(%s:stream) = %v", d.RESTPath(), got)
		}
	}
}
