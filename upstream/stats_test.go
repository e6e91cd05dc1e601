package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimitsAndUsage(t *testing.T) {
	var path string
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		io.WriteString(w, `{"limits_and_usage":{"subscription":"Enterprise","usage_reset_date":"2026-12-01",
			"units_limit_workspace":1000000,"units_usage_workspace":1234,"units_limit_api_key":null,
			"units_usage_api_key":567,"api_key_expiration_date":"2027-01-31T10:00:00Z"}}`)
	})
	l, err := h.c.LimitsAndUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if path != LimitsAndUsagePath {
		t.Errorf("path = %q", path)
	}
	if l.Subscription != "Enterprise" || l.UnitsUsageAPIKey != 567 || l.UnitsLimitAPIKey != nil ||
		l.UnitsLimitWorkspace == nil || *l.UnitsLimitWorkspace != 1000000 || *l.UnitsUsageWorkspace != 1234 ||
		!l.UsageResetDate.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) ||
		!l.APIKeyExpirationDate.Equal(time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("got %+v", l)
	}
	used, reset, err := h.c.UpstreamUsage(context.Background())
	if err != nil || used != 567 || !reset.Equal(l.UsageResetDate) {
		t.Errorf("UpstreamUsage = %d, %v, %v", used, reset, err)
	}
}

// TestUsageResetDateForms: the spec says usage_reset_date is a date, real
// answers write a date-time; both read as the same instant.
func TestUsageResetDateForms(t *testing.T) {
	for _, form := range []string{"2026-09-04", "2026-09-04T00:00:00Z"} {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"limits_and_usage":{"usage_reset_date":%q,"units_usage_api_key":1,"units_limit_api_key":null}}`, form)
		})
		l, err := h.c.LimitsAndUsage(context.Background())
		if err != nil || !l.UsageResetDate.Equal(time.Date(2026, 9, 4, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("%s: %v, %v", form, l.UsageResetDate, err)
		}
	}
}

func TestLimitsAndUsageMalformed(t *testing.T) {
	for name, body := range map[string]string{
		"no key":      `{}`,
		"no usage":    `{"limits_and_usage":{"subscription":"x"}}`,
		"bad date":    `{"limits_and_usage":{"units_usage_api_key":1,"usage_reset_date":"soon"}}`,
		"not json":    `<html></html>`,
		"wrong types": `{"limits_and_usage":{"units_usage_api_key":"many"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
			_, err := h.c.LimitsAndUsage(context.Background())
			if !errors.Is(err, ErrUpstreamUnavailable) || h.hits.Load() != 1 {
				t.Errorf("err = %v, hits = %d", err, h.hits.Load())
			}
		})
	}
}

