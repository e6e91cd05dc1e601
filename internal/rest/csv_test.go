package rest

import (
	"encoding/csv"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

func TestCSVQuoting(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", csvContentType)
	w := &csvWriter{ResponseWriter: rec, key: "backlinks", columns: []string{"anchor", "languages", "alt", "domain_rating_source", "is_dofollow"}}
	msg := &v1.ListBacklinksResponse{Backlinks: []*v1.Backlink{{Anchor: proto.String("a, \"quoted\"\nline"), Languages: []string{"en", "de"},
		DomainRatingSource: proto.Float64(12.5), IsDofollow: proto.Bool(true)}}, NextPageToken: "tok"}
	if err := writeCSVRows(t.Context(), w, msg); err != nil {
		t.Fatal(err)
	}
	w.finish()
	got, err := csv.NewReader(strings.NewReader(rec.Body.String())).ReadAll()
	if err != nil {
		t.Fatalf("%q: %v", rec.Body.String(), err)
	}
	want := [][]string{{"anchor", "languages", "alt", "domain_rating_source", "is_dofollow"}, {"a, \"quoted\"\nline", `["en","de"]`, "", "12.5", "true"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if !strings.Contains(rec.Body.String(), "\r\n") || rec.Header().Get("Linkgate-Next-Page-Token") != "tok" {
		t.Errorf("want CRLF line ends and the token header: %q %v", rec.Body.String(), rec.Header())
	}
}

// TestCSVCellsAsJSONSpellsThem: each cell is the text the row's JSON has
// for the field (64-bit integers, floats in their shortest form or with an
// exponent, timestamps in RFC 3339 UTC, lists as JSON arrays, the change
// of a new/lost row by name), and an unset field is empty.
func TestCSVCellsAsJSONSpellsThem(t *testing.T) {
	seen := time.Date(2025, 8, 10, 12, 34, 56, 120_000_000, time.FixedZone("", 2*3600))
	row := &v1.NewLostBacklink{Change: v1.Change_CHANGE_LOST, ChangeTime: timestamppb.New(seen),
		Backlink: &v1.Backlink{UrlFrom: proto.String("https://a.example/<p>&q"), Traffic: proto.Int64(9007199254740993),
			DomainRatingSource: proto.Float64(1e-7), RedirectKind: []int64{301, 302}, Languages: []string{"<en>"},
			FirstSeenLink: timestamppb.New(time.Unix(1700000000, 0)), IsDofollow: proto.Bool(false)}}
	cols := []string{"change", "change_time", "url_from", "traffic", "domain_rating_source", "redirect_kind", "languages",
		"first_seen_link", "is_dofollow", "anchor"}
	want := []string{"lost", "2025-08-10T10:34:56.120Z", "https://a.example/<p>&q", "9007199254740993", "1e-7", `["301","302"]`,
		`["\u003cen\u003e"]`, "2023-11-14T22:13:20Z", "false", ""}
	for i, c := range cols {
		if got := rowCell(row.ProtoReflect(), c); got != want[i] {
			t.Errorf("%s: %q, want %q", c, got, want[i])
		}
	}
}

// BenchmarkCSVWriter: turning one 1,000-row stream message of six fields
// into CSV, as the gateway hands it over.
func BenchmarkCSVWriter(b *testing.B) {
	msg := &v1.StreamBacklinksResponse{NextPageToken: "tok"}
	for range 1000 {
		msg.Backlinks = append(msg.Backlinks, &v1.Backlink{UrlFrom: proto.String("https://abcdef-news.example/000123/how-to-seo"),
			UrlTo: proto.String("https://example.com/blog/post"), Anchor: proto.String(`read, "more"`), DomainRatingSource: proto.Float64(42.5),
			FirstSeenLink: timestamppb.New(time.Date(2025, 8, 10, 12, 34, 56, 0, time.UTC)), Languages: []string{"en", "de"}})
	}
	cols := []string{"url_from", "url_to", "anchor", "domain_rating_source", "first_seen_link", "languages"}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		w := &csvWriter{ResponseWriter: rec, key: "backlinks", columns: cols, stream: true}
		if err := writeCSVRows(b.Context(), w, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/row")
}
