package main

import (
	"os"
	"testing"

	"github.com/linkgate/linkgate/internal/redistest"
)

// TestMain fails the package's tests if any goroutine outlives them. With
// LINKGATE_TEST_MAIN=1 the test binary is linkgate itself, so that tests
// can run the real process and signal it (TestSIGTERMExitsZero).
func TestMain(m *testing.M) {
	if os.Getenv("LINKGATE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	redistest.Main(m)
}