func TestBacklinksStats(t *testing.T) {
	var query string
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		if r.URL.Path != BacklinksStatsPath {
			http.NotFound(w, r)
			return
		}
		costHeaders(w, 1, 12, 50, "miss")
		io.WriteString(w, `{"metrics":{"live":120,"all_time":3400,"live_refdomains":12,"all_time_refdomains":99}}`)
	})
	st, res, err := h.c.BacklinksStats(context.Background(), StatsQuery{
		Target: "example.com", Mode: ModeDomain, Protocol: ProtocolHTTPS,
		Date: time.Date(2026, 5, 17, 23, 0, 0, 0, time.FixedZone("x", -3600)),
	})
	cost := res.Cost
	if err != nil {
		t.Fatal(err)
	}
	if st != (Stats{Live: 120, AllTime: 3400, LiveRefdomains: 12, AllTimeRefdomains: 99}) {
		t.Errorf("stats = %+v", st)
	}
	if !cost.Known || cost.Actual != 50 || cost.PerRow != 12 {
		t.Errorf("cost = %+v", cost)
	}
	for _, want := range []string{"target=example.com", "mode=domain", "protocol=https", "date=2026-05-18"} {
		if !strings.Contains(query, want) {
			t.Errorf("query %q lacks %q", query, want)
		}
	}

	t.Run("zero date is today by the client's clock", func(t *testing.T) {
		if _, _, err := h.c.BacklinksStats(context.Background(), StatsQuery{Target: "example.com"}); err != nil {
			t.Fatal(err)
		}
		if want := "date=" + h.clock.Now().UTC().Format(time.DateOnly); !strings.Contains(query, want) {
			t.Errorf("query %q lacks %q", query, want)
		}
	})
	t.Run("invalid input sends nothing", func(t *testing.T) {
		before := h.hits.Load()
		for _, q := range []StatsQuery{{}, {Target: "x", Mode: "all"}, {Target: "x", Protocol: "ftp"}} {
			var inv *InvalidError
			if _, _, err := h.c.BacklinksStats(context.Background(), q); !errors.As(err, &inv) {
				t.Errorf("%+v: err = %v", q, err)
			}
		}
		if h.hits.Load() != before {
			t.Error("a request was sent")
		}
	})
	t.Run("missing cost headers fall back to the floor", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"metrics":{"live":1}}`)
		})
		_, res, err := h.c.BacklinksStats(context.Background(), StatsQuery{Target: "example.com"})
		cost := res.Cost
		if err != nil || !cost.Estimated || cost.Actual != MinUnits {
			t.Errorf("cost = %+v, err = %v", cost, err)
		}
	})
	t.Run("limits-and-usage is free even without headers", func(t *testing.T) {
		h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"limits_and_usage":{"units_usage_api_key":1}}`)
		})
		res, err := h.c.call(context.Background(), LimitsAndUsagePath, nil, 0, func(body io.Reader) (int, error) {
			return 0, decodeObject(body, new(map[string]any))
		})
		if err != nil || res.Cost.Actual != 0 || res.Spent != 0 {
			t.Errorf("res = %+v, err = %v", res, err)
		}
	})
}

// FuzzDecodeEveryField feeds arbitrary bodies to the record decoder over
// every field of the endpoint: it must never panic, and it either returns
// rows of the documented Go types or an error.
func FuzzDecodeEveryField(f *testing.F) {
	for _, seed := range []string{
		`{"backlinks":[]}`,
		`{"backlinks":[{"url_from":"a","http_code":200,"domain_rating_source":1.5,"is_dofollow":true,"first_seen":"2025-01-01T00:00:00Z","languages":["en"],"redirect_kind":[301],"last_seen":null,"x":{"y":[1,2.5]}}]}`,
		`{"other":[1,{"a":[]}],"backlinks":[{"source_page_publish_date":"2024-12-31"}],"more":null}`,
		`{"backlinks":[{"http_code":1e3}]}`,
		`{"backlinks":[{"url_from":"a`,
		`<html>429 Too Many Requests</html>`,
		`{"backlinks":[null]}`,
		``,
	} {
		f.Add([]byte(seed))
	}
	cols := allColumns(MustSchema(AllBacklinks))
	f.Fuzz(func(t *testing.T, body []byte) {
		n := 0
		got, err := decodeRecords(bytes.NewReader(body), cols, func(r Record) error {
			n++
			for i, v := range r {
				fld := cols.fields[i]
				if v.Any() == nil {
					continue
				}
				if want := goType(fld.Kind); fmt.Sprintf("%T", v.Any()) != want {
					t.Fatalf("field %s: %T, want %s", fld.Name, v.Any(), want)
				}
			}
			return nil
		})
		if got != n {
			t.Fatalf("decodeRecords says %d rows, fn saw %d", got, n)
		}
		if err != nil {
			var mal *malformedError
			if !errors.As(err, &mal) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unclassified error %T: %v", err, err)
			}
		}
	})
}

func goType(k Kind) string {
	switch k {
	case KindString:
		return "string"
	case KindInt:
		return "int64"
	case KindFloat:
		return "float64"
	case KindBool:
		return "bool"
	case KindTime, KindDate:
		return "time.Time"
	case KindStringList:
		return "[]string"
	case KindIntList:
		return "[]int64"
	}
	return "?"
}

