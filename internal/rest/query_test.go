package rest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

func TestQueryParserAccepts(t *testing.T) {
	var req v1.StreamBacklinksRequest
	q, _ := url.ParseQuery("target=example.com&mode=exact&protocol=https&aggregation=1_per_domain&select=url_from,anchor&select=traffic" +
		"&filter=is_dofollow&order_by=url_from:desc&history=live&page_size=50&page_token=t&max_rows=10&maxUnits=20")
	if err := (queryParser{}).Parse(&req, q, &utilities.DoubleArray{}); err != nil {
		t.Fatal(err)
	}
	if req.GetMode() != v1.Mode_MODE_EXACT || req.GetProtocol() != v1.Protocol_PROTOCOL_HTTPS ||
		req.GetAggregation() != v1.Aggregation_AGGREGATION_ONE_PER_DOMAIN || len(req.GetSelect()) != 2 ||
		req.GetPageSize() != 50 || req.GetMaxRows() != 10 || req.GetMaxUnits() != 20 || req.GetOrderBy() != "url_from:desc" {
		t.Errorf("parsed %v", &req)
	}
	// Proto names, in any case, and defined numbers are accepted too.
	for _, v := range []string{"MODE_DOMAIN", "mode_domain", "3", "domain"} {
		var r v1.ListBacklinksRequest
		if err := (queryParser{}).Parse(&r, url.Values{"mode": {v}}, nil); err != nil || r.GetMode() != v1.Mode_MODE_DOMAIN {
			t.Errorf("mode=%s: %v %v", v, r.GetMode(), err)
		}
	}
}

