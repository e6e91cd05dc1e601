package main

import (
	"strings"
	"testing"
	"time"
)

// TestSchedulerSettings: the scheduler's variables are read, and bad values
// are refused at start with the setting's name.
func TestSchedulerSettings(t *testing.T) {
	env := map[string]string{
		"LINKGATE_UPSTREAM_RPM":       "58",
		"LINKGATE_UPSTREAM_PAGE_ROWS": "250",
		"LINKGATE_PAGE_CACHE_TTL":     "30s",
		"LINKGATE_PAGE_CACHE_BYTES":   "0",
		"LINKGATE_PAGE_CACHE_SHARED":  "true",
		"LINKGATE_HEALTH_FAILURES":    "3",
	}
	c, err := loadConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.UpstreamRPM != 58 || c.UpstreamPageRows != 250 || c.PageCacheTTL != 30*time.Second ||
		c.PageCacheBytes != 0 || !c.PageCacheShared || c.HealthFailures != 3 {
		t.Fatalf("config %+v", c)
	}
	for k, v := range map[string]string{
		"LINKGATE_UPSTREAM_PAGE_ROWS": "0",
		"LINKGATE_PAGE_CACHE_BYTES":   "-1",
		"LINKGATE_PAGE_CACHE_SHARED":  "maybe",
		"LINKGATE_HEALTH_FAILURES":    "0",
	} {
		_, err := loadConfig(nil, func(key string) string {
			if key == k {
				return v
			}
			return ""
		})
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "LINKGATE_"), "_", "-"))
		if err == nil || !(strings.Contains(err.Error(), k) || strings.Contains(err.Error(), name)) {
			t.Errorf("%s=%s: %v, want an error naming it", k, v, err)
		}
	}
}
