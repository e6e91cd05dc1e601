package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// TestStreamingLargePage decodes a 200k-row page written incrementally by
// the handler and checks, with the live heap measured after a GC in the
// middle of the stream, that the client never holds the page: the body is
// ~25 MB, and the live heap while decoding stays far below it.
func TestStreamingLargePage(t *testing.T) {
	n := 200_000
	if testing.Short() { // -short keeps the race run quick; the bound is the same
		n = 40_000
	}
	var written int64
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		costHeaders(w, n, 3, Units(3, n), "miss")
		bw := bufio.NewWriterSize(w, 32<<10)
		cw := &countWriter{w: bw}
		io.WriteString(cw, `{"backlinks":[`)
		for i := range n {
			if i > 0 {
				io.WriteString(cw, ",")
			}
			fmt.Fprintf(cw, `{"url_from":"https://referring-site-%07d.example/some/long/path/to/a/page.html","url_to":"https://example.com/target/page","domain_rating_source":%d.25}`, i, i%100)
		}
		io.WriteString(cw, `]}`)
		bw.Flush()
		written = cw.n
	})
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	var peak uint64
	count := 0
	q := backlinksQuery()
	res, err := h.c.ListRecords(context.Background(), q, func(r Record) error {
		count++
		if count%50_000 == 0 {
			var m runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > base.HeapAlloc {
				peak = max(peak, m.HeapAlloc-base.HeapAlloc)
			}
		}
		if recordMap(r, q.Select)["url_from"] == nil {
			return errors.New("row without url_from")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != n || count != n {
		t.Fatalf("rows = %d, fn called %d times", res.Rows, count)
	}
	t.Logf("body %d bytes, peak live heap growth while decoding %d bytes", written, peak)
	if written < int64(n)*100 {
		t.Fatalf("body only %d bytes: the test does not test anything", written)
	}
	// Holding the page once would already exceed written; a generous bound
	// that still catches any buffering of the body.
	if peak > uint64(written/8) {
		t.Errorf("live heap grew by %d bytes while streaming a %d-byte body", peak, written)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TestKeyNeverInErrors triggers every error path with an upstream (and a
// transport) that echo the key, and searches every error text for it.
func TestKeyNeverInErrors(t *testing.T) {
	echo := func(status int, ctype string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			auth := r.Header.Get("Authorization")
			w.Header().Set("Content-Type", ctype)
			w.WriteHeader(status)
			if ctype == "application/json" {
				fmt.Fprintf(w, `{"error":"bad header %s"}`, auth)
			} else {
				fmt.Fprintf(w, "<html><body>blocked request with %s</body></html>", auth)
			}
		}
	}
	type path struct {
		name string
		h    http.HandlerFunc
		mod  func(*Config)
		ctx  func(*harness) (context.Context, context.CancelFunc)
	}
	paths := []path{
		{name: "truncated", h: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			fmt.Fprintf(w, `{"backlinks":[{"url_from":"%s`, r.Header.Get("Authorization"))
		}},
		{name: "malformed", h: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"backlinks":[{"http_code":%q}]}`, r.Header.Get("Authorization"))
		}},
		{name: "not json 200", h: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `<html>%s</html>`, r.Header.Get("Authorization"))
		}},
		{name: "transport", h: okRows(1), mod: func(c *Config) {
			c.WrapTransport = func(http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(r *http.Request) (*http.Response, error) {
					return nil, fmt.Errorf("proxy refused %s with header %s", r.URL, r.Header.Get("Authorization"))
				})
			}
		}},
		{name: "refused", h: okRows(1), mod: func(c *Config) { c.BaseURL = "http://127.0.0.1:1" }},
		{name: "gate", h: okRows(1), mod: func(c *Config) { c.Gate = &countingGate{refuse: errors.New("queue deadline")} }},
		{name: "cancelled", h: failing(10), ctx: func(*harness) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
	}
	for _, s := range []int{400, 401, 403, 404, 418, 429, 500, 502, 503} {
		paths = append(paths,
			path{name: fmt.Sprintf("%d json", s), h: echo(s, "application/json")},
			path{name: fmt.Sprintf("%d html", s), h: echo(s, "text/html")})
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			mods := []func(*Config){}
			if p.mod != nil {
				mods = append(mods, p.mod)
			}
			h := newHarness(t, p.h, mods...)
			ctx, cancel := context.Background(), func() {}
			if p.ctx != nil {
				ctx, cancel = p.ctx(h)
			}
			defer cancel()
			var errs []error
			q := backlinksQuery()
			q.Select = append(q.Select, "http_code") // the malformed member
			_, err := h.c.ListRecords(ctx, q, func(Record) error { return nil })
			errs = append(errs, err)
			_, _, err = h.c.BacklinksStats(ctx, StatsQuery{Target: "example.com"})
			errs = append(errs, err)
			_, err = h.c.LimitsAndUsage(ctx)
			errs = append(errs, err)
			for _, err := range errs {
				if err == nil {
					t.Fatal("no error")
				}
				for e := err; e != nil; e = errors.Unwrap(e) {
					for _, text := range []string{e.Error(), fmt.Sprintf("%+v", e), fmt.Sprintf("%#v", e)} {
						if strings.Contains(text, testKey) {
							t.Errorf("key in error text %q", text)
						}
					}
				}
			}
		})
	}
	t.Run("config", func(t *testing.T) {
		cfg := Config{Key: testKey, BaseURL: "https://api.ahrefs.com"}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "upstream", cfg)
		for _, text := range []string{cfg.String(), fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), buf.String()} {
			if strings.Contains(text, testKey) {
				t.Errorf("key in %q", text)
			}
			if !strings.Contains(text, "REDACTED") {
				t.Errorf("no redaction marker in %q", text)
			}
		}
	})
}
