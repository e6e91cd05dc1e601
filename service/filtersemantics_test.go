package service

import (
	"context"
	"strings"
	"testing"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// TestFilterFormsAgreeOnNull: the report found alt != "zzz" dropped the
// rows without alt (130 rows) while NOT alt = "zzz" and alt != "*zzz*" kept
// them (2,500). Every negated form must now mean the same.
func TestFilterFormsAgreeOnNull(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	count := func(f string) int {
		q := query{data: paging.Backlinks, p: paging.Params{Target: "sized-2500.example", Filter: f}, pageSize: 1000}.withIdentity()
		return len(h.listAll(t, q))
	}
	all := count("")
	nulls := count("alt = null")
	if nulls == 0 || nulls == all {
		t.Fatalf("%d of %d rows have no alt: the test needs some of each", nulls, all)
	}
	for _, f := range []string{`alt != "zzz"`, `NOT alt = "zzz"`, `alt != "*zzz*"`, `alt !~ "zzz"`, `NOT alt = "zz*"`, `-alt:"zzz"`} {
		if got := count(f); got != all {
			t.Errorf("%s: %d rows, want all %d (nulls are not equal to \"zzz\")", f, got, all)
		}
	}
	for _, f := range []string{`alt = "zzz"`, `alt = "*zzz*"`, `alt =~ "zzz"`, `alt > "zzz"`} {
		if got := count(f); got != 0 {
			t.Errorf("%s: %d rows, want none", f, got)
		}
	}
}

// TestDateMeansTheWholeDay: first_seen_link = 2025-08-10 returned no rows
// although links were first seen that day.
func TestDateMeansTheWholeDay(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rows, err := h.sim.All(&upstream.Query{Endpoint: upstream.AllBacklinks, Target: "sized-20000.example", Select: []string{"first_seen_link"}})
	if err != nil {
		t.Fatal(err)
	}
	perDay := map[string]int{}
	before := 0
	for _, r := range rows {
		day := r["first_seen_link"].(string)[:10]
		perDay[day]++
		if day < "2025-08-10" {
			before++
		}
	}
	if perDay["2025-08-10"] == 0 {
		t.Fatal("no link was first seen on 2025-08-10 in the simulator: pick another day")
	}
	count := func(f string) int {
		r, err := h.backlinks.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{Target: "sized-20000.example",
			Filter: f, Select: []string{"url_from"}})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			m, err := r.Recv()
			if err != nil {
				if !strings.Contains(err.Error(), "EOF") {
					t.Fatalf("%s: %v", f, err)
				}
				return n
			}
			n += len(m.GetBacklinks())
		}
	}
	for f, want := range map[string]int{
		"first_seen_link = 2025-08-10":           perDay["2025-08-10"],
		`first_seen_link = "2025-08-10"`:         perDay["2025-08-10"],
		"first_seen_link < 2025-08-10":           before,
		"first_seen_link >= 2025-08-10":          len(rows) - before,
		"first_seen_link <= 2025-08-10":          before + perDay["2025-08-10"],
		"first_seen_link > 2025-08-10":           len(rows) - before - perDay["2025-08-10"],
		"first_seen_link != 2025-08-10":          len(rows) - perDay["2025-08-10"],
		"first_seen_link = 2025-08-10T00:00:00Z": 0,
	} {
		if got := count(f); got != want {
			t.Errorf("%s: %d rows, want %d", f, got, want)
		}
	}
}
