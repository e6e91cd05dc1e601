package main

import (
	"strings"
	"testing"
)

// TestTenantWeights: a tenant's weight is its share of the key's rate; an
// absent weight is 1 (not listed), a weight out of (0, 1000] is refused.
func TestTenantWeights(t *testing.T) {
	ok, err := parseTenants([]byte(`{"tenants": [
  {"name": "export", "role": "reader", "weight": 0.5, "keys": [{"sha256": "` + sum(keyA) + `"}]},
  {"name": "ui", "role": "reader", "weight": 4, "keys": [{"sha256": "` + sum(keyB) + `"}]},
  {"name": "ops", "role": "admin", "keys": [{"sha256": "` + sum(keyAdmin) + `"}]}
]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ok.weights) != 2 || ok.weights["export"] != 0.5 || ok.weights["ui"] != 4 {
		t.Fatalf("weights %v", ok.weights)
	}
	for _, w := range []string{"0", "-1", "1001"} {
		_, err := parseTenants([]byte(`{"tenants": [{"name": "x", "role": "reader", "weight": ` + w + `, "keys": [{"sha256": "` + sum(keyA) + `"}]}]}`))
		if err == nil || !strings.Contains(err.Error(), "weight") {
			t.Errorf("weight %s: %v, want an error naming the weight", w, err)
		}
	}
}
