package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// truthEvent is one change of a link computed from the simulator's whole
// all-backlinks answer, independently of the pager and of the merge.
type truthEvent struct {
	id     string // url_from → url_to change
	change string
	at     time.Time
	row    map[string]any
}

// eventTruth lists the changes of target's links in [since, until) from
// one all_time reading of every link, filtered by keep and sorted by the
// order (field names with :desc, change and change_time allowed), then
// url_from, url_to, change.
func (h *harness) eventTruth(t *testing.T, target, since, until, order string, changes paging.Changes, keep func(truthEvent) bool) []string {
	t.Helper()
	sel := []string{"url_from", "url_to", "first_seen_link", "last_seen", "is_lost", "domain_rating_source", "is_dofollow", "anchor"}
	rows, err := h.sim.All(&upstream.Query{Endpoint: upstream.AllBacklinks, Target: target, Select: sel, History: upstream.HistoryAllTime})
	if err != nil {
		t.Fatal(err)
	}
	from, _ := time.Parse(time.DateOnly, since)
	to := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	if until != "" {
		to, _ = time.Parse(time.DateOnly, until)
	}
	in := func(s any) (time.Time, bool) {
		str, ok := s.(string)
		if !ok {
			return time.Time{}, false
		}
		tm, err := time.Parse(time.RFC3339, str)
		return tm, err == nil && !tm.Before(from) && tm.Before(to)
	}
	var evs []truthEvent
	for _, r := range rows {
		id := fmt.Sprint(r["url_from"]) + " → " + fmt.Sprint(r["url_to"])
		if at, ok := in(r["first_seen_link"]); ok && changes != paging.ChangesLost {
			evs = append(evs, truthEvent{id: id + " new", change: "new", at: at, row: r})
		}
		if at, ok := in(r["last_seen"]); ok && r["is_lost"] == true && changes != paging.ChangesNew {
			evs = append(evs, truthEvent{id: id + " lost", change: "lost", at: at, row: r})
		}
	}
	if keep != nil {
		evs = slices.DeleteFunc(evs, func(e truthEvent) bool { return !keep(e) })
	}
	if order == "" {
		order = paging.NewLost.DefaultOrder()
	}
	keys := strings.Split(order, ",")
	keys = append(keys, "url_from", "url_to", "change")
	value := func(e truthEvent, name string) string {
		switch name {
		case "change":
			return map[string]string{"new": "1", "lost": "2"}[e.change]
		case "change_time":
			return e.at.Format(time.RFC3339)
		case "domain_rating_source":
			return fmt.Sprintf("%08.2f", e.row[name])
		}
		return fmt.Sprint(e.row[name])
	}
	slices.SortStableFunc(evs, func(a, b truthEvent) int {
		for _, k := range keys {
			name, desc := strings.CutSuffix(k, ":desc")
			c := cmp.Compare(value(a, name), value(b, name))
			if desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.id
	}
	return ids
}

func eventID(r *v1.NewLostBacklink) string {
	ch := map[v1.Change]string{v1.Change_CHANGE_NEW: "new", v1.Change_CHANGE_LOST: "lost"}[r.GetChange()]
	return backlinkID(r.GetBacklink()) + " " + ch
}

type eventQuery struct {
	target, since, until, order, filter string
	changes                             v1.ChangeFilter
	pageSize                            int32
	maxRows, maxUnits                   int64
}

func (h *harness) listEvents(t *testing.T, q eventQuery) (ids []string, units int64) {
	t.Helper()
	token := ""
	for range 10000 {
		r, err := h.backlinks.ListNewLostBacklinks(context.Background(), &v1.ListNewLostBacklinksRequest{Target: q.target,
			Since: q.since, Until: q.until, OrderBy: q.order, Filter: q.filter, Changes: q.changes, PageSize: q.pageSize, PageToken: token,
			Select: []string{"url_from", "url_to"}})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, e := range r.GetNewLostBacklinks() {
			ids = append(ids, eventID(e))
		}
		units += r.GetCost().GetUnitsCharged()
		if token = r.GetNextPageToken(); token == "" {
			return ids, units
		}
	}
	t.Fatal("List never ended")
	return nil, 0
}

func (h *harness) streamEvents(q eventQuery, token string) (msgs [][]string, tokens []string, err error) {
	st, err := h.backlinks.StreamNewLostBacklinks(context.Background(), &v1.StreamNewLostBacklinksRequest{Target: q.target,
		Since: q.since, Until: q.until, OrderBy: q.order, Filter: q.filter, Changes: q.changes, PageSize: q.pageSize, PageToken: token,
		MaxRows: q.maxRows, MaxUnits: q.maxUnits, Select: []string{"url_from", "url_to"}})
	if err != nil {
		return nil, nil, err
	}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return msgs, tokens, nil
		}
		if err != nil {
			return msgs, tokens, err
		}
		var ids []string
		for _, e := range r.GetNewLostBacklinks() {
			ids = append(ids, eventID(e))
		}
		msgs, tokens = append(msgs, ids), append(tokens, r.GetNextPageToken())
	}
}

