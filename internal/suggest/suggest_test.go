package suggest

import (
	"strings"
	"testing"
)

func TestNearest(t *testing.T) {
	names := []string{"filter", "page_size", "order_by", "select"}
	for _, tc := range []struct {
		s      string
		within int
		want   string
	}{
		{"filtre", 3, "filter"},
		{"page_sise", 3, "page_size"},
		{"selekt", 3, "select"},
		{"limit", 3, ""},
		{"filtre", 2, ""}, // two edits away, and fewer than two asked
		{strings.Repeat("filter", 20), 200, ""},
	} {
		if got := Nearest(tc.s, names, tc.within); got != tc.want {
			t.Errorf("Nearest(%q, %d) = %q, want %q", tc.s, tc.within, got, tc.want)
		}
	}
	// The first of equally close names wins.
	if got := Nearest("ab", []string{"xb", "ax"}, 3); got != "xb" {
		t.Errorf("tie: %q", got)
	}
}