func TestQueryParserRefuses(t *testing.T) {
	for _, tc := range []struct {
		msg         string // the request message, by its REST path
		query       string
		field, want string
	}{
		{"/v1/backlinks", "filtre=is_dofollow", "filtre", "did you mean filter?"},
		{"/v1/backlinks", "limit=10", "limit", "use page_size"},
		{"/v1/backlinks", "where=%7B%7D", "where", "use filter"},
		{"/v1/backlinks", "offset=100", "offset", "page_token"},
		{"/v1/backlinks", "output=csv", "output", "csv or json"},
		{"/v1/broken-backlinks", "history=live", "history", "/v1/broken-backlinks takes no history"},
		{"/v1/refdomains", "aggregation=all", "aggregation", "one row per domain"},
		{"/v1/backlinks", "max_rows=5", "max_rows", "bounds a stream"},
		{"/v1/backlinks", "since=2025-01-01", "since", "history=since:YYYY-MM-DD"},
		{"/v1/backlinks", "page_size=", "page_size", "is empty"},
		{"/v1/backlinks", "page_size=ten", "page_size", `needs a whole number, got "ten"`},
		{"/v1/backlinks", "page_size=99999999999", "page_size", "out of range"},
		{"/v1/backlinks", "mode=7", "mode", `unknown value "7": use exact, prefix, domain, subdomains (the proto names MODE_EXACT`},
		{"/v1/backlinks", "aggregation=one", "aggregation", `use similar_links, one_per_domain, all (the proto names AGGREGATION_SIMILAR_LINKS, AGGREGATION_ONE_PER_DOMAIN, AGGREGATION_ALL and Ahrefs' 1_per_domain are accepted too`},
		{"/v1/backlinks", "protocol=ftp", "protocol", "use both, http, https"},
		{"/v1/new-lost-backlinks", "changes=SOME", "changes", "CHANGE_FILTER_NEW"},
		{"/v1/backlinks", "target=a&target=b", "target", "given 2 times"},
		{"/v1/backlinks", "target=" + strings.Repeat("a", 3000), "target", "the limit is 2048"},
		{"/v1/backlinks-stats", "target=" + strings.Repeat("a", 3000), "target", "the limit is 2048"},
		{"/v1/backlinks", "=x", "query", "without a name"},
		{"/v1/backlinks", "mode.x=1", "mode.x", "unknown parameter"},
		{"/v1/backlinks", strings.Repeat("k", 500) + "=1", strings.Repeat("k", 64) + "…", "unknown parameter"},
	} {
		t.Run(tc.query[:min(len(tc.query), 40)], func(t *testing.T) {
			rt, _ := routeFor(http.MethodGet, tc.msg)
			if rt == nil {
				t.Fatalf("no route %s", tc.msg)
			}
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			err = checkQuery(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: tc.msg, RawQuery: q.Encode()}})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || violationField(st) != tc.field || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("%v, field %q: %q; want field %q saying %q", st.Code(), violationField(st), st.Message(), tc.field, tc.want)
			}
			if strings.Contains(st.Message(), "strconv") {
				t.Errorf("strconv's words reached the caller: %s", st.Message())
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	if r, _ := routeFor(http.MethodPatch, "/v1/quota/tenants/ops"); r == nil || r.body != "*" {
		t.Errorf("PATCH /v1/quota/tenants/ops: %+v", r)
	}
	if _, allowed := routeFor(http.MethodPost, "/v1/backlinks:stream"); len(allowed) != 1 || allowed[0] != "GET" {
		t.Errorf("POST /v1/backlinks:stream allows %v, want [GET]", allowed)
	}
	if r, allowed := routeFor(http.MethodGet, "/v1/nothing"); r != nil || allowed != nil {
		t.Errorf("/v1/nothing: %v %v", r, allowed)
	}
}

// FuzzQueryParser feeds arbitrary query strings to the query parser of
// every GET endpoint: it never panics, and every refusal is
// INVALID_ARGUMENT naming a parameter the query has (or the query).
func FuzzQueryParser(f *testing.F) {
	for _, q := range []string{
		"target=example.com&page_size=3", "mode=exact&protocol=https&aggregation=1_per_domain", "filtre=x&limit=5",
		"page_size=&max_rows=-1", "mode=7", "a.b.c=1", "select=a&select=b", "=", "%zz", "target=a&target=b",
		"max_units=99999999999999999999", "page_token=%00%ff", "changes=CHANGE_FILTER_NEW&since=2025-01-01",
	} {
		f.Add(q)
	}
	var gets []*route
	for i := range routes {
		if routes[i].method == http.MethodGet {
			gets = append(gets, &routes[i])
		}
	}
	f.Fuzz(func(t *testing.T, query string) {
		values, err := url.ParseQuery(query)
		if err != nil {
			return // the REST handler refuses it before the parser (withQuery)
		}
		for _, rt := range gets {
			err := checkQuery(&http.Request{Method: http.MethodGet, URL: &url.URL{Path: rt.path, RawQuery: query}})
			if err == nil {
				continue
			}
			st, ok := status.FromError(err)
			if !ok || st.Code() != codes.InvalidArgument {
				t.Fatalf("%s?%s: %v", rt.path, query, err)
			}
			field := violationField(st)
			if field == "" {
				t.Fatalf("%s?%s: no field named: %v", rt.path, query, err)
			}
			if !namesAParam(field, values) {
				t.Fatalf("%s?%s: names %q, which the query does not have: %s", rt.path, query, field, st.Message())
			}
		}
	})
}

// namesAParam reports whether an error's field is one of the query's
// parameters (clipped as the parser clips it) or a field they set.
func namesAParam(field string, values url.Values) bool {
	for k := range values {
		k = strings.ToValidUTF8(k, "\uFFFD")
		if field == clip(k) || strings.HasPrefix(clip(k), strings.TrimSuffix(field, "…")) {
			return true
		}
	}
	// A bound checked after parsing names the field the parameter set,
	// by its proto name even when the query used the JSON name.
	for k := range values {
		if strings.EqualFold(strings.ReplaceAll(k, "_", ""), strings.ReplaceAll(field, "_", "")) {
			return true
		}
	}
	return field == "query" // a parameter without a name
}

func TestRetryAfterOnEvery429And503(t *testing.T) {
	for _, tc := range []struct {
		st   *status.Status
		want string
	}{
		{status.New(codes.Unavailable, "connection refused"), defaultRetryAfter},
		{status.New(codes.ResourceExhausted, "busy"), defaultRetryAfter},
		{status.New(codes.InvalidArgument, "bad"), ""},
	} {
		h := http.Header{}
		setRetryAfter(h, tc.st)
		if got := h.Get("Retry-After"); got != tc.want {
			t.Errorf("%v: Retry-After %q, want %q", tc.st.Code(), got, tc.want)
		}
	}
}

// TestEnumSpellings: every enum a request takes reads its proto name, its
// short form and Ahrefs' value, in any case, in the query string and in a
// JSON body alike. aggregation=ONE_PER_DOMAIN and changes=lost used to be
// refused while mode=domain was accepted.
func TestEnumSpellings(t *testing.T) {
	for _, tc := range []struct {
		path, param, body string // the REST path, the parameter, and its EstimateCost request
		spellings         []string
		want              protoreflect.EnumNumber
	}{
		{"/v1/backlinks", "mode", "backlinks", []string{"MODE_DOMAIN", "mode_domain", "DOMAIN", "domain", "Domain"}, 3},
		{"/v1/backlinks", "protocol", "backlinks", []string{"PROTOCOL_HTTPS", "HTTPS", "https"}, 3},
		{"/v1/backlinks", "aggregation", "backlinks", []string{"AGGREGATION_ONE_PER_DOMAIN", "ONE_PER_DOMAIN", "one_per_domain", "1_per_domain"}, 2},
		{"/v1/backlinks", "aggregation", "backlinks", []string{"AGGREGATION_SIMILAR_LINKS", "SIMILAR_LINKS", "similar_links"}, 1},
		{"/v1/broken-backlinks", "aggregation", "broken_backlinks", []string{"AGGREGATION_ALL", "ALL", "all"}, 3},
		{"/v1/new-lost-backlinks", "changes", "new_lost_backlinks", []string{"CHANGE_FILTER_LOST", "LOST", "lost", "Lost"}, 3},
		{"/v1/new-lost-backlinks", "changes", "new_lost_backlinks", []string{"CHANGE_FILTER_NEW", "new"}, 2},
		{"/v1/new-lost-backlinks", "changes", "new_lost_backlinks", []string{"CHANGE_FILTER_BOTH", "both"}, 1},
		{"/v1/refdomains", "mode", "ref_domains", []string{"MODE_EXACT", "exact", "EXACT"}, 1},
	} {
		for _, s := range tc.spellings {
			t.Run(tc.param+"="+s, func(t *testing.T) {
				rt, _ := routeFor(http.MethodGet, tc.path)
				m := dynamicpb.NewMessage(rt.input)
				if err := parseQuery(m, url.Values{"target": {"example.com"}, tc.param: {s}}, nil); err != nil {
					t.Fatalf("query: %v", err)
				}
				if got := m.Get(rt.input.Fields().ByName(protoreflect.Name(tc.param))).Enum(); got != tc.want {
					t.Errorf("query: %d, want %d", got, tc.want)
				}

				body := fmt.Sprintf(`{"%s": {"target": "example.com", "%s": %q}, "rows": 10}`, tc.body, tc.param, s)
				req := httptest.NewRequest(http.MethodPost, "/v1/cost:estimate", strings.NewReader(body))
				if err := checkQuery(req); err != nil {
					t.Fatalf("body %s: %v", body, err)
				}
				b, _ := io.ReadAll(req.Body)
				var est v1.EstimateCostRequest
				if err := protojson.Unmarshal(b, &est); err != nil {
					t.Fatalf("the body the gateway reads: %v: %s", err, b)
				}
				inner := est.ProtoReflect().Get(est.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(tc.body))).Message()
				if got := inner.Get(inner.Descriptor().Fields().ByName(protoreflect.Name(tc.param))).Enum(); got != tc.want {
					t.Errorf("body: %d, want %d", got, tc.want)
				}
			})
		}
	}

	// Refused alike, naming the field and what it takes.
	err := checkQuery(httptest.NewRequest(http.MethodGet, "/v1/new-lost-backlinks?target=example.com&changes=maybe", nil))
	st := status.Convert(err)
	if violationField(st) != "changes" || !strings.Contains(st.Message(), `unknown value "maybe": use both, new, lost`) {
		t.Errorf("changes=maybe: %v", err)
	}
	err = checkQuery(httptest.NewRequest(http.MethodPost, "/v1/cost:estimate",
		strings.NewReader(`{"backlinks": {"target": "example.com", "aggregation": "one_per_page"}}`)))
	st = status.Convert(err)
	if violationField(st) != "backlinks.aggregation" || !strings.Contains(st.Message(), "similar_links, one_per_domain, all") ||
		!strings.Contains(st.Message(), "Ahrefs' 1_per_domain") {
		t.Errorf("aggregation one_per_page in a body: %v", err)
	}
	err = checkQuery(httptest.NewRequest(http.MethodPost, "/v1/cost:estimate",
		strings.NewReader(`{"backlinks": {"target": "example.com", "mode": "exact", "mode": "domain"}}`)))
	if st := status.Convert(err); violationField(st) != "backlinks.mode" || !strings.Contains(st.Message(), "twice") {
		t.Errorf("a field given twice in a body: %v", err)
	}
}
