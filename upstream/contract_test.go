package upstream_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
	"github.com/linkgate/linkgate/upstream/ahrefsspec"
)

// contractEnv is a client talking to the simulator through Ahrefs' own
// OpenAPI document: every request is checked against the spec before the
// simulator sees it, and every refusal is kept.
type contractEnv struct {
	spec *ahrefsspec.Spec
	c    *upstream.Client

	mu      sync.Mutex
	checked int      // requests that reached the checker
	refused []string // what the spec refused
	last    *http.Request
	body    []byte
}

func newContractEnv(t *testing.T, wrap func(http.RoundTripper) http.RoundTripper) *contractEnv {
	t.Helper()
	spec, err := ahrefsspec.Load()
	if err != nil {
		t.Fatal(err)
	}
	e := &contractEnv{spec: spec}
	sim := ahrefssim.New(ahrefssim.Config{Keys: []string{"contract-key"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			e.mu.Lock()
			e.checked++
			e.last, e.body = r.Clone(context.Background()), body
			e.mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(record(spec.Checking(sim, func(err error) {
		e.mu.Lock()
		e.refused = append(e.refused, err.Error())
		e.mu.Unlock()
	})))
	t.Cleanup(srv.Close)
	e.c, err = upstream.New(upstream.Config{BaseURL: srv.URL, Key: "contract-key", WrapTransport: wrap, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// expect runs one request shape: it must reach the checker (not be refused
// by the client's own validation first) and the spec must accept it.
func (e *contractEnv) expect(t *testing.T, name string, call func(ctx context.Context) error) {
	t.Helper()
	e.mu.Lock()
	before, refusedBefore := e.checked, len(e.refused)
	e.mu.Unlock()
	err := call(context.Background())
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.checked == before:
		t.Errorf("%s: no request was sent (client error: %v)", name, err)
	case len(e.refused) > refusedBefore:
		t.Errorf("%s: the spec refuses it:\n  %s", name, strings.Join(e.refused[refusedBefore:], "\n  "))
	case err != nil:
		t.Errorf("%s: the simulator refused what the spec accepts: %v", name, err)
	}
}

func (e *contractEnv) list(q *upstream.Query) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := e.c.ListRecords(ctx, q, func(upstream.Record) error { return nil })
		return err
	}
}

// sampleCond is a condition the field's type accepts.
func sampleCond(f upstream.Field) upstream.Expr {
	var v any
	op := upstream.OpEq
	switch f.Kind.Elem() {
	case upstream.KindString:
		v = "x"
		if len(f.Enum) > 0 {
			v = f.Enum[0]
		}
	case upstream.KindInt:
		op, v = upstream.OpGte, int64(1)
	case upstream.KindFloat:
		op, v = upstream.OpGte, 1.5
	case upstream.KindBool:
		v = true
	case upstream.KindTime, upstream.KindDate:
		op, v = upstream.OpGte, "2025-01-01"
	}
	c := upstream.Cond{Op: op, Value: v}
	if f.Kind.IsList() {
		return upstream.ListIs{Field: f.Name, Pred: c}
	}
	return upstream.Is{Field: f.Name, Cond: c}
}

// TestRequestsMatchTheContract builds every request shape the client sends
// — each dataset, mode, protocol, aggregation and history, every
// selectable, filterable and orderable column, the filter grammar, keyset
// continuations, new/lost windows, stats with and without IPs,
// limits-and-usage — and checks each against Ahrefs' OpenAPI document.
func TestRequestsMatchTheContract(t *testing.T) {
	e := newContractEnv(t, nil)
	const target = "sized-400.example"
	for _, ep := range upstream.Endpoints() {
		s := upstream.MustSchema(ep)
		base := func() *upstream.Query {
			return &upstream.Query{Endpoint: ep, Target: target, Select: []string{s.Selectable()[0]}, Limit: 5}
		}
		t.Run(string(ep), func(t *testing.T) {
			q := base()
			q.Select = s.Selectable()
			e.expect(t, "every selectable column", e.list(q))
			for _, m := range []upstream.Mode{upstream.ModeExact, upstream.ModePrefix, upstream.ModeDomain, upstream.ModeSubdomains} {
				for _, p := range []upstream.Protocol{upstream.ProtocolBoth, upstream.ProtocolHTTP, upstream.ProtocolHTTPS} {
					q := base()
					q.Mode, q.Protocol = m, p
					e.expect(t, fmt.Sprintf("mode %s protocol %s", m, p), e.list(q))
				}
			}
			for _, f := range s.Fields() {
				if f.Where {
					q := base()
					q.Where = sampleCond(f)
					e.expect(t, "where "+f.Name, e.list(q))
				}
				if f.Order {
					for _, desc := range []bool{false, true} {
						q := base()
						q.OrderBy = []upstream.Order{{Field: f.Name, Desc: desc}}
						e.expect(t, fmt.Sprintf("order_by %s desc=%v", f.Name, desc), e.list(q))
					}
				}
			}
			if s.HasAggregation {
				for _, a := range []upstream.Aggregation{upstream.AggregationSimilarLinks, upstream.AggregationOnePerDomain, upstream.AggregationAll} {
					q := base()
					q.Aggregation = a
					e.expect(t, "aggregation "+string(a), e.list(q))
				}
			}
			if s.HasHistory {
				for _, h := range []string{upstream.HistoryLive, upstream.HistoryAllTime, upstream.HistorySince(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC))} {
					q := base()
					q.History = h
					e.expect(t, "history "+h, e.list(q))
				}
			}
			q = base()
			q.Limit = 0
			e.expect(t, "default limit", e.list(q))
		})
	}

	t.Run("filter grammar", func(t *testing.T) {
		q := &upstream.Query{Endpoint: upstream.AllBacklinks, Target: target, Select: []string{"url_from", "anchor"}, Limit: 5,
			Where: upstream.And{
				upstream.Or{
					upstream.Is{Field: "anchor", Cond: upstream.Cond{Op: upstream.OpISubstring, Value: "seo"}},
					upstream.Is{Field: "anchor", Cond: upstream.Cond{Op: upstream.OpRegex, Value: "^a.*b$"}},
					upstream.Is{Field: "anchor", Cond: upstream.Cond{Op: upstream.OpEmpty}},
				},
				upstream.Not{X: upstream.Is{Field: "last_seen", Cond: upstream.Cond{Op: upstream.OpIsNull}}},
				upstream.Is{Field: "url_from", Cond: upstream.Cond{Op: upstream.OpPrefix, Value: "https://"}},
				upstream.Is{Field: "anchor", Modifier: "uppercase", Cond: upstream.Cond{Op: upstream.OpEq, Value: "SEO"}},
				upstream.ListIs{Field: "languages", All: true, Pred: upstream.PredOr{
					upstream.Cond{Op: upstream.OpEq, Value: "en"},
					upstream.PredNot{X: upstream.Cond{Op: upstream.OpPrefix, Value: "z"}},
				}},
			}}
		e.expect(t, "and/or/not, text operators, is_null, empty, modifier, list_is", e.list(q))
	})

	t.Run("keyset continuations", func(t *testing.T) {
		// The shapes a page token resumes with: order by the key, where
		// strictly after the last key of the previous page.
		after := upstream.Or{
			upstream.Is{Field: "url_from", Cond: upstream.Cond{Op: upstream.OpGt, Value: "https://a.example/x"}},
			upstream.And{
				upstream.Is{Field: "url_from", Cond: upstream.Cond{Op: upstream.OpEq, Value: "https://a.example/x"}},
				upstream.Is{Field: "url_to", Cond: upstream.Cond{Op: upstream.OpGt, Value: "https://sized-400.example/p"}},
			},
		}
		q := &upstream.Query{Endpoint: upstream.AllBacklinks, Target: target, Select: []string{"url_from", "url_to"}, Limit: 10,
			OrderBy: []upstream.Order{{Field: "url_from"}, {Field: "url_to"}}, Where: after}
		e.expect(t, "string key", e.list(q))
		q = &upstream.Query{Endpoint: upstream.BrokenBacklinks, Target: target, Select: []string{"url_from", "domain_rating_source"}, Limit: 10,
			OrderBy: []upstream.Order{{Field: "domain_rating_source", Desc: true}, {Field: "url_from"}},
			Where: upstream.Or{
				upstream.Is{Field: "domain_rating_source", Cond: upstream.Cond{Op: upstream.OpLt, Value: 97.3}},
				upstream.And{
					upstream.Is{Field: "domain_rating_source", Cond: upstream.Cond{Op: upstream.OpEq, Value: 97.3}},
					upstream.Is{Field: "url_from", Cond: upstream.Cond{Op: upstream.OpGt, Value: "https://a.example/x"}},
				},
			}}
		e.expect(t, "float key descending", e.list(q))
		q = &upstream.Query{Endpoint: upstream.RefDomains, Target: target, Select: []string{"domain"}, Limit: 10,
			OrderBy: []upstream.Order{{Field: "domain"}}, Where: upstream.Is{Field: "domain", Cond: upstream.Cond{Op: upstream.OpGt, Value: "m.example"}}}
		e.expect(t, "refdomains by domain", e.list(q))
	})

	t.Run("new and lost windows", func(t *testing.T) {
		since := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
		for _, f := range upstream.ChangeFeeds {
			q := &upstream.Query{Endpoint: upstream.AllBacklinks, Target: target, Select: []string{"url_from", f.TimeField}, Limit: 10,
				History: f.History(since), Where: f.Window(since, since.AddDate(0, 1, 0)),
				OrderBy: []upstream.Order{{Field: f.TimeField}, {Field: "url_from"}}}
			e.expect(t, f.Change.String(), e.list(q))
		}
	})

	t.Run("records", func(t *testing.T) {
		q := &upstream.Query{Endpoint: upstream.RefDomains, Target: target, Select: []string{"domain", "domain_rating"}, Limit: 5}
		e.expect(t, "ListRecords", func(ctx context.Context) error {
			_, err := e.c.ListRecords(ctx, q, func(upstream.Record) error { return nil })
			return err
		})
	})

	t.Run("stats", func(t *testing.T) {
		for _, ips := range []bool{false, true} {
			for _, m := range []upstream.Mode{"", upstream.ModeExact, upstream.ModeDomain} {
				sq := upstream.StatsQuery{Target: target, Mode: m, IPs: ips, Protocol: upstream.ProtocolHTTPS}
				e.expect(t, fmt.Sprintf("ips=%v mode %q", ips, m), func(ctx context.Context) error {
					_, _, err := e.c.BacklinksStats(ctx, sq)
					return err
				})
			}
		}
		// With IPs the last request is batch-analysis: a POST with no query.
		if e.last.Method != http.MethodPost || e.last.URL.RawQuery != "" || !strings.Contains(string(e.body), `"output":"json"`) {
			t.Errorf("batch-analysis sent as %s ?%s %s", e.last.Method, e.last.URL.RawQuery, e.body)
		}
	})

	t.Run("limits and usage", func(t *testing.T) {
		e.expect(t, "LimitsAndUsage", func(ctx context.Context) error {
			_, err := e.c.LimitsAndUsage(ctx)
			return err
		})
	})
	t.Logf("%d requests checked against the spec", e.checked)
}

// TestContractRefusesWhatTheSpecDoesNotDefine: the check is not vacuous.
// The same requests, changed as a careless edit of the client would change
// them, are refused, through the client (a parameter added on the wire) and
// directly.
func TestContractRefusesWhatTheSpecDoesNotDefine(t *testing.T) {
	t.Run("a parameter added on the wire", func(t *testing.T) {
		addOffset := func(next http.RoundTripper) http.RoundTripper {
			return transportFunc(func(r *http.Request) (*http.Response, error) {
				r = r.Clone(r.Context())
				q := r.URL.Query()
				q.Set("offset", "100")
				r.URL.RawQuery = q.Encode()
				return next.RoundTrip(r)
			})
		}
		e := newContractEnv(t, addOffset)
		q := &upstream.Query{Endpoint: upstream.AllBacklinks, Target: "sized-400.example", Select: []string{"url_from"}, Limit: 5}
		if _, err := e.c.ListRecords(context.Background(), q, func(upstream.Record) error { return nil }); err == nil {
			t.Error("the request with offset was served")
		}
		if len(e.refused) != 1 || !strings.Contains(e.refused[0], `query parameter "offset" is not defined`) {
			t.Errorf("refusals %q", e.refused)
		}
	})

	spec, err := ahrefsspec.Load()
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, v url.Values) *http.Request {
		r := httptest.NewRequest(http.MethodGet, path+"?"+v.Encode(), nil)
		r.Header.Set("Authorization", "Bearer k")
		return r
	}
	valid := func() url.Values {
		return url.Values{"target": {"ahrefs.com"}, "select": {"url_from,url_to"}, "output": {"json"}, "limit": {"10"},
			"order_by": {"url_from:asc,url_to:desc"}, "where": {`{"field":"url_from","is":["gt","a"]}`}}
	}
	path := upstream.AllBacklinks.Path()
	if err := spec.Check(get(path, valid()), nil); err != nil {
		t.Fatalf("the unchanged request: %v", err)
	}
	for _, tt := range []struct {
		name   string
		mutate func(url.Values)
		path   string
		want   string
	}{
		{"unknown parameter", func(v url.Values) { v.Set("cursor", "abc") }, path, `"cursor" is not defined`},
		{"required parameter missing", func(v url.Values) { v.Del("select") }, path, "select"},
		{"enum", func(v url.Values) { v.Set("mode", "everything") }, path, "mode"},
		{"integer", func(v url.Values) { v.Set("limit", "ten") }, path, "limit"},
		{"select column", func(v url.Values) { v.Set("select", "url_from,backlinks") }, path, `select: "backlinks"`},
		{"order_by column the endpoint excludes", func(v url.Values) { v.Set("order_by", "link_group_count:desc") }, path, `"link_group_count" cannot be used`},
		{"order_by direction", func(v url.Values) { v.Set("order_by", "url_from:up") }, path, "direction"},
		{"where column", func(v url.Values) { v.Set("where", `{"field":"refips","is":["gt",1]}`) }, path, `"refips" is not a where column`},
		{"where grammar", func(v url.Values) { v.Set("where", `{"field":"url_from","is":["like","a"]}`) }, path, "unknown operator"},
		{"history", func(v url.Values) { v.Set("history", "since:yesterday") }, path, "history"},
		{"history on broken-backlinks", func(v url.Values) { v.Set("history", "live") }, upstream.BrokenBacklinks.Path(), `"history" is not defined`},
		{"aggregation on refdomains", func(v url.Values) {
			v.Set("aggregation", "all")
			v.Set("select", "domain")
			v.Del("order_by")
			v.Del("where")
		},
			upstream.RefDomains.Path(), `"aggregation" is not defined`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := valid()
			tt.mutate(v)
			err := spec.Check(get(tt.path, v), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}

	post := func(query, body string) error {
		u := upstream.BatchAnalysisPath
		if query != "" {
			u += "?" + query
		}
		r := httptest.NewRequest(http.MethodPost, u, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer k")
		r.Header.Set("Content-Type", "application/json")
		return spec.Check(r, []byte(body))
	}
	target := `{"url":"ahrefs.com","mode":"domain","protocol":"both"}`
	body := func(sel string, n int) string {
		return `{"select":[` + sel + `],"targets":[` + strings.TrimSuffix(strings.Repeat(target+",", n), ",") + `],"output":"json"}`
	}
	if err := post("", body(`"refips","refips_subnets"`, 1)); err != nil {
		t.Errorf("batch-analysis as linkgate sends it: %v", err)
	}
	for _, tt := range []struct{ name, query, body, want string }{
		{"output in the query string", "output=json", body(`"refips"`, 1), `query parameter "output" is not defined`},
		{"more than 100 targets", "", body(`"refips"`, 101), "targets"},
		{"unknown field", "", body(`"refips","class_c"`, 1), `"class_c"`},
		{"target without mode", "", `{"select":["refips"],"targets":[{"url":"ahrefs.com","protocol":"both"}]}`, "mode"},
	} {
		t.Run("batch-analysis "+tt.name, func(t *testing.T) {
			if err := post(tt.query, tt.body); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
