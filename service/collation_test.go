package service

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// collationKnob is one way an upstream may sort and compare: consistent
// ones (order_by and where agree) must page exactly; inconsistent ones
// must page exactly or stop with UPSTREAM_ORDER_INCONSISTENT before a row
// is skipped or repeated.
type collationKnob struct {
	name       string
	set        func(*ahrefssim.Config)
	consistent bool
}

var collationKnobs = []collationKnob{
	{"bytes", func(*ahrefssim.Config) {}, true},
	{"caseless", func(c *ahrefssim.Config) { c.Collation = ahrefssim.Caseless }, true},
	{"locale", func(c *ahrefssim.Config) { c.Collation = ahrefssim.Locale }, true},
	{"float32", func(c *ahrefssim.Config) { c.Float32 = true }, true},
	{"locale+float32", func(c *ahrefssim.Config) { c.Collation, c.Float32 = ahrefssim.Locale, true }, true},
	{"sort-locale/where-bytes", func(c *ahrefssim.Config) { c.Collation, c.WhereCollation = ahrefssim.Locale, ahrefssim.Bytes }, false},
	{"sort-bytes/where-locale", func(c *ahrefssim.Config) { c.WhereCollation = ahrefssim.Locale }, false},
}

// checkNoRepeat fails when got repeats a row or leaves want's order: an
// inconsistent upstream may make paging stop, never repeat or reorder.
func checkNoRepeat(t *testing.T, got, want []string) {
	t.Helper()
	at := map[string]int{}
	for i, id := range want {
		at[id] = i
	}
	last := -1
	for _, id := range got {
		i, ok := at[id]
		if !ok || i <= last {
			t.Fatalf("row %s came twice, out of order or from nowhere", id)
		}
		last = i
	}
}

// orderableFields are the fields a dataset accepts in order_by.
func orderableFields(ep upstream.Endpoint) []string {
	var names []string
	for _, f := range upstream.MustSchema(ep).Fields() {
		if f.Order && f.Select {
			names = append(names, f.Name)
		}
	}
	return names
}

// orderFailure reports whether err is the order check's status, with the
// token to resume from before the refused page.
func orderFailure(t *testing.T, err error) (token string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("the stream ended with %v, want FAILED_PRECONDITION %s", err, ReasonUpstreamOrder)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == ReasonUpstreamOrder {
			if info.GetMetadata()["key"] == "" || info.GetMetadata()["page"] == "" {
				t.Errorf("the error does not name the page and the key: %v", info.GetMetadata())
			}
			return info.GetMetadata()["page_token"]
		}
	}
	t.Fatalf("the stream ended with %v, want reason %s", err, ReasonUpstreamOrder)
	return ""
}

// TestPagingUnderEveryCollation is the paging property under every way the
// upstream may collate text and keep floats: for every dataset and every
// field it accepts in order_by (both directions over the knobs), a stream
// of small pages, List pages followed by token, and streams resumed from
// tokens taken mid-stream, are exactly the simulator's ordered answer when
// the upstream is consistent; when it is not, they are a prefix of it
// ended by the order error, whose token resumes before the refused page,
// and never repeat a row. With the boundaries checked (the default) no row
// is lost unseen; the same pages unchecked (LINKGATE_CHECK_BOUNDARIES=false)
// are run beside them for the figures.
func TestPagingUnderEveryCollation(t *testing.T) {
	for ki, knob := range collationKnobs {
		t.Run(knob.name, func(t *testing.T) {
			checked := pageEveryOrder(t, knob, ki, false)
			t.Logf("checked: %d orders exact, %d stops by the order check, %d runs that lost rows inside a page unseen; %d units, %d requests",
				checked.exact, checked.failed, checked.silent, checked.units, checked.requests)
			if checked.silent > 0 {
				t.Errorf("%d runs lost rows no check saw: an inconsistent upstream must stop paging before a row is lost", checked.silent)
			}
			if knob.consistent {
				return
			}
			if checked.failed == 0 {
				t.Errorf("no order failed under an inconsistent upstream: the knob tests nothing")
			}
			trusted := pageEveryOrder(t, knob, ki, true)
			t.Logf("unchecked: %d orders exact, %d stops by the order check, %d runs that lost rows inside a page unseen; %d units, %d requests",
				trusted.exact, trusted.failed, trusted.silent, trusted.units, trusted.requests)
		})
	}
}

