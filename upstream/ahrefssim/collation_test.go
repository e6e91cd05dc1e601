package ahrefssim

import (
	"slices"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/upstream"
)

// TestCollationKnobs: order_by sorts text by the configured collation and
// where compares it by the where collation (the same unless set apart); a
// consistent collation returns from ["gte", v] exactly the rows order_by
// puts at or after v, an inconsistent one does not.
func TestCollationKnobs(t *testing.T) {
	q := func(where upstream.Expr) *upstream.Query {
		return &upstream.Query{Endpoint: upstream.AllBacklinks, Target: "sized-150.example", Select: []string{"ip_source"},
			OrderBy: []upstream.Order{{Field: "ip_source"}, {Field: "url_from"}, {Field: "url_to"}}, Where: where}
	}
	domainsOf := func(t *testing.T, s *Server, where upstream.Expr) []string {
		rows, err := s.All(q(where))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rows {
			if ip, ok := r["ip_source"].(string); ok { // nulls come first and match no gte
				out = append(out, ip)
			}
		}
		return out
	}
	bytesOrder := domainsOf(t, New(Config{}), nil)
	for _, tc := range []struct {
		sort, where Collation
	}{{Bytes, ""}, {Caseless, ""}, {Locale, ""}, {Locale, Bytes}, {Bytes, Locale}} {
		t.Run(string(tc.sort)+"/"+string(tc.where), func(t *testing.T) {
			s := New(Config{Collation: tc.sort, WhereCollation: tc.where})
			where := tc.where
			if where == "" {
				where = tc.sort
			}
			all := domainsOf(t, s, nil)
			if !slices.IsSortedFunc(all, func(a, b string) int { return strings.Compare(tc.sort.key(a), tc.sort.key(b)) }) {
				t.Fatalf("order_by domain is not sorted by %s", tc.sort)
			}
			if tc.sort == Locale && slices.Equal(all, bytesOrder) {
				t.Fatal("the locale order is the byte order on this data: the test tests nothing")
			}
			differs := false
			for i := 0; i < len(all); i += 7 {
				v := all[i]
				got := domainsOf(t, s, upstream.Is{Field: "ip_source", Cond: upstream.Cond{Op: upstream.OpGte, Value: v}})
				var want []string
				for _, d := range all {
					if where.key(d) >= where.key(v) {
						want = append(want, d)
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("gte %q: %d rows, want the %d rows whose %s key is at least its own", v, len(got), len(want), where)
				}
				first := slices.Index(all, v)
				differs = differs || !slices.Equal(got, all[first:])
			}
			if consistent := tc.where == "" || tc.where == tc.sort; consistent == differs {
				t.Fatalf("some gte returns other rows than order_by puts from its value on: %v, want %v", differs, !consistent)
			}
		})
	}
	t.Run("caseless eq", func(t *testing.T) {
		for _, c := range []Collation{Bytes, Caseless} {
			rows, err := New(Config{Collation: c}).All(&upstream.Query{Endpoint: upstream.AllBacklinks, Target: "sized-150.example",
				Select: []string{"anchor"}, Where: upstream.Is{Field: "anchor", Cond: upstream.Cond{Op: upstream.OpEq, Value: "CLICK HERE"}}})
			if err != nil {
				t.Fatal(err)
			}
			if found := len(rows) > 0; found != (c == Caseless) {
				t.Errorf("%s: eq \"CLICK HERE\" found %d rows of anchor \"click here\"", c, len(rows))
			}
		}
	})
}

// TestFloat32Knob: numbers are kept as 32-bit floats but shown as the
// decimal they came from, so ["eq", shown] misses the row, while the
// interval around it finds it.
func TestFloat32Knob(t *testing.T) {
	s := New(Config{Float32: true})
	base := &upstream.Query{Endpoint: upstream.RefDomains, Target: "sized-400.example", Select: []string{"domain", "domain_rating"}}
	all, err := s.All(base)
	if err != nil {
		t.Fatal(err)
	}
	var shown float64
	for _, r := range all {
		if f := r["domain_rating"].(float64); float64(float32(f)) != f {
			shown = f
			break
		}
	}
	if shown == 0 {
		t.Fatal("no value differs from its float32: the test tests nothing")
	}
	count := func(where upstream.Expr) int {
		q := *base
		q.Where = where
		rows, err := s.All(&q)
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	is := func(op upstream.Op, v float64) upstream.Expr {
		return upstream.Is{Field: "domain_rating", Cond: upstream.Cond{Op: op, Value: v}}
	}
	if n := count(is(upstream.OpEq, shown)); n != 0 {
		t.Errorf("eq %v matched %d rows: the knob keeps the decimal", shown, n)
	}
	if n := count(upstream.And{is(upstream.OpGte, shown-1e-4), is(upstream.OpLte, shown+1e-4)}); n == 0 {
		t.Errorf("no row within 1e-4 of %v", shown)
	}
}
