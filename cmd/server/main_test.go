package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/linkgate/linkgate/internal/redistest"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, redistest.IgnoreLeak(), goleak.Cleanup(func(code int) {
		redistest.Stop()
		os.Exit(code)
	}))
}