// TestBacklinksStatsWithIPs: IPs add a POST of batch-analysis with the
// target and output in its JSON body and no query string (the spec gives
// the operation no query parameters), and the two costs add up.
func TestBacklinksStatsWithIPs(t *testing.T) {
	var calls []string
	var body map[string]any
	var batchQuery string
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, r.Method+" "+r.URL.Path)
		w.Header().Set("x-api-rows", "1")
		w.Header().Set("x-api-cache", "miss")
		switch r.URL.Path {
		case BacklinksStatsPath:
			w.Header().Set("x-api-units-cost-row", "12")
			w.Header().Set("x-api-units-cost-total", "50")
			w.Header().Set("x-api-units-cost-total-actual", "50")
			io.WriteString(w, `{"metrics":{"live":10,"all_time":20,"live_refdomains":3,"all_time_refdomains":4}}`)
		case BatchAnalysisPath:
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("batch-analysis Content-Type %q", r.Header.Get("Content-Type"))
			}
			batchQuery = r.URL.RawQuery
			json.NewDecoder(r.Body).Decode(&body)
			w.Header().Set("x-api-units-cost-row", "2")
			w.Header().Set("x-api-units-cost-total", "50")
			w.Header().Set("x-api-units-cost-total-actual", "50")
			io.WriteString(w, `{"targets":[{"index":0,"url":"example.com","refips":7,"refips_subnets":5}]}`)
		}
	})
	st, res, err := h.c.BacklinksStats(context.Background(), StatsQuery{Target: "example.com", Mode: ModeDomain, IPs: true,
		Date: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
	cost := res.Cost
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"GET " + BacklinksStatsPath, "POST " + BatchAnalysisPath}; strings.Join(calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	targets, _ := body["targets"].([]any)
	target, _ := targets[0].(map[string]any)
	if len(targets) != 1 || target["url"] != "example.com" || target["mode"] != "domain" || target["protocol"] != "both" ||
		fmt.Sprint(body["select"]) != "[refips refips_subnets]" || body["output"] != "json" {
		t.Errorf("batch-analysis body %v", body)
	}
	if batchQuery != "" {
		t.Errorf("batch-analysis query string %q, want none", batchQuery)
	}
	if st.RefIPs != 7 || st.RefIPsSubnets != 5 || st.Live != 10 || cost.Actual != 100 || cost.Total != 100 || !cost.Known {
		t.Errorf("stats %+v, cost %+v", st, cost)
	}
	// One call of two requests, settled as a list call is: both counted.
	if res.Attempts != 2 || res.Spent != 100 || res.Unanswered {
		t.Errorf("result %+v, want 2 requests that spent 100 units", res)
	}
	if StatsUnits(true) != 100 || StatsUnits(false) != 50 {
		t.Errorf("StatsUnits: %d with IPs, %d without", StatsUnits(true), StatsUnits(false))
	}
	// refips and refips_subnets carry no price annotation in the spec: 1 unit each.
	if StatsPerRow(true) != 12+2 || StatsPerRow(false) != 12 {
		t.Errorf("StatsPerRow: %d with IPs, %d without", StatsPerRow(true), StatsPerRow(false))
	}
}

// TestStatsCutShortIsSettledWhole: a stats body cut after its headers is
// asked again, and the result settles what both attempts were charged, as
// a list call's does, so the ledger stays equal to the upstream's figure.
func TestStatsCutShortIsSettledWhole(t *testing.T) {
	var n atomic.Int32
	h := newHarness(t, func(w http.ResponseWriter, r *http.Request) {
		costHeaders(w, 1, 50, 50, "miss")
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"metrics":{"li`)
			return
		}
		io.WriteString(w, `{"metrics":{"live":3}}`)
	})
	st, res, err := h.c.BacklinksStats(context.Background(), StatsQuery{Target: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Live != 3 || res.Attempts != 2 || res.Spent != 100 || res.Cost.Actual != 50 {
		t.Errorf("stats %+v, result %+v: want 2 attempts that spent 100 units", st, res)
	}
}
