package service

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// TestAggregationExactlyOnce pages every aggregation under orders it
// accepts, with page sizes that put boundaries inside domains: List pages
// and streams must be the simulator's unpaged answer, and under
// 1_per_domain each domain must come once.
func TestAggregationExactlyOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 61})
	orders := map[upstream.Aggregation][]string{
		upstream.AggregationOnePerDomain: {"", "name_source:desc", "domain_rating_source:desc", "domain_rating_source desc, name_source, first_seen_link desc",
			"is_spam,ahrefs_rank_source", "root_name_source,traffic_domain:desc"},
		upstream.AggregationSimilarLinks: {"", "first_seen_link", "domain_rating_source desc"},
		upstream.AggregationAll:          {"", "first_seen_link:desc", "anchor"},
	}
	for _, order := range []string{"", "domain_rating_source:desc"} {
		q := query{data: paging.BrokenBacklinks, p: paging.Params{Target: "sized-30000.example", OrderBy: order, Aggregation: upstream.AggregationOnePerDomain,
			Select: []string{"name_source"}}, pageSize: 4}.withIdentity()
		t.Run(fmt.Sprintf("broken/%q", order), func(t *testing.T) {
			want := h.want(t, q)
			if len(want) < 50 {
				t.Fatalf("%d rows: too few to page", len(want))
			}
			if got := h.listAll(t, q); !slices.Equal(got, want) {
				t.Fatalf("List: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
			pages, err := h.stream(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if got := flatten(pages); !slices.Equal(got, want) {
				t.Fatalf("Stream: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
		})
	}
	for agg, list := range orders {
		for _, order := range list {
			for _, size := range []int32{3, 50} {
				q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-1200.example", OrderBy: order, Aggregation: agg,
					Select: []string{"name_source"}}, pageSize: size}.withIdentity()
				t.Run(fmt.Sprintf("%s/%q/%d", agg, order, size), func(t *testing.T) {
					want := h.want(t, q)
					if len(want) < 100 {
						t.Fatalf("%d rows: too few to page", len(want))
					}
					if got := h.listAll(t, q); !slices.Equal(got, want) {
						t.Fatalf("List: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
					}
					pages, err := h.stream(context.Background(), q)
					if err != nil {
						t.Fatal(err)
					}
					if got := flatten(pages); !slices.Equal(got, want) {
						t.Fatalf("Stream: %d rows, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
					}
					if agg == upstream.AggregationOnePerDomain {
						hosts := map[string]bool{}
						for _, id := range want {
							host := strings.SplitN(strings.SplitN(id, "://", 2)[1], "/", 2)[0]
							if hosts[host] {
								t.Fatalf("domain %s twice in the simulator's answer", host)
							}
							hosts[host] = true
						}
					}
				})
			}
		}
	}
}

// TestAggregationRefusesOrdersItCannotServe: the report's order
// (first_seen_link under 1_per_domain) streamed 11,070 rows for 5,187
// domains. It is refused before any unit is spent, naming orders that work.
func TestAggregationRefusesOrdersItCannotServe(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, order := range []string{"first_seen_link:asc", "url_from", "domain_rating_source:desc,anchor", "anchor,name_source"} {
		_, err := h.backlinks.ListBacklinks(context.Background(), &v1.ListBacklinksRequest{Target: "sized-20000.example",
			OrderBy: order, Aggregation: v1.Aggregation_AGGREGATION_ONE_PER_DOMAIN})
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "name_source") || !strings.Contains(err.Error(), "domain_rating_source") {
			t.Errorf("order %q: %v, want INVALID_ARGUMENT naming the orders that work", order, err)
		}
		_, err = h.backlinks.EstimateCost(context.Background(), &v1.EstimateCostRequest{Request: &v1.EstimateCostRequest_Backlinks{
			Backlinks: &v1.ListBacklinksRequest{Target: "sized-20000.example", OrderBy: order, Aggregation: v1.Aggregation_AGGREGATION_ONE_PER_DOMAIN}}})
		if code(err) != codes.InvalidArgument {
			t.Errorf("EstimateCost with order %q: %v, want INVALID_ARGUMENT as List", order, err)
		}
	}
	if used, _ := h.used(t); used != 0 {
		t.Errorf("refused requests spent %d units", used)
	}
}
