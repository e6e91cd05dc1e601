package rest

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service"
)

// backlinks answers List and Stream with fixed rows: two stream messages,
// then the end, or an error after them when the target asks for it.
type backlinks struct {
	v1.UnimplementedBacklinksServiceServer
}

func page(anchor, token string) []*v1.Backlink {
	return []*v1.Backlink{{UrlFrom: proto.String("https://a.example/" + token), Anchor: proto.String(anchor)}}
}

func (backlinks) ListBacklinks(_ context.Context, req *v1.ListBacklinksRequest) (*v1.ListBacklinksResponse, error) {
	return &v1.ListBacklinksResponse{Backlinks: page(req.GetTarget(), "t1"), NextPageToken: "t1"}, nil
}

func (backlinks) StreamBacklinks(req *v1.StreamBacklinksRequest, s grpc.ServerStreamingServer[v1.StreamBacklinksResponse]) error {
	if req.GetTarget() == "busy.example" {
		return status.Error(codes.ResourceExhausted, "busy")
	}
	for _, t := range []string{"t1", "t2"} {
		if err := s.Send(&v1.StreamBacklinksResponse{Backlinks: page("row "+t, t), NextPageToken: t}); err != nil {
			return err
		}
	}
	if req.GetTarget() == "fails.example" {
		return status.Error(codes.DeadlineExceeded, "out of time")
	}
	return nil
}

// newTestHandler is the REST handler over a gRPC server of the fake
// services on a loopback port.
func newTestHandler(t *testing.T) http.Handler {
	t.Helper()
	auth, err := service.NewAuthenticator(service.AuthConfig{Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Conn: testConn(t), Health: health.NewServer(), Auth: auth, BodyTimeout: 10e9, MaxRequestBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// testConn is a connection to a gRPC server of the fake services on a
// loopback port.
func testConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1.RegisterBacklinksServiceServer(srv, backlinks{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestQueryParsedOnce: the query string is parsed once, at the edge; what
// comes after (the CSV output, the strict check, the gateway) reads the
// values parsed then, never the query string again.
func TestQueryParsedOnce(t *testing.T) {
	gw := newServeMux()
	if err := v1.RegisterBacklinksServiceHandlerClient(t.Context(), gw, v1.NewBacklinksServiceClient(testConn(t))); err != nil {
		t.Fatal(err)
	}
	h := withQuery(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.RawQuery = "target=again.example&select=nosuch" // what a second parse would read
		csvOutput(gw).ServeHTTP(w, r)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/backlinks?target=once.example&output=csv&select=anchor", nil))
	if want := "anchor\r\nonce.example\r\n"; rec.Code != http.StatusOK || rec.Body.String() != want {
		t.Errorf("%d %q, want %q", rec.Code, rec.Body, want)
	}
}

// TestContentTypes: the Content-Type sent is the one the OpenAPI document
// names: JSON for a List, newline-delimited JSON for a stream (each line a
// JSON object), CSV for CSV; an error before a stream's first message is
// one JSON object.
func TestContentTypes(t *testing.T) {
	srv := httptest.NewServer(newTestHandler(t))
	defer srv.Close()
	for _, tc := range []struct {
		path, accept, want string
		lines              int
	}{
		{"/v1/backlinks?target=example.com", "", "application/json", 1},
		{"/v1/backlinks:stream?target=example.com", "", "application/x-ndjson", 2},
		{"/v1/backlinks:stream?target=example.com", "application/json", "application/x-ndjson", 2},
		{"/v1/backlinks:stream?target=busy.example", "", "application/json", 1},
		{"/v1/backlinks?target=example.com&output=csv", "", "text/csv; charset=utf-8; header=present", 2},
		{"/v1/backlinks:stream?target=example.com", "text/csv", "text/csv; charset=utf-8; header=present", 3},
	} {
		t.Run(tc.path+" "+tc.accept, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("Content-Type"); got != tc.want {
				t.Errorf("Content-Type %q, want %q", got, tc.want)
			}
			var lines []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			if len(lines) != tc.lines {
				t.Errorf("%d lines, want %d: %q", len(lines), tc.lines, lines)
			}
			if strings.HasPrefix(tc.want, "application/") {
				for _, l := range lines {
					if !strings.HasPrefix(l, "{") || !strings.HasSuffix(l, "}") {
						t.Errorf("not a JSON object: %q", l)
					}
				}
			}
		})
	}
}

// TestCSVStreamTrailers: a CSV stream that fails after its rows ends its
// body cleanly and reports the error and the last token in trailers.
func TestCSVStreamTrailers(t *testing.T) {
	srv := httptest.NewServer(newTestHandler(t))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v1/backlinks:stream?target=fails.example&output=csv&select=anchor")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := "anchor\r\nrow t1\r\nrow t2\r\n"; string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
	if got := resp.Trailer.Get(trailerError); got != "4 out of time" {
		t.Errorf("Linkgate-Error %q", got)
	}
	if got := resp.Trailer.Get(headerPageToken); got != "t2" {
		t.Errorf("Linkgate-Next-Page-Token %q, want t2", got)
	}
}
