package service

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/linkgate/linkgate/export"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/rowcsv"
	"github.com/linkgate/linkgate/paging"
)

// DescribeExport says what an export's files hold, for its manifest and
// its CSV and Parquet parts: the row type, the columns, which are those of
// the CSV stream of the same request (its select in order, or the
// dataset's default selection; for new/lost, change and change_time
// first), and the request as the JSON of a CreateExportRequest.
func DescribeExport(r export.Request) (export.Description, error) {
	create, err := exportRequestOf(r)
	if err != nil {
		return export.Description{}, err
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(create)
	if err != nil {
		return export.Description{}, err
	}
	var sel []string
	m := create.ProtoReflect()
	inner := m.Get(m.WhichOneof(m.Descriptor().Oneofs().ByName("request"))).Message()
	list := inner.Get(inner.Descriptor().Fields().ByName("select")).List()
	for i := range list.Len() {
		sel = append(sel, list.Get(i).String())
	}
	return export.Description{
		Row:     exportRow(r.Dataset),
		Columns: rowcsv.Columns(sel, paging.DefaultSelect(r.Dataset), r.Dataset == paging.NewLost.Label()),
		Request: b,
	}, nil
}

// exportRow is the message type of an export's rows.
func exportRow(dataset string) protoreflect.MessageDescriptor {
	switch dataset {
	case paging.Backlinks.Label():
		return (&v1.Backlink{}).ProtoReflect().Descriptor()
	case paging.RefDomains.Label():
		return (&v1.RefDomain{}).ProtoReflect().Descriptor()
	case paging.BrokenBacklinks.Label():
		return (&v1.BrokenBacklink{}).ProtoReflect().Descriptor()
	case paging.NewLost.Label():
		return (&v1.NewLostBacklink{}).ProtoReflect().Descriptor()
	}
	return nil
}

// exportRequestOf rebuilds the CreateExportRequest of a stored job.
func exportRequestOf(r export.Request) (*v1.CreateExportRequest, error) {
	out := &v1.CreateExportRequest{Format: v1.ExportFormat(r.Format), Gzip: r.Gzip}
	var m proto.Message
	switch r.Dataset {
	case paging.Backlinks.Label():
		req := &v1.StreamBacklinksRequest{}
		out.Request, m = &v1.CreateExportRequest_Backlinks{Backlinks: req}, req
	case paging.RefDomains.Label():
		req := &v1.StreamRefDomainsRequest{}
		out.Request, m = &v1.CreateExportRequest_Refdomains{Refdomains: req}, req
	case paging.BrokenBacklinks.Label():
		req := &v1.StreamBrokenBacklinksRequest{}
		out.Request, m = &v1.CreateExportRequest_BrokenBacklinks{BrokenBacklinks: req}, req
	case paging.NewLost.Label():
		req := &v1.StreamNewLostBacklinksRequest{}
		out.Request, m = &v1.CreateExportRequest_NewLostBacklinks{NewLostBacklinks: req}, req
	default:
		return nil, fmt.Errorf("service: an export of unknown dataset %q", r.Dataset)
	}
	if err := proto.Unmarshal(r.Message, m); err != nil {
		return nil, fmt.Errorf("service: an export's stored request does not decode: %w", err)
	}
	return out, nil
}
