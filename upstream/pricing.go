package upstream

// MinUnits is the floor of every request's cost: a request costs at least
// this many units, even when it returns no rows.
const MinUnits = 50

// Charge is one distinct field that adds to a query's per-row cost, with the
// parameters it appears in.
type Charge struct {
	Field string
	Cost  int
	In    []string // "select", "where", "order_by"
}

// Charges lists the distinct fields of select, where and order_by with their
// unit cost, each counted once however often it appears. Fields the catalog
// does not know cost the default 1 unit.
func (q *Query) Charges() []Charge {
	s, _ := SchemaOf(q.Endpoint)
	var charges []Charge
	index := map[string]int{}
	add := func(name, param string) {
		if i, ok := index[name]; ok {
			c := &charges[i]
			if c.In[len(c.In)-1] != param {
				c.In = append(c.In, param)
			}
			return
		}
		cost := 1
		if s != nil {
			if f, ok := s.Field(name); ok {
				cost = f.Cost
			}
		}
		index[name] = len(charges)
		charges = append(charges, Charge{Field: name, Cost: cost, In: []string{param}})
	}
	for _, name := range q.Select {
		add(name, "select")
	}
	for _, name := range whereFields(q.Where) {
		add(name, "where")
	}
	for _, o := range q.OrderBy {
		add(o.Field, "order_by")
	}
	return charges
}

// PerRowCost is the sum of the unit costs of the query's distinct fields.
func (q *Query) PerRowCost() int {
	total := 0
	for _, c := range q.Charges() {
		total += c.Cost
	}
	return total
}

// Units is what a request with the given per-row cost returning rows rows
// costs: max(50, perRow × rows).
func Units(perRow, rows int) int64 {
	return max(MinUnits, int64(perRow)*int64(rows))
}

// Estimate is the cost of the query if it returns rows rows.
func (q *Query) Estimate(rows int) int64 { return Units(q.PerRowCost(), rows) }
