package filter

import (
	"strings"
	"testing"

	"github.com/linkgate/linkgate/upstream"
)

// TestNestedCallIsExplained: a function call where a field must be is
// said as such, with the way to write it, not as an unknown field.
func TestNestedCallIsExplained(t *testing.T) {
	_, err := Compile(`contains(contains(anchor, "a"), "b")`, upstream.MustSchema(upstream.AllBacklinks))
	if err == nil || !strings.Contains(err.Error(), "got the function call contains(…)") || strings.Contains(err.Error(), "unknown field") {
		t.Errorf("%v", err)
	}
}
