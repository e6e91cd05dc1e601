package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// page is what a test sees of one List response or Stream message: the
// identities of its rows, its token and its cost.
type seen struct {
	ids   []string
	token string
	units int64
}

func backlinkID(b *v1.Backlink) string { return b.GetUrlFrom() + " → " + b.GetUrlTo() }

// query is one list request in every dataset's terms.
type query struct {
	data     *paging.Dataset
	p        paging.Params
	pageSize int32
	token    string
	maxRows  int64
	maxUnits int64
}

// withIdentity selects the fields that identify a row, so that pages can be
// compared with the simulator's answer.
func (q query) withIdentity() query {
	if q.data == paging.RefDomains {
		q.p.Select = append(slices.Clone(q.p.Select), "domain")
	} else {
		q.p.Select = append(slices.Clone(q.p.Select), "url_from,url_to")
	}
	return q
}

func mode(m string) v1.Mode {
	for k, v := range modes {
		if string(v) == m {
			return k
		}
	}
	return v1.Mode_MODE_UNSPECIFIED
}

func aggregation(a upstream.Aggregation) v1.Aggregation {
	for k, v := range aggregations {
		if v == a {
			return k
		}
	}
	return v1.Aggregation_AGGREGATION_UNSPECIFIED
}

func (h *harness) list(ctx context.Context, q query) (seen, error) {
	p := q.p
	switch q.data {
	case paging.RefDomains:
		r, err := h.backlinks.ListRefDomains(ctx, &v1.ListRefDomainsRequest{Target: p.Target, Mode: mode(string(p.Mode)), Select: p.Select,
			Filter: p.Filter, OrderBy: p.OrderBy, History: p.History, PageSize: q.pageSize, PageToken: q.token})
		if err != nil {
			return seen{}, err
		}
		s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
		for _, d := range r.GetRefDomains() {
			s.ids = append(s.ids, d.GetDomain())
		}
		return s, nil
	case paging.BrokenBacklinks:
		r, err := h.backlinks.ListBrokenBacklinks(ctx, &v1.ListBrokenBacklinksRequest{Target: p.Target, Select: p.Select,
			Filter: p.Filter, OrderBy: p.OrderBy, PageSize: q.pageSize, PageToken: q.token, Aggregation: aggregation(p.Aggregation)})
		if err != nil {
			return seen{}, err
		}
		s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
		for _, b := range r.GetBrokenBacklinks() {
			s.ids = append(s.ids, b.GetUrlFrom()+" → "+b.GetUrlTo())
		}
		return s, nil
	case paging.NewLost:
		r, err := h.backlinks.ListNewLostBacklinks(ctx, &v1.ListNewLostBacklinksRequest{Target: p.Target, Select: p.Select,
			Filter: p.Filter, OrderBy: p.OrderBy, Since: p.Since, PageSize: q.pageSize, PageToken: q.token})
		if err != nil {
			return seen{}, err
		}
		s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
		for _, b := range r.GetNewLostBacklinks() {
			s.ids = append(s.ids, backlinkID(b.GetBacklink()))
		}
		return s, nil
	}
	r, err := h.backlinks.ListBacklinks(ctx, &v1.ListBacklinksRequest{Target: p.Target, Mode: mode(string(p.Mode)), Select: p.Select,
		Filter: p.Filter, OrderBy: p.OrderBy, History: p.History, PageSize: q.pageSize, PageToken: q.token, Aggregation: aggregation(p.Aggregation)})
	if err != nil {
		return seen{}, err
	}
	s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
	for _, b := range r.GetBacklinks() {
		s.ids = append(s.ids, backlinkID(b))
	}
	return s, nil
}

// stream collects the messages of a Stream RPC until it ends; the error is
// the stream's, after the messages it sent.
func (h *harness) stream(ctx context.Context, q query) ([]seen, error) {
	p := q.p
	var recv func() (seen, error)
	switch q.data {
	case paging.RefDomains:
		st, err := h.backlinks.StreamRefDomains(ctx, &v1.StreamRefDomainsRequest{Target: p.Target, Select: p.Select, Filter: p.Filter,
			OrderBy: p.OrderBy, History: p.History, PageSize: q.pageSize, PageToken: q.token, MaxRows: q.maxRows, MaxUnits: q.maxUnits})
		if err != nil {
			return nil, err
		}
		recv = func() (seen, error) {
			r, err := st.Recv()
			s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
			for _, d := range r.GetRefDomains() {
				s.ids = append(s.ids, d.GetDomain())
			}
			return s, err
		}
	case paging.BrokenBacklinks:
		st, err := h.backlinks.StreamBrokenBacklinks(ctx, &v1.StreamBrokenBacklinksRequest{Target: p.Target, Select: p.Select, Filter: p.Filter,
			OrderBy: p.OrderBy, PageSize: q.pageSize, PageToken: q.token, MaxRows: q.maxRows, MaxUnits: q.maxUnits,
			Aggregation: aggregation(p.Aggregation)})
		if err != nil {
			return nil, err
		}
		recv = func() (seen, error) {
			r, err := st.Recv()
			s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
			for _, b := range r.GetBrokenBacklinks() {
				s.ids = append(s.ids, b.GetUrlFrom()+" → "+b.GetUrlTo())
			}
			return s, err
		}
	default:
		st, err := h.backlinks.StreamBacklinks(ctx, &v1.StreamBacklinksRequest{Target: p.Target, Select: p.Select, Filter: p.Filter,
			OrderBy: p.OrderBy, History: p.History, PageSize: q.pageSize, PageToken: q.token, MaxRows: q.maxRows, MaxUnits: q.maxUnits,
			Aggregation: aggregation(p.Aggregation)})
		if err != nil {
			return nil, err
		}
		recv = func() (seen, error) {
			r, err := st.Recv()
			s := seen{token: r.GetNextPageToken(), units: r.GetCost().GetUnitsCharged()}
			for _, b := range r.GetBacklinks() {
				s.ids = append(s.ids, backlinkID(b))
			}
			return s, err
		}
	}
	var out []seen
	for {
		s, err := recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
}

// listAll follows List tokens to the end.
func (h *harness) listAll(t *testing.T, q query) []string {
	t.Helper()
	var ids []string
	for range 100000 {
		s, err := h.list(context.Background(), q)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		ids = append(ids, s.ids...)
		if s.token == "" {
			return ids
		}
		q.token = s.token
	}
	t.Fatal("List never ended")
	return nil
}

// want is the simulator's whole answer to the request, in the pager's order.
func (h *harness) want(t *testing.T, q query) []string {
	t.Helper()
	pl, err := paging.Compile(q.data, q.p, DefaultTenant)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	q0 := pl.Query()
	rows, err := h.sim.All(&q0)
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		if q.data == paging.RefDomains {
			ids[i] = r["domain"].(string)
		} else {
			ids[i] = fmt.Sprint(r["url_from"]) + " → " + fmt.Sprint(r["url_to"])
		}
	}
	return ids
}

