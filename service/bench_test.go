package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// benchTarget has exactly benchRows backlinks in the simulator.
const (
	benchTarget = "sized-50000.example"
	benchRows   = 50000
)

// BenchmarkStreamBacklinks measures a whole stream through the service: the
// simulator over HTTP, the client's decoding, the ledger, the pager's
// look-ahead, row conversion and gRPC, for 50,000 rows in 1,000-row pages.
func BenchmarkStreamBacklinks(b *testing.B) {
	h := newHarness(b, harnessOptions{pageRows: 1000})
	h.sim.SetCacheTTL(-1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		streamAll(b, h)
	}
	b.ReportMetric(float64(benchRows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkStreamVsRawClient gives the cost of linkgate per row: a gRPC
// StreamBacklinks (default selection, 1,000-row upstream pages) against a
// plain Go client that reads the same simulator pages by keyset over HTTP
// and decodes them into structs with encoding/json. Both run against the
// same simulator, alternately within each iteration so that the noise of a
// shared machine falls on both; the ratio is grpc-rows/s ÷ raw-rows/s of
// each iteration, the median over the iterations.
// The simulator's and linkgate's caches are off: every page is computed.
func BenchmarkStreamVsRawClient(b *testing.B) {
	h := newHarness(b, harnessOptions{pageRows: 1000, noCache: true})
	h.sim.SetCacheTTL(-1)
	raw := &rawClient{base: h.simURL, key: simKey, target: benchTarget}
	grpcRun := func() { streamAll(b, h) }
	rawRun := func() {
		if n, err := raw.readAll(); err != nil || n != benchRows {
			b.Fatalf("raw client: %d rows, %v", n, err)
		}
	}
	var grpcTime, rawTime time.Duration
	var ratios []float64
	b.ResetTimer()
	for i := range b.N {
		// Each goes first every other iteration, so that neither always
		// meets a warm or a cold machine.
		first, second := grpcRun, rawRun
		if i%2 == 1 {
			first, second = rawRun, grpcRun
		}
		t0 := time.Now()
		first()
		t1 := time.Now()
		second()
		t2 := time.Now()
		g, r := t1.Sub(t0), t2.Sub(t1)
		if i%2 == 1 {
			g, r = r, g
		}
		grpcTime += g
		rawTime += r
		ratios = append(ratios, r.Seconds()/g.Seconds())
	}
	b.ReportMetric(float64(benchRows*b.N)/grpcTime.Seconds(), "grpc-rows/s")
	b.ReportMetric(float64(benchRows*b.N)/rawTime.Seconds(), "raw-rows/s")
	// The median of the iterations' ratios: a burst of other work on the
	// machine during one run sways it less than the ratio of the totals.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
}

// streamAll streams every backlink of benchTarget through gRPC, checking
// their number.
func streamAll(b *testing.B, h *harness) {
	st, err := h.backlinks.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{Target: benchTarget, PageSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(m.GetBacklinks())
	}
	if n != benchRows {
		b.Fatalf("%d rows, want %d", n, benchRows)
	}
}

// rawClient is what a team would write without linkgate: GET the endpoint
// with linkgate's default selection in 1,000-row pages in linkgate's
// default order (first_seen_link descending, then url_from and url_to),
// each page starting after the last key of the one before, decoded with
// encoding/json into a struct per row.
type rawClient struct {
	base, key, target string
	http              http.Client
}

type rawBacklink struct {
	URLFrom            string     `json:"url_from"`
	URLTo              string     `json:"url_to"`
	Anchor             string     `json:"anchor"`
	DomainRatingSource float64    `json:"domain_rating_source"`
	FirstSeenLink      time.Time  `json:"first_seen_link"`
	LastSeen           *time.Time `json:"last_seen"`
}

func (c *rawClient) readAll() (int, error) {
	var last *rawBacklink
	total := 0
	for {
		v := url.Values{
			"target":   {c.target},
			"select":   {"url_from,url_to,anchor,domain_rating_source,first_seen_link,last_seen"},
			"order_by": {"first_seen_link:desc,url_from:asc,url_to:asc"},
			"limit":    {"1000"},
			"output":   {"json"},
		}
		if last != nil {
			at, _ := json.Marshal(last.FirstSeenLink.UTC().Format(time.RFC3339))
			from, _ := json.Marshal(last.URLFrom)
			to, _ := json.Marshal(last.URLTo)
			v.Set("where", fmt.Sprintf(`{"or":[{"field":"first_seen_link","is":["lt",%s]},{"and":[{"field":"first_seen_link","is":["eq",%s]},`+
				`{"or":[{"field":"url_from","is":["gt",%s]},{"and":[{"field":"url_from","is":["eq",%s]},{"field":"url_to","is":["gt",%s]}]}]}]}]}`,
				at, at, from, from, to))
		}
		req, err := http.NewRequest(http.MethodGet, c.base+"/v3/site-explorer/all-backlinks?"+v.Encode(), nil)
		if err != nil {
			return total, err
		}
		req.Header.Set("Authorization", "Bearer "+c.key)
		resp, err := c.http.Do(req)
		if err != nil {
			return total, err
		}
		var page struct {
			Backlinks []rawBacklink `json:"backlinks"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return total, fmt.Errorf("status %d: %v", resp.StatusCode, err)
		}
		total += len(page.Backlinks)
		if len(page.Backlinks) < 1000 {
			return total, nil
		}
		last = &page.Backlinks[len(page.Backlinks)-1]
	}
}

// BenchmarkBoundaryChecks gives what the boundary checks cost a stream of
// 50,000 rows in 1,000-row pages: in the default order (a time first, whose
// pages compare no text) and in an order that starts with text, each with
// the checks on (the default) and off, as upstream requests and units
// against the unchecked stream's.
func BenchmarkBoundaryChecks(b *testing.B) {
	checked := newHarness(b, harnessOptions{pageRows: 1000, noCache: true})
	trusted := newHarness(b, harnessOptions{pageRows: 1000, noCache: true, trustCollation: true})
	for _, h := range []*harness{checked, trusted} {
		h.sim.SetCacheTTL(-1)
	}
	for _, order := range []string{"", "url_from"} {
		name := order
		if name == "" {
			name = "default"
		}
		b.Run(name, func(b *testing.B) {
			var spent [2][2]int64 // checked, trusted × requests, units
			for b.Loop() {
				for i, h := range []*harness{checked, trusted} {
					r, u := h.sim.Requests(), h.sim.Usage()
					st, err := h.backlinks.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{Target: benchTarget, OrderBy: order, PageSize: 1000})
					if err != nil {
						b.Fatal(err)
					}
					if n, _, err := streamToEnd(st); n != benchRows || err != io.EOF {
						b.Fatalf("%d rows, %v", n, err)
					}
					spent[i][0] += h.sim.Requests() - r
					spent[i][1] += h.sim.Usage() - u
				}
			}
			b.ReportMetric(float64(spent[0][0])/float64(spent[1][0]), "requests-vs-unchecked")
			b.ReportMetric(float64(spent[0][1])/float64(spent[1][1]), "units-vs-unchecked")
		})
	}
}
