package service

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// TestBoundsAreCheckedOnce: the bounds interceptors mark the context of a
// request they checked, so the handler does not check it again; a handler
// called in process, without them, checks the bounds itself.
func TestBoundsAreCheckedOnce(t *testing.T) {
	marked := func(ctx context.Context) bool { v, _ := ctx.Value(checkedKey{}).(bool); return v }
	ctx := WithCaller(t.Context(), Caller{Tenant: DefaultTenant, Role: RoleAdmin})
	var seen bool
	_, err := boundsUnary()(ctx, &v1.GetQuotaRequest{}, &grpc.UnaryServerInfo{FullMethod: "/x/Unary"},
		func(ctx context.Context, _ any) (any, error) { seen = marked(ctx); return nil, nil })
	if err != nil || !seen {
		t.Fatalf("unary: the handler's context is not marked checked (%v)", err)
	}
	seen = false
	err = limitStream(newStreamLimiter(1, 1))(nil, &discardStream[v1.StreamBacklinksResponse]{ctx: ctx},
		&grpc.StreamServerInfo{FullMethod: "/x/Stream", IsServerStream: true},
		func(_ any, ss grpc.ServerStream) error { seen = marked(ss.Context()); return nil })
	if err != nil || !seen {
		t.Fatalf("stream: the handler's context is not marked checked (%v)", err)
	}

	h := newHarness(t, harnessOptions{})
	err = h.server.StreamBacklinks(&v1.StreamBacklinksRequest{Target: "example.com", MaxRows: -1},
		&discardStream[v1.StreamBacklinksResponse]{ctx: ctx})
	wantField(t, err, codes.InvalidArgument, "max_rows")
	_, err = h.server.EstimateCost(ctx, &v1.EstimateCostRequest{Rows: -1,
		Request: &v1.EstimateCostRequest_Backlinks{Backlinks: &v1.ListBacklinksRequest{Target: "example.com"}}})
	wantField(t, err, codes.InvalidArgument, "rows")
}