// TestNewLostEventsPageExactly is the paging property of the event feed:
// for random windows, orders (change_time among them), filters on the
// event fields and page sizes, List pages followed by token, streams and
// streams resumed from any token are exactly the changes computed from
// the simulator's data, each once.
func TestNewLostEventsPageExactly(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 83})
	rng := rand.New(rand.NewPCG(10, 20))
	orders := []string{"", "change_time:desc", "change_time", "change,change_time:desc", "change:desc", "domain_rating_source:desc,change_time",
		"anchor,change_time:desc", "is_dofollow:desc"}
	windows := [][2]string{{"2025-06-01", ""}, {"2025-06-01", "2025-07-01"}, {"2024-01-01", "2025-03-15"}, {"2025-11-20", ""}, {"2014-01-01", ""}}
	sept := time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC)
	filters := []struct {
		src  string
		keep func(truthEvent) bool
	}{
		{"", nil},
		{`change = "new"`, func(e truthEvent) bool { return e.change == "new" }},
		{`change != "new" OR is_dofollow`, func(e truthEvent) bool { return e.change == "lost" || e.row["is_dofollow"] == true }},
		{"change_time >= 2025-09-01", func(e truthEvent) bool { return !e.at.Before(sept) }},
		{"domain_rating_source >= 30 AND NOT change = \"lost\"", func(e truthEvent) bool {
			return e.change == "new" && e.row["domain_rating_source"].(float64) >= 30
		}},
	}
	changes := []v1.ChangeFilter{v1.ChangeFilter_CHANGE_FILTER_UNSPECIFIED, v1.ChangeFilter_CHANGE_FILTER_BOTH,
		v1.ChangeFilter_CHANGE_FILTER_NEW, v1.ChangeFilter_CHANGE_FILTER_LOST}
	nonEmpty := 0
	t.Cleanup(func() {
		if nonEmpty < 12 {
			t.Errorf("only %d of 24 cases had events: the property was hardly tested", nonEmpty)
		}
	})
	for i := range 24 {
		w := windows[rng.IntN(len(windows))]
		f := filters[rng.IntN(len(filters))]
		q := eventQuery{target: []string{"sized-1500.example", "sized-40.example", "sized-3000.example"}[rng.IntN(3)],
			since: w[0], until: w[1], order: orders[rng.IntN(len(orders))], filter: f.src,
			changes: changes[rng.IntN(len(changes))], pageSize: []int32{1, 9, 100}[rng.IntN(3)]}
		if i == 0 { // the example: the newest changes first over both kinds
			q = eventQuery{target: "sized-1500.example", since: "2025-06-01", order: "change_time:desc", pageSize: 50}
			f = filters[0]
		}
		t.Run(fmt.Sprintf("%s/%s-%s/order=%q/filter=%q/changes=%s/size=%d", q.target, q.since, q.until, q.order, q.filter, q.changes, q.pageSize), func(t *testing.T) {
			want := h.eventTruth(t, q.target, q.since, q.until, q.order, changeFilters[q.changes], f.keep)
			t.Logf("%d events", len(want))
			if len(want) > 0 {
				nonEmpty++
			}
			if q.pageSize > 1 || len(want) < 200 {
				got, _ := h.listEvents(t, q)
				if !slices.Equal(got, want) {
					t.Fatalf("List: %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
				}
			}
			msgs, tokens, err := h.streamEvents(q, "")
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			var got []string
			for _, m := range msgs {
				got = append(got, m...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Stream: %d events, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
			if tokens[len(tokens)-1] != "" {
				t.Error("the last message has a token")
			}
			k := rng.IntN(len(msgs))
			if tokens[k] != "" {
				rest, _, err := h.streamEvents(q, tokens[k])
				if err != nil {
					t.Fatalf("resumed Stream: %v", err)
				}
				var gotRest, wantRest []string
				for _, m := range rest {
					gotRest = append(gotRest, m...)
				}
				for _, m := range msgs[k+1:] {
					wantRest = append(wantRest, m...)
				}
				if !slices.Equal(gotRest, wantRest) {
					t.Fatalf("resuming after message %d: %d events, want %d", k, len(gotRest), len(wantRest))
				}
			}
		})
	}
}

// TestNewLostCountsBothChanges reproduces the report that a link gained
// and lost in the window was one row: BOTH must be NEW plus LOST.
func TestNewLostCountsBothChanges(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	q := eventQuery{target: "sized-2500.example", since: "2025-06-01", pageSize: 1000}
	count := func(c v1.ChangeFilter) int {
		q := q
		q.changes = c
		ids, _ := h.listEvents(t, q)
		return len(ids)
	}
	n, l, both := count(v1.ChangeFilter_CHANGE_FILTER_NEW), count(v1.ChangeFilter_CHANGE_FILTER_LOST), count(v1.ChangeFilter_CHANGE_FILTER_BOTH)
	if n == 0 || l == 0 || both != n+l {
		t.Fatalf("new %d + lost %d = %d, both gave %d", n, l, n+l, both)
	}
	june, _ := h.listEvents(t, eventQuery{target: "sized-2500.example", since: "2025-06-01", until: "2025-07-01", pageSize: 1000})
	if len(june) == 0 || len(june) >= both {
		t.Fatalf("June has %d events of %d since June: the window's end is not applied", len(june), both)
	}
}

func TestNewLostRefusesBadWindows(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for _, tc := range []struct{ since, until, filter, order, field string }{
		{since: "2025-06-01", until: "2025-06-01", field: "until"},
		{since: "2025-06-01", until: "June", field: "until"},
		{since: "", field: "since"},
		{since: "2025-06-01", filter: `change = "gone"`, field: "filter"},
		{since: "2025-06-01", filter: `change : "new"`, field: "filter"},
		{since: "2025-06-01", order: "type:desc", field: "order_by"},
	} {
		_, err := h.backlinks.ListNewLostBacklinks(context.Background(), &v1.ListNewLostBacklinksRequest{Target: "sized-100.example",
			Since: tc.since, Until: tc.until, Filter: tc.filter, OrderBy: tc.order})
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want INVALID_ARGUMENT about %s", tc, err, tc.field)
		}
	}
	if used, _ := h.used(t); used != 0 {
		t.Errorf("refused requests spent %d units", used)
	}
}

// TestNewLostStreamStopsAndResumes: a stream of events stopped by max_rows
// or max_units ends with a token from which the rest follows exactly, and
// max_units is never exceeded.
func TestNewLostStreamStopsAndResumes(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 200})
	h.sim.SetCacheTTL(-1)
	q := eventQuery{target: "sized-3000.example", since: "2025-01-01", order: "change_time:desc", pageSize: 70}
	want := h.eventTruth(t, q.target, q.since, "", q.order, paging.ChangesBoth, nil)
	if len(want) < 500 {
		t.Fatalf("%d events: too few", len(want))
	}
	for _, stop := range []struct {
		rows, units int64
	}{{rows: 333}, {units: 2000}} {
		var got []string
		token := ""
		for round := 0; ; round++ {
			if round > 100 {
				t.Fatal("the stream never ended")
			}
			st, err := h.backlinks.StreamNewLostBacklinks(context.Background(), &v1.StreamNewLostBacklinksRequest{Target: q.target,
				Since: q.since, OrderBy: q.order, PageSize: q.pageSize, PageToken: token, MaxRows: stop.rows, MaxUnits: stop.units,
				Select: []string{"url_from", "url_to"}})
			if err != nil {
				t.Fatal(err)
			}
			var units, n int64
			last := ""
			for {
				m, err := st.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range m.GetNewLostBacklinks() {
					got = append(got, eventID(e))
					n++
				}
				units += m.GetCost().GetUnitsCharged()
				last = m.GetNextPageToken()
			}
			if stop.rows > 0 && n > stop.rows || stop.units > 0 && units > stop.units {
				t.Fatalf("round %d: %d rows and %d units, limits %+v", round, n, units, stop)
			}
			if token = last; token == "" {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%+v: %d events over the resumed streams, want %d; first difference at %d", stop, len(got), len(want), firstDiff(got, want))
		}
	}
}

