package paging

import (
	"slices"
)

// Estimate is what a request costs as the engine would run it.
type Estimate struct {
	PerRowUnits    int64
	FirstPageUnits int64 // a List page of PageSize rows
	// UnitsForRows and Pages are reading the rows by stream, in pages of
	// StreamPageRows; ListUnitsForRows and ListPages by List, in pages of
	// PageSize.
	UnitsForRows, Pages         int64
	ListUnitsForRows, ListPages int64
	PageSize, StreamPageRows    int
	Charged                     []ChargedField
}

// ChargedField is a field the upstream charges for, and why the request
// names it.
type ChargedField struct {
	Field   string
	Units   int64
	Reasons []ChargeReason
}

// ChargeReason is why a request names a charged field.
type ChargeReason int

// The reasons a field is charged.
const (
	ChargeSelected ChargeReason = iota + 1
	ChargeFiltered
	ChargeTieBreaker
	ChargeOrdered
)

// Estimate prices reading rows of a plan (pageSize when rows is 0), by
// stream and by List pages of pageSize, without calling the upstream.
func (e *Engine) Estimate(pl *Plan, pageSize int, rows int64) Estimate {
	// Under the key's learned row cap pages keep fewer rows beside the
	// probe row.
	streamRows, listRows := e.pager.pageRows(pl, e.cfg.UpstreamPageRows, 0), e.pager.pageRows(pl, pageSize, 0)
	out := Estimate{PageSize: pageSize, StreamPageRows: streamRows}
	if rows == 0 {
		rows = int64(pageSize)
	}
	feeds := []*Plan{pl}
	if pl.merged() {
		feeds = nil
		for _, f := range pl.feeds {
			feeds = append(feeds, f.plan)
		}
	}
	seen := map[string]int{}
	for _, fp := range feeds {
		perRow := fp.perRowUnits
		out.PerRowUnits = max(out.PerRowUnits, int64(perRow))
		// A List page asks for page_size rows and one more, to tell whether
		// another page follows.
		out.FirstPageUnits += fp.price(listRows + 1)
		// Pages of an order aligned on its first key are not checked.
		checked := !e.cfg.TrustCollation && !fp.alignable()
		u, n := fp.pagedCost(rows, streamRows, checked)
		out.UnitsForRows, out.Pages = out.UnitsForRows+u, out.Pages+n
		u, n = fp.pagedCost(rows, listRows, checked)
		out.ListUnitsForRows, out.ListPages = out.ListUnitsForRows+u, max(out.ListPages, n)
		for _, c := range fp.query.Charges() {
			i, ok := seen[c.Field]
			if !ok {
				i = len(out.Charged)
				seen[c.Field] = i
				out.Charged = append(out.Charged, ChargedField{Field: c.Field, Units: int64(c.Cost)})
			}
			cf := &out.Charged[i]
			for _, in := range c.In {
				var reason ChargeReason
				switch {
				case in == "select" && slices.Contains(pl.selected, c.Field):
					reason = ChargeSelected
				case in == "where":
					reason = ChargeFiltered
				case in == "order_by" && slices.Contains(pl.tieBreakerFields, c.Field):
					reason = ChargeTieBreaker
				case in == "order_by":
					reason = ChargeOrdered
				}
				if reason != 0 && !slices.Contains(cf.Reasons, reason) {
					cf.Reasons = append(cf.Reasons, reason)
				}
			}
		}
	}
	return out
}
