package service

import (
	"testing"
	"time"
)

// TestJitter: retry hints grow by at most 10%, never shrink, and differ
// between callers refused together.
func TestJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := jitter(10 * time.Second)
		if d < 10*time.Second || d > 11*time.Second {
			t.Fatalf("jitter(10s) = %s, want within [10s, 11s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct hints in 200", len(seen))
	}
	if jitter(0) != 0 {
		t.Fatal("jitter(0) must stay 0")
	}
}
