package service

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/linkgate/linkgate/export"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
)

// ExportSource runs an export's rows through the Stream RPCs themselves,
// in process: the same compile, pager, scheduler, ledger and tokens as a
// caller's stream, so an export holds exactly the rows a stream of the
// same request sends, and is paid for the same way.
type ExportSource struct {
	Backlinks *BacklinksServer
}

var _ export.Source = (*ExportSource)(nil)

// Run streams the request of r for tenant from a checkpoint ("" = where
// the request starts), emitting every message of the stream as a chunk.
//
// A chunk's token is a checkpoint: the page token after its rows plus the
// rows and units the export has used up to there, so that the request's
// max_rows and max_units (which bound one Stream call) bound the whole
// export however many times it resumes.
func (s *ExportSource) Run(ctx context.Context, tenant string, r export.Request, checkpoint string, emit func(export.Chunk) error) error {
	ctx = context.WithValue(WithCaller(ctx, Caller{Tenant: tenant, Role: RoleReader}), backgroundKey{}, true)
	at, err := parseCheckpoint(checkpoint)
	if err != nil {
		return err
	}
	b := s.Backlinks
	switch r.Dataset {
	case paging.Backlinks.Label():
		return runStream(ctx, r.Message, at, emit, b.StreamBacklinks,
			func(m *v1.StreamBacklinksResponse) ([]*v1.Backlink, string, *v1.PageCost) {
				return m.Backlinks, m.NextPageToken, m.Cost
			})
	case paging.RefDomains.Label():
		return runStream(ctx, r.Message, at, emit, b.StreamRefDomains,
			func(m *v1.StreamRefDomainsResponse) ([]*v1.RefDomain, string, *v1.PageCost) {
				return m.RefDomains, m.NextPageToken, m.Cost
			})
	case paging.BrokenBacklinks.Label():
		return runStream(ctx, r.Message, at, emit, b.StreamBrokenBacklinks,
			func(m *v1.StreamBrokenBacklinksResponse) ([]*v1.BrokenBacklink, string, *v1.PageCost) {
				return m.BrokenBacklinks, m.NextPageToken, m.Cost
			})
	case paging.NewLost.Label():
		return runStream(ctx, r.Message, at, emit, b.StreamNewLostBacklinks,
			func(m *v1.StreamNewLostBacklinksResponse) ([]*v1.NewLostBacklink, string, *v1.PageCost) {
				return m.NewLostBacklinks, m.NextPageToken, m.Cost
			})
	}
	return fmt.Errorf("service: an export of unknown dataset %q", r.Dataset)
}

// backgroundKey marks the context of a stream that runs an export: no one
// waits for its first rows, so all of its pages are bulk work.
type backgroundKey struct{}

func background(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// checkpoint is where an export stands: the page token that resumes after
// its last row, and the rows and units it used to get there.
type checkpoint struct {
	rows, units int64
	token       string
}

// String is the checkpoint as a chunk's token: rows:units:page token,
// or "" at the end of the data.
func (c checkpoint) String() string {
	if c.token == "" {
		return ""
	}
	return strconv.FormatInt(c.rows, 10) + ":" + strconv.FormatInt(c.units, 10) + ":" + c.token
}

func parseCheckpoint(s string) (checkpoint, error) {
	if s == "" {
		return checkpoint{}, nil
	}
	parts := strings.SplitN(s, ":", 3)
	if len(parts) == 3 {
		rows, err1 := strconv.ParseInt(parts[0], 10, 64)
		units, err2 := strconv.ParseInt(parts[1], 10, 64)
		if err1 == nil && err2 == nil && rows >= 0 && units >= 0 && parts[2] != "" {
			return checkpoint{rows: rows, units: units, token: parts[2]}, nil
		}
	}
	return checkpoint{}, fmt.Errorf("service: %q is not an export checkpoint", s)
}

// CheckpointPageToken is the page token of an export's checkpoint: what a
// Stream call of the same request resumes from.
func CheckpointPageToken(s string) string {
	c, err := parseCheckpoint(s)
	if err != nil {
		return ""
	}
	return c.token
}

// exportRequest is a Stream request as an export runs it.
type exportRequest[Req any] interface {
	*Req
	proto.Message
	GetMaxRows() int64
	GetMaxUnits() int64
}

// runStream decodes a Stream request, resumes it at a checkpoint with what
// is left of its bounds, and calls the handler with a stream that hands
// each message to emit.
func runStream[Req any, Resp any, Row proto.Message, R exportRequest[Req]](
	ctx context.Context, msg []byte, at checkpoint, emit func(export.Chunk) error,
	handler func(R, grpc.ServerStreamingServer[Resp]) error,
	split func(*Resp) ([]Row, string, *v1.PageCost),
) error {
	req := R(new(Req))
	if err := proto.Unmarshal(msg, req); err != nil {
		return fmt.Errorf("service: an export's stored request does not decode: %w", err)
	}
	m := req.ProtoReflect()
	set := func(name string, v protoreflect.Value) {
		m.Set(m.Descriptor().Fields().ByName(protoreflect.Name(name)), v)
	}
	if at.token != "" {
		set("page_token", protoreflect.ValueOfString(at.token))
	}
	if n := req.GetMaxRows(); n > 0 {
		if n <= at.rows {
			return nil
		}
		set("max_rows", protoreflect.ValueOfInt64(n-at.rows))
	}
	if n := req.GetMaxUnits(); n > 0 {
		if n <= at.units {
			return nil
		}
		set("max_units", protoreflect.ValueOfInt64(n-at.units))
	}
	return handler(req, &chunkStream[Resp, Row]{ctx: ctx, emit: emit, split: split, at: at})
}

// chunkStream is the server side of a Stream RPC whose messages become
// chunks, synchronously: the handler reuses a message's rows once Send
// returns, and emit reads them before.
type chunkStream[Resp any, Row proto.Message] struct {
	ctx   context.Context
	emit  func(export.Chunk) error
	split func(*Resp) ([]Row, string, *v1.PageCost)
	rows  []proto.Message
	at    checkpoint // after the last message sent
}

func (c *chunkStream[Resp, Row]) Send(m *Resp) error {
	rows, token, cost := c.split(m)
	c.rows = c.rows[:0]
	for _, r := range rows {
		c.rows = append(c.rows, r)
	}
	units := cost.GetUnitsCharged()
	c.at = checkpoint{rows: c.at.rows + int64(len(rows)), units: c.at.units + units, token: token}
	return c.emit(export.Chunk{Rows: c.rows, Token: c.at.String(), Units: units})
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
