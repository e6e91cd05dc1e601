package service

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// field reads a field of a page's record by name, as the simulator's rows
// are read.
func field(pl *paging.Plan, r upstream.Record, name string) any {
	i := slices.Index(pl.Fetched(), name)
	if i < 0 {
		return nil
	}
	return r[i].Any()
}

// TestRowsOfFillsSelectedFields: every kind reaches its message field,
// fields not selected or null stay absent, and timestamps are distinct per
// row although allocated together.
func TestRowsOfFillsSelectedFields(t *testing.T) {
	pl, err := paging.Compile(paging.Backlinks, paging.Params{Target: "example.com",
		Select: []string{"url_from,domain_rating_source,http_code,is_dofollow,first_seen,languages,redirect_kind,last_seen"}}, DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	at := func(name string) int { return slices.Index(pl.Fetched(), name) }
	t1, t2 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	row := func(url string, first time.Time) upstream.Record {
		r := make(upstream.Record, len(pl.Fetched()))
		r[at("url_from")] = upstream.StringValue(url)
		r[at("domain_rating_source")] = upstream.FloatValue(71.5)
		r[at("http_code")] = upstream.IntValue(200)
		r[at("is_dofollow")] = upstream.BoolValue(false)
		r[at("first_seen")] = upstream.TimeValue(first)
		r[at("last_seen")] = upstream.NullValue()
		r[at("languages")] = upstream.StringsValue([]string{"en", ""})
		r[at("redirect_kind")] = upstream.IntsValue([]int64{301, -1})
		return r
	}
	msgs, err := rowsOf[v1.Backlink](pl, []upstream.Record{row("https://a/", t1), row("https://b/", t2)})
	if err != nil {
		t.Fatal(err)
	}
	f := 71.5
	code, url, url2, no := int64(200), "https://a/", "https://b/", false
	want := []*v1.Backlink{
		{UrlFrom: &url, DomainRatingSource: &f, HttpCode: &code, IsDofollow: &no, FirstSeen: timestamppb.New(t1),
			Languages: []string{"en", ""}, RedirectKind: []int64{301, -1}},
		{UrlFrom: &url2, DomainRatingSource: &f, HttpCode: &code, IsDofollow: &no, FirstSeen: timestamppb.New(t2),
			Languages: []string{"en", ""}, RedirectKind: []int64{301, -1}},
	}
	for i := range want {
		if !proto.Equal(msgs[i], want[i]) {
			t.Errorf("row %d = %v, want %v", i, msgs[i], want[i])
		}
	}
}

// TestRowWritersCoverEveryField: every field a caller may select has a
// writer in its dataset's row message, so no selection ends in an internal
// error.
func TestRowWritersCoverEveryField(t *testing.T) {
	for _, tc := range []struct {
		data  *paging.Dataset
		write func(*paging.Plan) error
	}{
		{paging.Backlinks, func(pl *paging.Plan) error { _, err := rowsOf[v1.Backlink](pl, nil); return err }},
		{paging.RefDomains, func(pl *paging.Plan) error { _, err := rowsOf[v1.RefDomain](pl, nil); return err }},
		{paging.BrokenBacklinks, func(pl *paging.Plan) error { _, err := rowsOf[v1.BrokenBacklink](pl, nil); return err }},
		{paging.NewLost, func(pl *paging.Plan) error {
			for _, f := range pl.Layouts() { // each feed's records have a layout of their own
				if _, err := rowsOf[v1.Backlink](f, nil); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		t.Run(tc.data.Label(), func(t *testing.T) {
			s := upstream.MustSchema(tc.data.Endpoint())
			p := paging.Params{Target: "example.com", Select: s.Selectable()}
			if tc.data == paging.NewLost {
				p.Since = "2025-01-01"
			}
			pl, err := paging.Compile(tc.data, p, DefaultTenant)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.write(pl); err != nil {
				t.Fatalf("selecting every field: %v", err)
			}
		})
	}
}

// TestConcurrentStreamsRecycleMessages: streams running at once share the
// recycled row messages, and each still sends exactly its own rows (the
// race detector watches the recycling).
func TestConcurrentStreamsRecycleMessages(t *testing.T) {
	h := newHarness(t, harnessOptions{pageRows: 300})
	qs := []query{
		{data: paging.Backlinks, p: paging.Params{Target: "sized-2000.example", Select: []string{"anchor", "first_seen", "domain_rating_source"}}, pageSize: 250},
		{data: paging.Backlinks, p: paging.Params{Target: "sized-1700.example", OrderBy: "domain_rating_source:desc"}, pageSize: 300},
		{data: paging.RefDomains, p: paging.Params{Target: "sized-2500.example"}, pageSize: 200},
		{data: paging.Backlinks, p: paging.Params{Target: "sized-1900.example", Select: []string{"languages", "redirect_kind", "http_code"}}, pageSize: 1000},
	}
	errs := make(chan error, len(qs))
	for _, q := range qs {
		q = q.withIdentity()
		want := h.want(t, q)
		go func() {
			msgs, err := h.stream(context.Background(), q)
			var got []string
			for _, m := range msgs {
				got = append(got, m.ids...)
			}
			switch {
			case err != nil:
				errs <- err
			case !slices.Equal(got, want):
				errs <- fmt.Errorf("%s %s: %d rows, want %d; first difference at %d", q.data.Label(), q.p.Target, len(got), len(want), firstDiff(got, want))
			default:
				errs <- nil
			}
		}()
	}
	for range qs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
