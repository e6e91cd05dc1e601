package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// rawConn opens a TCP connection and sends what a client would first:
// nothing, or the HTTP/2 preface and empty settings.
func rawConn(t *testing.T, addr string, preface bool) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if preface {
		if _, err := conn.Write(append([]byte(http2.ClientPreface), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// closedWithin reports whether the server closes conn within d, reading
// and dropping whatever it sends first.
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestConnectionsOnProbation: with room for three connections, three
// that never show a key cannot keep a tenant out: the oldest makes room.
// Connections that showed a key are never closed for another: a fourth
// caller then waits until one of them leaves.
func TestConnectionsOnProbation(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.MaxConnections = 3
	cfg.HeaderTimeout = time.Minute // only making room closes them here
	s, logs := startTest(t, cfg)

	var idle []net.Conn
	for range 3 {
		idle = append(idle, rawConn(t, s.grpcAddr, true))
	}
	ctx := context.Background()
	list := func(c clients, ctx context.Context) error {
		_, err := c.backlinks.ListBacklinks(as(ctx, keyA), &v1.ListBacklinksRequest{Target: "sized-30.example", PageSize: 5})
		return err
	}
	tenants := []clients{dial(t, s.grpcAddr)}
	if err := list(tenants[0], ctx); err != nil {
		t.Fatalf("a tenant behind three keyless connections: %v", err)
	}
	if !closedWithin(idle[0], 5*time.Second) {
		t.Fatal("the oldest keyless connection was not closed to make room")
	}
	for i, c := range idle[1:] {
		if closedWithin(c, 100*time.Millisecond) {
			t.Fatalf("keyless connection %d closed, though one was enough to make room", i+2)
		}
	}
	// Two more tenants take the places of the keyless connections.
	for range 2 {
		c := dial(t, s.grpcAddr)
		if err := list(c, ctx); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, c)
	}
	for i, c := range idle {
		if !closedWithin(c, 5*time.Second) {
			t.Fatalf("keyless connection %d still open with three tenants waiting", i+1)
		}
	}
	// The listener is full of tenants: a fourth waits for a place.
	late := dial(t, s.grpcAddr)
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := list(late, short); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a fourth connection with three tenants connected: %v, want it to wait", err)
	}
	tenants[0].conn.Close()
	ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := list(late, ctx); err != nil {
		t.Fatalf("a fourth tenant after one left: %v", err)
	}
	if !strings.Contains(logs.String(), "connection limit reached") {
		t.Errorf("no log line says the connection limit was reached:\n%s", logs)
	}
	// So do the metrics: three keyless connections made room, a tenant
	// waited, and the listener holds the three tenants.
	text := scrape(t, s)
	for _, want := range []struct {
		name   string
		labels []string
		ok     func(float64) bool
	}{
		{"linkgate_connections_closed_total", []string{`listener="grpc"`, `reason="room"`}, func(v float64) bool { return v == 3 }},
		{"linkgate_connections_limit_waits_total", []string{`listener="grpc"`}, func(v float64) bool { return v >= 1 }},
		{"linkgate_connections_open", []string{`listener="grpc"`}, func(v float64) bool { return v == 3 }},
		{"linkgate_connections_on_probation", []string{`listener="grpc"`}, func(v float64) bool { return v == 0 }},
		{"linkgate_connections_open", []string{`listener="http"`}, func(v float64) bool { return v == 0 }},
	} {
		if v, ok := metricValue(text, want.name, want.labels...); !ok || !want.ok(v) {
			t.Errorf("%s%v = %v (found %v)", want.name, want.labels, v, ok)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(text, "linkgate_connections"))
	}
}

// TestConnectionsWithoutARequestAreClosed: a connection that sends
// nothing, or only the HTTP/2 preface, is closed at the end of the header
// timeout, on both listeners.
func TestConnectionsWithoutARequestAreClosed(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.HeaderTimeout = time.Second
	s, _ := startTest(t, cfg)
	for name, conn := range map[string]net.Conn{
		"gRPC, nothing sent":      rawConn(t, s.grpcAddr, false),
		"gRPC, preface only":      rawConn(t, s.grpcAddr, true),
		"REST, nothing sent":      rawConn(t, s.httpAddr, false),
		"REST, half of a request": rawConn(t, s.httpAddr, false),
	} {
		if strings.HasPrefix(name, "REST, half") {
			io.WriteString(conn, "GET /v1/quota HTTP/1.1\r\nHost: x\r\n")
		}
		if !closedWithin(conn, 10*time.Second) {
			t.Errorf("%s: still open 10 s after a header timeout of 1 s", name)
		}
	}
}

// TestRESTBodies: a REST request without a key is refused when its headers
// arrive, without waiting for a body that may never come, and its
// connection closed; a keyed body trickled a byte a second is cut at the
// body timeout.
func TestRESTBodies(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.BodyTimeout = time.Second
	s, _ := startTest(t, cfg)
	post := func(key string) (net.Conn, *bufio.Reader) {
		conn := rawConn(t, s.httpAddr, false)
		head := "POST /v1/cost:estimate HTTP/1.1\r\nHost: linkgate\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
		if key != "" {
			head += "Authorization: Bearer " + key + "\r\n"
		}
		if _, err := io.WriteString(conn, head+"\r\n{"); err != nil {
			t.Fatal(err)
		}
		return conn, bufio.NewReader(conn)
	}

	conn, r := post("")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("a keyless POST with 999 bytes of its body missing: %v, want an answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a keyless POST: %s, want 401", resp.Status)
	}
	if !closedWithin(conn, 5*time.Second) {
		t.Fatal("the connection of a refused keyless POST stays open")
	}

	conn, _ = post(keyA)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	// 999 bytes at five a second would take more than three minutes.
	if !closedWithin(conn, 20*time.Second) {
		t.Fatal("a keyed body trickling five bytes a second still being read 20 s later, with a body timeout of 1 s")
	}
}

// TestPeerBoundsConfig: the connection bound follows the memory limit
// unless given; the timeouts and the streams per connection must be
// positive.
func TestPeerBoundsConfig(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{"LINKGATE_MEMORY_LIMIT": "512Mi"}, 1024},
		{map[string]string{"LINKGATE_MEMORY_LIMIT": "256MiB"}, 512},
		{map[string]string{"LINKGATE_MEMORY_LIMIT": "512Mi", "LINKGATE_MAX_CONNECTIONS": "10"}, 10},
	} {
		cfg, err := loadConfig(nil, func(k string) string { return tc.env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.maxConnections(); got != tc.want {
			t.Errorf("%v: %d connections, want %d", tc.env, got, tc.want)
		}
	}
	for _, env := range []string{"LINKGATE_MAX_CONNECTIONS=-1", "LINKGATE_MAX_STREAMS_PER_CONNECTION=0",
		"LINKGATE_HEADER_TIMEOUT=0s", "LINKGATE_BODY_TIMEOUT=-1s", "LINKGATE_IDLE_TIMEOUT=0s"} {
		name, value, _ := strings.Cut(env, "=")
		_, err := loadConfig(nil, func(k string) string { return map[string]string{name: value}[k] })
		if err == nil {
			t.Errorf("%s accepted", env)
		}
	}
}