// collationRun is what paging every order under one knob gave.
type collationRun struct {
	exact, failed, silent int
	units, requests       int64
}

// pageEveryOrder pages every order of every dataset under knob, the
// boundaries checked unless trust, and checks what holds either way.
func pageEveryOrder(t *testing.T, knob collationKnob, ki int, trust bool) collationRun {
	t.Helper()
	datasets := []struct {
		data   *paging.Dataset
		target string
	}{
		{paging.Backlinks, "sized-150.example"},
		{paging.RefDomains, "sized-400.example"},
		{paging.BrokenBacklinks, "sized-1203.example"},
	}
	h := newHarness(t, harnessOptions{pageRows: 11, sim: knob.set, noCache: true, trustCollation: trust})
	failed, exact, silent := 0, 0, 0
	for _, ds := range datasets {
		for fi, name := range orderableFields(ds.data.Endpoint()) {
			order := name
			if (fi+ki)%2 == 1 {
				order += ":desc"
			}
			q := query{data: ds.data, p: paging.Params{Target: ds.target, OrderBy: order}, pageSize: 5}.withIdentity()
			want := h.want(t, q)
			if len(want) == 0 {
				t.Fatalf("%s: the simulator has no rows: the test tests nothing", ds.data.Label())
			}
			pages, err := h.stream(context.Background(), q)
			got := flatten(pages)
			if err == nil && slices.Equal(got, want) {
				exact++
			} else {
				if knob.consistent {
					t.Fatalf("%s order_by %s: %d rows (error %v), want exactly %d; first difference at %d", ds.data.Label(), order, len(got), err, len(want), firstDiff(got, want))
				}
				checkNoRepeat(t, got, want)
				if err == nil {
					silent++
					t.Logf("%s order_by %s: %d rows of %d, no error: lost inside a page, where no check sees it", ds.data.Label(), order, len(got), len(want))
					continue
				}
				if !slices.Equal(got, want[:min(len(got), len(want))]) {
					silent++
					t.Logf("%s order_by %s: a row lost inside a page before the stream stopped", ds.data.Label(), order)
				}
				failed++
				t.Logf("%s order_by %s: stopped after %d rows: %v", ds.data.Label(), order, len(got), err)
				if tok := orderFailure(t, err); tok != "" {
					r := q
					r.token = tok
					rest, err := h.stream(context.Background(), r)
					if again := flatten(rest); len(again) > 0 || err == nil {
						t.Fatalf("%s order_by %s: resuming before the refused page sent %d rows (error %v): it must fail the same way", ds.data.Label(), order, len(again), err)
					}
					orderFailure(t, err)
				}
				continue
			}
			// List pages followed by token are the same rows.
			if knob.consistent && fi%4 == 0 {
				if got := h.listAll(t, q); !slices.Equal(got, want) {
					t.Fatalf("%s order_by %s: List pages: %d rows, want %d; first difference at %d", ds.data.Label(), order, len(got), len(want), firstDiff(got, want))
				}
			}
			// Tokens taken mid-stream resume exactly.
			for _, k := range []int{len(pages) / 3, 2 * len(pages) / 3} {
				if k >= len(pages) || pages[k].token == "" {
					continue
				}
				r := q
				r.token = pages[k].token
				rest, err := h.stream(context.Background(), r)
				if err != nil && !knob.consistent {
					checkNoRepeat(t, flatten(rest), flatten(pages[k+1:]))
					orderFailure(t, err)
					failed++
					t.Logf("%s order_by %s: resumed after message %d, stopped: %v", ds.data.Label(), order, k, err)
					continue
				}
				if err != nil {
					t.Fatalf("%s order_by %s: resumed stream: %v", ds.data.Label(), order, err)
				}
				if got, wantRest := flatten(rest), flatten(pages[k+1:]); !knob.consistent && !slices.Equal(got, wantRest) {
					checkNoRepeat(t, got, wantRest)
					silent++
					t.Logf("%s order_by %s: resumed after message %d: %d rows of %d, no error: lost inside a page", ds.data.Label(), order, k, len(got), len(wantRest))
				} else if !slices.Equal(got, wantRest) {
					t.Fatalf("%s order_by %s: resuming after message %d: %d rows, want %d; first difference at %d", ds.data.Label(), order, k, len(got), len(wantRest), firstDiff(got, wantRest))
				}
			}
		}
	}
	return collationRun{exact: exact, failed: failed, silent: silent, units: h.sim.Usage(), requests: h.sim.Requests()}
}

