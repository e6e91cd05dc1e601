package ahrefsspec

import (
	"net/http"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for path, c := range s.columns {
		t.Logf("%s: %d select, %d where, %d order_by", path, len(c.sel), len(c.where), len(c.order))
	}
	if len(s.columns) != 3 {
		t.Errorf("list endpoints with columns: %d, want 3", len(s.columns))
	}
	if c := s.columns["/site-explorer/broken-backlinks"]; c.order["http_code_target"] || !c.sel["http_code_target"] {
		t.Errorf("broken-backlinks: http_code_target is selectable but not an order_by column")
	}
	r, _ := http.NewRequest("GET", "http://x/v3/site-explorer/refdomains?target=a.com&select=domain&output=json", nil)
	r.Header.Set("Authorization", "Bearer k")
	if err := s.Check(r, nil); err != nil {
		t.Errorf("valid request: %v", err)
	}
	r, _ = http.NewRequest("GET", "http://x/v3/site-explorer/refdomains?target=a.com&select=domain&bogus=1", nil)
	r.Header.Set("Authorization", "Bearer k")
	if err := s.Check(r, nil); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown parameter: %v", err)
	}
}