// TestNewLostOnePerDomain: under ONE_PER_DOMAIN each kind of change keeps
// one link per referring domain, exactly once across pages.
func TestNewLostOnePerDomain(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	var got []string
	token := ""
	for {
		r, err := h.backlinks.ListNewLostBacklinks(context.Background(), &v1.ListNewLostBacklinksRequest{Target: "sized-3000.example",
			Since: "2025-01-01", Aggregation: v1.Aggregation_AGGREGATION_ONE_PER_DOMAIN, OrderBy: "name_source", PageSize: 7,
			PageToken: token, Select: []string{"name_source"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.GetNewLostBacklinks() {
			got = append(got, e.GetBacklink().GetNameSource()+" "+e.GetChange().String())
		}
		if token = r.GetNextPageToken(); token == "" {
			break
		}
	}
	seen := map[string]bool{}
	for _, g := range got {
		if seen[g] {
			t.Fatalf("%s twice", g)
		}
		seen[g] = true
	}
	if len(got) < 50 {
		t.Fatalf("%d events", len(got))
	}
	_, err := h.backlinks.ListNewLostBacklinks(context.Background(), &v1.ListNewLostBacklinksRequest{Target: "sized-3000.example",
		Since: "2025-01-01", Aggregation: v1.Aggregation_AGGREGATION_ONE_PER_DOMAIN, OrderBy: "change_time:desc"})
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "name_source") {
		t.Fatalf("ONE_PER_DOMAIN by change_time: %v", err)
	}
}
