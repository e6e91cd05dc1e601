package upstream

import "testing"

// The worked examples of the limits-and-consumption documentation.
func TestPricingWorkedExamples(t *testing.T) {
	base := Query{
		Endpoint: AllBacklinks,
		Select:   []string{"url_from", "url_to", "anchor", "first_seen_link", "last_seen", "is_lost"},
		Where:    Is{Field: "domain_rating_source", Cond: Cond{Op: OpGte, Value: int64(30)}},
		OrderBy:  []Order{{Field: "domain_rating_source", Desc: true}},
	}
	heavy := base
	heavy.Select = append(append([]string{}, base.Select...), "traffic_domain", "refdomains_source")
	tests := []struct {
		name   string
		q      Query
		rows   int
		perRow int
		units  int64
	}{
		{"seven fields, 1000 rows", base, 1000, 7, 7000},
		{"seven fields, 5 rows hit the floor", base, 5, 7, 50},
		{"zero rows still cost the floor", base, 0, 7, 50},
		{"traffic_domain and refdomains_source", heavy, 1000, 22, 22000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.q.PerRowCost(); got != tt.perRow {
				t.Errorf("PerRowCost = %d, want %d", got, tt.perRow)
			}
			if got := tt.q.Estimate(tt.rows); got != tt.units {
				t.Errorf("Estimate(%d) = %d, want %d", tt.rows, got, tt.units)
			}
		})
	}
}

func TestChargesCountEachFieldOnce(t *testing.T) {
	q := Query{
		Endpoint: AllBacklinks,
		Select:   []string{"url_from", "traffic"},
		Where:    And{Is{Field: "traffic", Cond: Cond{Op: OpGt, Value: int64(10)}}, Is{Field: "traffic", Cond: Cond{Op: OpLt, Value: int64(99)}}},
		OrderBy:  []Order{{Field: "traffic", Desc: true}, {Field: "url_from"}},
	}
	charges := q.Charges()
	if len(charges) != 2 {
		t.Fatalf("charges = %+v, want 2 distinct fields", charges)
	}
	if c := charges[1]; c.Field != "traffic" || c.Cost != 10 || len(c.In) != 3 {
		t.Errorf("traffic charge = %+v, want cost 10 in select, where and order_by", c)
	}
	if got := q.PerRowCost(); got != 11 {
		t.Errorf("PerRowCost = %d, want 11", got)
	}
}
