// Package poll waits in tests for a condition that other goroutines make
// true, without sleeping a fixed time.
package poll

import (
	"testing"
	"time"
)

// Until checks cond every interval until it holds, and fails t when it
// still does not after within, saying what was awaited.
func Until(t testing.TB, within, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(interval)
	}
}
