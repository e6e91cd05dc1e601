package service

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/linkgate/linkgate/export"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// ExportSource runs an export's rows through the Stream RPCs themselves,
// in process: the same compile, pager, scheduler, ledger and tokens as a
// caller's stream, so an export holds exactly the rows a stream of the
// same request sends, and is paid for the same way.
type ExportSource struct {
	Backlinks *BacklinksServer
}

var _ export.Source = (*ExportSource)(nil)

// Run streams the request of r for tenant from token ("" = where the
// request starts), emitting every message of the stream as a chunk.
func (s *ExportSource) Run(ctx context.Context, tenant string, r export.Request, token string, emit func(export.Chunk) error) error {
	ctx = WithCaller(ctx, Caller{Tenant: tenant, Role: RoleReader})
	b := s.Backlinks
	switch r.Dataset {
	case exportBacklinks:
		return runStream(ctx, r.Message, token, emit, b.StreamBacklinks,
			func(m *v1.StreamBacklinksResponse) ([]*v1.Backlink, string, *v1.PageCost) {
				return m.Backlinks, m.NextPageToken, m.Cost
			})
	case exportRefDomains:
		return runStream(ctx, r.Message, token, emit, b.StreamRefDomains,
			func(m *v1.StreamRefDomainsResponse) ([]*v1.RefDomain, string, *v1.PageCost) {
				return m.RefDomains, m.NextPageToken, m.Cost
			})
	case exportBrokenBacklinks:
		return runStream(ctx, r.Message, token, emit, b.StreamBrokenBacklinks,
			func(m *v1.StreamBrokenBacklinksResponse) ([]*v1.BrokenBacklink, string, *v1.PageCost) {
				return m.BrokenBacklinks, m.NextPageToken, m.Cost
			})
	case exportNewLost:
		return runStream(ctx, r.Message, token, emit, b.StreamNewLostBacklinks,
			func(m *v1.StreamNewLostBacklinksResponse) ([]*v1.NewLostBacklink, string, *v1.PageCost) {
				return m.NewLostBacklinks, m.NextPageToken, m.Cost
			})
	}
	return fmt.Errorf("service: an export of unknown dataset %q", r.Dataset)
}

// streamMessage is a Stream request with a page token.
type streamMessage[Req any] interface {
	*Req
	proto.Message
	GetPageToken() string
}

// runStream decodes a Stream request, resumes it at token, and calls the
// handler with a stream that hands each message to emit.
func runStream[Req any, Resp any, Row proto.Message, R streamMessage[Req]](
	ctx context.Context, msg []byte, token string, emit func(export.Chunk) error,
	handler func(R, grpc.ServerStreamingServer[Resp]) error,
	split func(*Resp) ([]Row, string, *v1.PageCost),
) error {
	req := R(new(Req))
	if err := proto.Unmarshal(msg, req); err != nil {
		return fmt.Errorf("service: an export's stored request does not decode: %w", err)
	}
	if token != "" {
		// Every Stream request has a page_token field.
		fd := req.ProtoReflect().Descriptor().Fields().ByName("page_token")
		req.ProtoReflect().Set(fd, protoreflect.ValueOfString(token))
	}
	return handler(req, &chunkStream[Resp, Row]{ctx: ctx, emit: emit, split: split})
}

// chunkStream is the server side of a Stream RPC whose messages become
// chunks, synchronously: the handler reuses a message's rows once Send
// returns, and emit reads them before.
type chunkStream[Resp any, Row proto.Message] struct {
	ctx   context.Context
	emit  func(export.Chunk) error
	split func(*Resp) ([]Row, string, *v1.PageCost)
	rows  []proto.Message
}

func (c *chunkStream[Resp, Row]) Send(m *Resp) error {
	rows, token, cost := c.split(m)
	c.rows = c.rows[:0]
	for _, r := range rows {
		c.rows = append(c.rows, r)
	}
	return c.emit(export.Chunk{Rows: c.rows, Token: token, Units: cost.GetUnitsCharged()})
}

func (c *chunkStream[Resp, Row]) SendMsg(m any) error {
	resp, ok := m.(*Resp)
	if !ok {
		return fmt.Errorf("service: an export stream cannot send %T", m)
	}
	return c.Send(resp)
}

func (c *chunkStream[Resp, Row]) Context() context.Context     { return c.ctx }
func (c *chunkStream[Resp, Row]) SetHeader(metadata.MD) error  { return nil }
func (c *chunkStream[Resp, Row]) SendHeader(metadata.MD) error { return nil }
func (c *chunkStream[Resp, Row]) SetTrailer(metadata.MD)       {}
func (c *chunkStream[Resp, Row]) RecvMsg(any) error {
	return fmt.Errorf("service: an export stream receives nothing")
}