func flatten(pages []seen) []string {
	var ids []string
	for _, p := range pages {
		ids = append(ids, p.ids...)
	}
	return ids
}

// TestPagingReturnsEveryRowOnce is the pager's property: for many targets,
// orders, filters and page sizes, the pages of Stream and of List with
// tokens are exactly the simulator's ordered answer, and resuming a stream
// from any of its tokens continues exactly after that page.
func TestPagingReturnsEveryRowOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 97})
	rng := rand.New(rand.NewPCG(1, 2))
	targets := []string{"sized-0.example", "sized-1.example", "sized-150.example", "sized-1203.example", "news.example.org"}
	orders := []string{"", "domain_rating_source:desc", "is_dofollow,first_seen_link:desc", "last_seen:asc", "last_seen:desc",
		"http_code:desc,anchor", "url_to:desc"}
	filters := []string{"", "domain_rating_source >= 20", "is_dofollow AND NOT anchor = \"\"", "last_seen = null OR http_code != 200"}
	pageSizes := []int32{1, 7, 100}
	for i := range 24 {
		q := query{data: paging.Backlinks, p: paging.Params{
			Target:  targets[rng.IntN(len(targets))],
			OrderBy: orders[rng.IntN(len(orders))],
			Filter:  filters[rng.IntN(len(filters))],
		}, pageSize: pageSizes[rng.IntN(len(pageSizes))]}
		if i%3 == 0 {
			q.data = paging.RefDomains
			q.p.OrderBy = []string{"", "domain_rating:desc", "links_to_target,first_seen:desc", "last_seen:desc"}[rng.IntN(4)]
			q.p.Filter = []string{"", "domain_rating > 30", "NOT is_spam"}[rng.IntN(3)]
		}
		q = q.withIdentity()
		t.Run(fmt.Sprintf("%s/%s/order=%q/filter=%q/size=%d", q.data.Label(), q.p.Target, q.p.OrderBy, q.p.Filter, q.pageSize), func(t *testing.T) {
			want := h.want(t, q)
			t.Logf("%d rows", len(want))
			if q.pageSize > 1 || len(want) < 300 { // one-row List pages of big targets add time, not coverage
				if got := h.listAll(t, q); !slices.Equal(got, want) {
					t.Fatalf("List pages: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
				}
			}
			pages, err := h.stream(context.Background(), q)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			if got := flatten(pages); !slices.Equal(got, want) {
				t.Fatalf("Stream: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
			if last := pages[len(pages)-1]; last.token != "" {
				t.Errorf("the last message has a token")
			}
			// Resume from a random message's token.
			for _, k := range []int{rng.IntN(len(pages)), 0} {
				if pages[k].token == "" {
					continue
				}
				r := q
				r.token = pages[k].token
				rest, err := h.stream(context.Background(), r)
				if err != nil {
					t.Fatalf("resumed Stream: %v", err)
				}
				if got, wantRest := flatten(rest), flatten(pages[k+1:]); !slices.Equal(got, wantRest) {
					t.Fatalf("resuming after message %d: %d rows, want %d", k, len(got), len(wantRest))
				}
			}
		})
	}
}

func TestOtherDatasetsPageCompletely(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, q := range []query{
		{data: paging.BrokenBacklinks, p: paging.Params{Target: "sized-3000.example", OrderBy: "domain_rating_source:desc"}, pageSize: 40},
	} {
		q = q.withIdentity()
		t.Run(q.data.Label(), func(t *testing.T) {
			want := h.want(t, q)
			if len(want) == 0 {
				t.Fatal("the simulator has no rows for this request: the test tests nothing")
			}
			if got := h.listAll(t, q); !slices.Equal(got, want) {
				t.Fatalf("%d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

func code(err error) codes.Code { return status.Code(err) }

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
