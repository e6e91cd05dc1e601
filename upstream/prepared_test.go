package upstream

import (
	"testing"
)

// TestPreparedPageIsTheQuerysRequest: a page of a prepared query sends
// exactly the parameters the query would, its where the continuation and
// the query's own filter joined by and, though the filter was encoded once.
func TestPreparedPageIsTheQuerysRequest(t *testing.T) {
	s := MustSchema(AllBacklinks)
	dr, _ := s.Field("domain_rating_source")
	filter := Is{Field: "http_code", Cond: Cond{Op: OpEq, Value: int64(200)}}
	after := Seek([]SeekKey{{Field: dr, Desc: true}}, []any{float64(40)})
	for _, tc := range []struct {
		name         string
		where, after Expr
	}{
		{"no filter, first page", nil, nil},
		{"no filter, continued", nil, after},
		{"filter, first page", filter, nil},
		{"filter, continued", filter, after},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := Query{Endpoint: AllBacklinks, Target: "example.com", Mode: ModeDomain, Select: []string{"url_from", "domain_rating_source"},
				Where: tc.where, OrderBy: []Order{{Field: "domain_rating_source", Desc: true}}}
			p, err := Prepare(q)
			if err != nil {
				t.Fatal(err)
			}
			r, err := p.Page(tc.after, 101)
			if err != nil {
				t.Fatal(err)
			}
			want := q
			want.Limit = 101
			switch {
			case tc.after != nil && tc.where != nil:
				want.Where = And{tc.after, tc.where}
			case tc.after != nil:
				want.Where = tc.after
			}
			v, err := want.Values()
			if err != nil {
				t.Fatal(err)
			}
			if got, w := r.Key(), string(AllBacklinks)+"?"+v.Encode(); got != w {
				t.Fatalf("page request\n%s\nwant the query's\n%s", got, w)
			}
		})
	}
	if _, err := Prepare(Query{Endpoint: AllBacklinks, Target: "example.com", Select: []string{"nope"}}); err == nil {
		t.Fatal("a query with an unknown field was prepared")
	}
}
