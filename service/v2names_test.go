package service

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
)

// TestV2NamesNameTheirV3Equivalent: a v2 column in select, filter or
// order_by, or a v2 value, is INVALID_ARGUMENT that names the v3 one, and
// AIP-132 order_by is accepted beside Ahrefs' syntax.
func TestV2NamesNameTheirV3Equivalent(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	for _, tc := range []struct {
		req  *v1.ListBacklinksRequest
		want string
	}{
		{&v1.ListBacklinksRequest{Target: "sized-100.example", Select: []string{"url_from,ahrefs_rank"}}, `"url_rating_source"`},
		{&v1.ListBacklinksRequest{Target: "sized-100.example", OrderBy: "text_pre:desc"}, `"snippet_left"`},
		{&v1.ListBacklinksRequest{Target: "sized-100.example", Filter: "nofollow"}, `"is_nofollow"`},
		{&v1.ListBacklinksRequest{Target: "sized-100.example", Filter: `link_type = "href"`}, `"text"`},
		{&v1.ListBacklinksRequest{Target: "sized-100.example", Select: []string{"prev_visited"}}, "no equivalent"},
	} {
		_, err := h.backlinks.ListBacklinks(ctx, tc.req)
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "v2") {
			t.Errorf("%v: %v, want INVALID_ARGUMENT naming %s", tc.req, err, tc.want)
		}
	}
	_, err := h.backlinks.ListRefDomains(ctx, &v1.ListRefDomainsRequest{Target: "sized-100.example", OrderBy: "refdomain"})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"domain"`) {
		t.Errorf("refdomains order by v2 refdomain: %v", err)
	}
	_, err = h.backlinks.ListNewLostBacklinks(ctx, &v1.ListNewLostBacklinksRequest{Target: "sized-100.example", Since: "2025-01-01", OrderBy: "date desc"})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"change_time"`) {
		t.Errorf("new/lost order by v2 date: %v", err)
	}
	if used, _ := h.used(t); used != 0 {
		t.Errorf("refused requests spent %d units", used)
	}

	aip := query{data: paging.Backlinks, p: paging.Params{Target: "sized-300.example", OrderBy: "domain_rating_source desc, first_seen_link"}, pageSize: 100}.withIdentity()
	ahrefs := aip
	ahrefs.p.OrderBy = "domain_rating_source:desc,first_seen_link:asc"
	if a, b := h.listAll(t, aip), h.listAll(t, ahrefs); len(a) != 300 || strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Errorf("AIP-132 order_by gave %d rows, Ahrefs syntax %d, or another order", len(a), len(b))
	}
}