// TestNewLostUnderEveryCollation: the event merge reads each change feed
// with its own cursor, so under any consistent collation every event comes
// exactly once, and tokens resume exactly; under an inconsistent one the
// stream may stop with the order error, never having repeated an event.
// (Across feeds the merge orders text by bytes: the upstream's collation is
// only ever witnessed within one feed.)
func TestNewLostUnderEveryCollation(t *testing.T) {
	for _, knob := range collationKnobs {
		t.Run(knob.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{pageRows: 13, sim: knob.set, noCache: true})
			for _, order := range []string{"url_from", "anchor:desc", "domain_rating_source:desc", "change_time"} {
				q := eventQuery{target: "sized-400.example", since: "2025-06-01", order: order, pageSize: 6}
				want := h.eventTruth(t, q.target, q.since, "", "", paging.ChangesBoth, nil)
				slices.Sort(want)
				msgs, tokens, err := h.streamEvents(q, "")
				var got []string
				for _, m := range msgs {
					got = append(got, m...)
				}
				sorted := slices.Sorted(slices.Values(got))
				if len(slices.Compact(slices.Clone(sorted))) != len(sorted) {
					t.Fatalf("order_by %s: an event came twice", order)
				}
				if err != nil {
					if knob.consistent {
						t.Fatalf("order_by %s: %v", order, err)
					}
					orderFailure(t, err)
					continue
				}
				if !slices.Equal(sorted, want) {
					t.Fatalf("order_by %s: %d events, want %d", order, len(sorted), len(want))
				}
				if k := len(msgs) / 2; k < len(tokens) && tokens[k] != "" {
					rest, _, err := h.streamEvents(q, tokens[k])
					if err != nil {
						t.Fatalf("order_by %s: resumed: %v", order, err)
					}
					var restIDs, wantRest []string
					for _, m := range rest {
						restIDs = append(restIDs, m...)
					}
					for _, m := range msgs[k+1:] {
						wantRest = append(wantRest, m...)
					}
					if !slices.Equal(restIDs, wantRest) {
						t.Fatalf("order_by %s: resuming after message %d: %d events, want %d", order, k, len(restIDs), len(wantRest))
					}
				}
			}
		})
	}
}

