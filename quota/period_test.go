package quota

import (
	"testing"
	"time"
)

func TestPeriodAt(t *testing.T) {
	d := func(y int, m time.Month, day, h int) time.Time { return time.Date(y, m, day, h, 0, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name       string
		at         time.Time
		day        int
		start, end time.Time
	}{
		{"first of month", d(2025, 3, 1, 0), 1, d(2025, 3, 1, 0), d(2025, 4, 1, 0)},
		{"before reset day", d(2025, 3, 14, 23), 15, d(2025, 2, 15, 0), d(2025, 3, 15, 0)},
		{"on reset day", d(2025, 3, 15, 0), 15, d(2025, 3, 15, 0), d(2025, 4, 15, 0)},
		{"across the year", d(2025, 1, 3, 5), 28, d(2024, 12, 28, 0), d(2025, 1, 28, 0)},
		{"february, day 28", d(2024, 2, 29, 12), 28, d(2024, 2, 28, 0), d(2024, 3, 28, 0)},
		{"non-UTC input", time.Date(2025, 3, 15, 1, 0, 0, 0, time.FixedZone("CET", 3600)), 15, d(2025, 3, 15, 0), d(2025, 4, 15, 0)},
		{"just before midnight UTC in another zone", time.Date(2025, 3, 15, 0, 30, 0, 0, time.FixedZone("X", 3600)), 15, d(2025, 2, 15, 0), d(2025, 3, 15, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PeriodAt(tc.at, tc.day)
			if !p.Start.Equal(tc.start) || !p.End.Equal(tc.end) {
				t.Fatalf("PeriodAt(%v, %d) = [%v, %v)", tc.at, tc.day, p.Start, p.End)
			}
			q, err := ParsePeriodKey(p.Key)
			if err != nil || q != p {
				t.Fatalf("key %q round-trips to %+v %v", p.Key, q, err)
			}
			if prev := p.Previous(); !prev.End.Equal(p.Start) {
				t.Fatalf("previous %+v does not end at %v", prev, p.Start)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := Config{Budget: "default", PoolLimit: 10, ResetDay: 1, Lease: time.Minute}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"hash tag in budget", func(c *Config) { c.Budget = "a}b" }},
		{"zero pool", func(c *Config) { c.PoolLimit = 0 }},
		{"reset day 29", func(c *Config) { c.ResetDay = 29 }},
		{"no lease", func(c *Config) { c.Lease = 0 }},
		{"negative tenant", func(c *Config) { c.Tenants = map[string]int64{"a": -1} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			if _, err := New(NewMemoryStore(), cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := New(NewMemoryStore(), good); err != nil {
		t.Fatal(err)
	}
}