// TestOrderFailureIsLoud: a page refused by the order check is counted in
// linkgate.paging.order_violations and logged with the page and the key,
// and List answers FAILED_PRECONDITION with the token of its own start.
func TestOrderFailureIsLoud(t *testing.T) {
	reader := metric.NewManualReader()
	var logs bytes.Buffer
	h := newHarness(t, harnessOptions{pageRows: 11, noCache: true,
		meter: metric.NewMeterProvider(metric.WithReader(reader)),
		log:   slog.New(slog.NewTextHandler(&logs, nil)),
		sim: func(c *ahrefssim.Config) {
			c.Collation, c.WhereCollation = ahrefssim.Locale, ahrefssim.Bytes
		}})
	q := query{data: paging.RefDomains, p: paging.Params{Target: "sized-400.example", OrderBy: "ip_source"}, pageSize: 11}.withIdentity()
	var err error
	for range 200 {
		var s seen
		if s, err = h.list(context.Background(), q); err != nil || s.token == "" {
			break
		}
		q.token = s.token
	}
	if err == nil {
		t.Fatal("List paged to the end under an upstream that sorts by locale and compares bytes")
	}
	if tok := orderFailure(t, err); tok != q.token {
		t.Errorf("the error's token is not the token of the refused page's start")
	}
	if line := logs.String(); !strings.Contains(line, "upstream order inconsistent") || !strings.Contains(line, "key=") || !strings.Contains(line, "page=") {
		t.Errorf("no log line names the page and the key: %q", line)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "linkgate.paging.order_violations" {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += dp.Value
				}
			}
		}
	}
	if n != 1 {
		t.Errorf("linkgate.paging.order_violations = %d, want 1", n)
	}
}

// TestDefaultOrdersNeedNoCheck: the default orders start with a time, so
// their pages start at new values of it and compare no text. Under an
// upstream that sorts text one way and compares it another, every dataset's
// default stream is exact, with the boundary checks on, and makes as many
// upstream requests as with them off: no page needed one.
func TestDefaultOrdersNeedNoCheck(t *testing.T) {
	datasets := []struct {
		data   *paging.Dataset
		target string
	}{
		{paging.Backlinks, "sized-1500.example"},
		{paging.RefDomains, "sized-3000.example"},
		{paging.BrokenBacklinks, "sized-10000.example"},
	}
	for _, knob := range collationKnobs {
		if knob.consistent {
			continue
		}
		t.Run(knob.name, func(t *testing.T) {
			checked := newHarness(t, harnessOptions{pageRows: 40, sim: knob.set, noCache: true})
			trusted := newHarness(t, harnessOptions{pageRows: 40, sim: knob.set, noCache: true, trustCollation: true})
			for _, ds := range datasets {
				q := query{data: ds.data, p: paging.Params{Target: ds.target}, pageSize: 25}.withIdentity()
				want := checked.want(t, q)
				var requests [2]int64
				for i, h := range []*harness{checked, trusted} {
					before := h.sim.Requests()
					pages, err := h.stream(context.Background(), q)
					if got := flatten(pages); err != nil || !slices.Equal(got, want) {
						t.Fatalf("%s: %d rows (error %v), want exactly %d; first difference at %d", ds.data.Label(), len(got), err, len(want), firstDiff(got, want))
					}
					requests[i] = h.sim.Requests() - before
				}
				t.Logf("%s: %d rows in %d requests, checks on or off", ds.data.Label(), len(want), requests[0])
				if requests[0] != requests[1] || requests[0] < 10 {
					t.Errorf("%s: %d requests with the checks on, %d off (want equal, and at least 10 pages)", ds.data.Label(), requests[0], requests[1])
				}
			}
			q := eventQuery{target: "sized-2500.example", since: "2014-01-01", pageSize: 25}
			want := checked.eventTruth(t, q.target, q.since, "", "", paging.ChangesBoth, nil)
			slices.Sort(want)
			var requests [2]int64
			for i, h := range []*harness{checked, trusted} {
				before := h.sim.Requests()
				msgs, _, err := h.streamEvents(q, "")
				if err != nil {
					t.Fatalf("new/lost: %v", err)
				}
				var got []string
				for _, m := range msgs {
					got = append(got, m...)
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Fatalf("new/lost: %d events, want %d", len(got), len(want))
				}
				requests[i] = h.sim.Requests() - before
			}
			if requests[0] != requests[1] {
				t.Errorf("new/lost: %d requests with the checks on, %d off", requests[0], requests[1])
			}
		})
	}
}
