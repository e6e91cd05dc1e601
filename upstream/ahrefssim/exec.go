package ahrefssim

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/linkgate/linkgate/upstream"
)

// errNotFound answers a target the index does not know (404).
var errNotFound = errors.New("target not found in the index")

type histKind int

const (
	histAll histKind = iota
	histLive
	histSince
)

type orderKey struct {
	g    getter
	desc bool
}

type selField struct {
	name string
	g    getter
}

// plan is one query bound to its dataset, ready to run.
type plan struct {
	ds         *dataset
	q          *upstream.Query
	ep         upstream.Endpoint
	allowed    []bool // per target page: mode, protocol and (broken) brokenness
	allAllowed bool
	hist       histKind
	since      int64
	agg        upstream.Aggregation
	where      *compiled
	order      []orderKey
	sel        []selField
	genOrder   bool // the order is generation order: rows can be streamed
	revOrder   bool // the order is generation order reversed: rows can be streamed backwards
	highKey    string
	hasHigh    bool
	ord        *ordering
	lowKey     string
	hasLow     bool
	// byFirstSeen: the order is first_seen_link (referring domains:
	// first_seen; firstSeenDesc: descending), then generation order, served
	// from the dataset's index (firstSeenIndex) from firstSeenBound, the
	// where's bound on it, when it has one.
	byFirstSeen, firstSeenDesc, hasFirstSeenBound bool
	firstSeenBound                                int64
}

func newPlan(dss *datasets, q *upstream.Query) (*plan, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	sp := parseTarget(q.Target)
	if strings.HasSuffix(sp.root, ".invalid") || sp.root == "invalid" {
		return nil, errNotFound
	}
	x := &plan{ds: dss.get(sp.root), q: q, ep: q.Endpoint, agg: q.Aggregation, ord: dss.ord.get()}
	if x.agg == "" {
		x.agg = upstream.AggregationSimilarLinks
	}
	switch h := q.History; {
	case q.Endpoint == upstream.BrokenBacklinks, h == "", h == upstream.HistoryAllTime:
	case h == upstream.HistoryLive:
		x.hist = histLive
	default:
		d, err := upstream.ParseHistory(h)
		if err != nil {
			return nil, &upstream.InvalidError{Param: "history", Problem: err.Error()}
		}
		x.hist, x.since = histSince, d.Unix()
	}
	x.allowed = make([]bool, len(x.ds.pages))
	x.allAllowed = true
	for k, p := range x.ds.pages {
		ok := matchMode(sp, q.Mode, p) && (q.Protocol == "" || q.Protocol == upstream.ProtocolBoth || (q.Protocol == upstream.ProtocolHTTPS) == p.https)
		if q.Endpoint == upstream.BrokenBacklinks {
			ok = ok && p.code != 0
		}
		x.allowed[k] = ok
		x.allAllowed = x.allAllowed && ok
	}
	var err error
	if x.where, err = compileWhere(q.Endpoint, q.Where, x.ord); err != nil {
		return nil, err
	}
	for _, name := range q.Select {
		g, _ := getterFor(q.Endpoint, name)
		if g == nil {
			return nil, &upstream.InvalidError{Param: "select", Field: name, Problem: "not supported by the simulator"}
		}
		x.sel = append(x.sel, selField{name: name, g: g})
	}
	for _, o := range q.OrderBy {
		g, _ := getterFor(q.Endpoint, o.Field)
		if g == nil {
			return nil, &upstream.InvalidError{Param: "order_by", Field: o.Field, Problem: "not supported by the simulator"}
		}
		x.order = append(x.order, orderKey{g: g, desc: o.Desc})
	}
	if !x.ord.plain() {
		// Generation order and the binary search are byte order.
		return x, nil
	}
	x.genOrder = isGenOrder(q.Endpoint, q.OrderBy)
	keyField := "url_from"
	if q.Endpoint == upstream.RefDomains {
		keyField = "domain"
	}
	x.lowKey, x.hasLow = lowerBound(q.Where, keyField)
	x.revOrder = isRevGenOrder(q.Endpoint, q.OrderBy)
	x.highKey, x.hasHigh = upperBound(q.Where, keyField)
	timeField, indexed := "first_seen_link", true
	if q.Endpoint == upstream.RefDomains {
		// A domain's first_seen is its earliest link in the view: the
		// index holds it for the whole of the target.
		timeField, indexed = "first_seen", x.allAllowed && x.hist == histAll
	}
	if indexed && len(q.OrderBy) > 1 && q.OrderBy[0].Field == timeField && x.agg != upstream.AggregationOnePerDomain && isGenOrder(q.Endpoint, q.OrderBy[1:]) {
		x.byFirstSeen, x.firstSeenDesc = true, q.OrderBy[0].Desc
		if s, ok := keyBound(q.Where, timeField, x.firstSeenDesc); ok {
			if t, err := upstream.ParseTime(s); err == nil {
				x.firstSeenBound, x.hasFirstSeenBound = t.Unix(), true
			}
		}
	}
	return x, nil
}

// matchMode decides whether a target page is inside the target's scope.
// Modes compare url_to without its scheme: exact is the same host and path
// (a trailing slash ignored), prefix is a string prefix of host+path, domain
// is the same host, subdomains is the host or any subdomain of it.
func matchMode(sp spec, mode upstream.Mode, p tpage) bool {
	hp := urlHostPath(p.url)
	switch mode {
	case upstream.ModeExact:
		return hp == sp.host+sp.path || hp == sp.host+sp.path+"/"
	case upstream.ModePrefix:
		return strings.HasPrefix(hp, sp.host+sp.path)
	case upstream.ModeDomain:
		return p.host == sp.host
	}
	return p.host == sp.host || strings.HasSuffix(p.host, "."+sp.host)
}

// isGenOrder reports whether order_by sorts rows exactly as they are
// generated: the keys that make rows unique, ascending, in front.
func isGenOrder(ep upstream.Endpoint, order []upstream.Order) bool {
	unique := []string{"url_from", "url_to"}
	if ep == upstream.RefDomains {
		unique = []string{"domain"}
	}
	for k, o := range order {
		if k == len(unique) {
			return true // the rest cannot reorder unique keys
		}
		if o.Desc || o.Field != unique[k] {
			return false
		}
	}
	// url_from alone leaves ties that generation order breaks the same way.
	return true
}

// isRevGenOrder reports whether order_by sorts rows exactly as generated,
// reversed: the keys that make rows unique, all of them descending, in
// front.
func isRevGenOrder(ep upstream.Endpoint, order []upstream.Order) bool {
	unique := []string{"url_from", "url_to"}
	if ep == upstream.RefDomains {
		unique = []string{"domain"}
	}
	if len(order) < len(unique) {
		return false
	}
	for k, f := range unique {
		if !order[k].Desc || order[k].Field != f {
			return false
		}
	}
	return true
}

// lowerBound finds a value every matching row's key field is at least,
// and upperBound one it is at most, so a keyset continuation (forwards or
// in reverse) can start by binary search instead of a scan.
func lowerBound(e upstream.Expr, field string) (string, bool) { return keyBound(e, field, false) }

func upperBound(e upstream.Expr, field string) (string, bool) { return keyBound(e, field, true) }

func keyBound(e upstream.Expr, field string, upper bool) (string, bool) {
	// tighter says a is a closer bound than b.
	tighter := func(a, b string) bool { return a > b }
	if upper {
		tighter = func(a, b string) bool { return a < b }
	}
	switch e := e.(type) {
	case upstream.Is:
		if e.Field != field || e.Modifier != "" {
			return "", false
		}
		s, ok := e.Cond.Value.(string)
		switch op := e.Cond.Op; {
		case op == upstream.OpEq,
			upper && (op == upstream.OpLt || op == upstream.OpLte),
			!upper && (op == upstream.OpGt || op == upstream.OpGte || op == upstream.OpPrefix):
			return s, ok
		}
	case upstream.And:
		best, found := "", false
		for _, x := range e {
			if s, ok := keyBound(x, field, upper); ok && (!found || tighter(s, best)) {
				best, found = s, true
			}
		}
		return best, found
	case upstream.Or:
		best := ""
		for k, x := range e {
			s, ok := keyBound(x, field, upper)
			if !ok {
				return "", false
			}
			if k == 0 || tighter(best, s) {
				best = s
			}
		}
		return best, len(e) > 0
	}
	return "", false
}

// linkRow is the row of link l, and whether it is in the view (linkIn) and
// matches the where.
func (x *plan) linkRow(l loc) (row, bool) {
	r := row{ds: x.ds, x: x, l: l, hasLink: true, d: l.d}
	return r, x.linkIn(r.l) && x.where.eval(&r)
}

// linkIn applies history and the target scope to a link.
func (x *plan) linkIn(l loc) bool {
	if !x.allowed[l.tp] {
		return false
	}
	switch x.hist {
	case histLive:
		return !x.ds.lost(l.i)
	case histSince:
		if t, lost := x.ds.lastSeen(l); lost {
			return t >= x.since
		}
	}
	return true
}

// domAgg summarises the links of a referring domain inside the plan's view.
type domAgg struct {
	links, live, lost, new, dofollow int
	firstSeen, lastSeen              int64
}

func (x *plan) domAgg(r *row) *domAgg {
	if r.agg != nil {
		return r.agg
	}
	a := &domAgg{}
	newFrom := int64(0) // all_time: every link is new over the period
	switch x.hist {
	case histLive:
		newFrom = DataDate.Unix() - 30*day
	case histSince:
		newFrom = x.since
	}
	ds := x.ds
	for i := int(ds.domStart[r.d]); i < int(ds.domStart[r.d+1]); i++ {
		l := ds.locateIn(i, r.d)
		if !x.linkIn(l) {
			continue
		}
		a.links++
		fsl := ds.firstSeenLink(l)
		if a.links == 1 || fsl < a.firstSeen {
			a.firstSeen = fsl
		}
		if fsl >= newFrom {
			a.new++
		}
		if t, lost := ds.lastSeen(l); lost {
			a.lost++
			a.lastSeen = max(a.lastSeen, t)
		} else {
			a.live++
		}
		if ds.dofollow(i) {
			a.dofollow++
		}
	}
	r.agg = a
	return a
}

// groupCount is link_group_count: under 1_per_domain, the links of the
// domain the row stands for; under similar_links, a small group size.
func (x *plan) groupCount(r *row) int64 {
	if x.agg == upstream.AggregationOnePerDomain {
		return int64(x.domAgg(&row{ds: r.ds, x: x, d: r.d}).links)
	}
	if x.ds.linkU(r.l.i, 30) < 0.9 {
		return 1
	}
	return 2 + int64(x.ds.linkU(r.l.i, 31)*5)
}

// run returns the rows of the answer in order; limit < 0 means all.
func (x *plan) run(limit int) []row {
	if x.ep == upstream.RefDomains {
		return x.runDomains(limit)
	}
	return x.runLinks(limit)
}

func (x *plan) runLinks(limit int) []row {
	ds := x.ds
	if ds.n == 0 {
		return nil
	}
	if x.revOrder && x.hasHigh && limit >= 0 {
		return x.runLinksBack(limit)
	}
	if x.byFirstSeen && limit >= 0 {
		return x.runByFirstSeen(limit)
	}
	start := 0
	if x.genOrder && x.hasLow {
		start = sort.Search(ds.n, func(i int) bool { l := ds.locate(i); return ds.pageURL(l.d, l.pg) >= x.lowKey })
	}
	var out []row
	lastD := -1
	d := ds.domainOf(start)
	for i := start; i < ds.n; i++ {
		for i >= int(ds.domStart[d+1]) {
			d++
		}
		if x.genOrder && limit >= 0 && len(out) >= limit {
			break
		}
		if x.genOrder && x.agg == upstream.AggregationOnePerDomain && d == lastD {
			continue
		}
		r, ok := x.linkRow(ds.locateIn(i, d))
		if !ok {
			continue
		}
		lastD = d
		out = append(out, r)
	}
	if x.genOrder {
		return out
	}
	return x.sortAggregate(out, limit)
}

// runByFirstSeen is run for an order by first_seen_link (referring
// domains: first_seen) then generation order: it streams the dataset's index
// from the where's bound.
func (x *plan) runByFirstSeen(limit int) []row {
	domains := x.ep == upstream.RefDomains
	t := x.ds.firstSeenIndex(domains, x.firstSeenDesc)
	start := 0
	if x.hasFirstSeenBound {
		start = sort.Search(len(t.at), func(k int) bool {
			if x.firstSeenDesc {
				return t.at[k] <= x.firstSeenBound
			}
			return t.at[k] >= x.firstSeenBound
		})
	}
	var out []row
	for k := start; k < len(t.idx) && len(out) < limit; k++ {
		if domains {
			if r := (row{ds: x.ds, x: x, d: int(t.idx[k])}); x.domainMatches(&r) {
				out = append(out, r)
			}
			continue
		}
		if r, ok := x.linkRow(x.ds.locate(int(t.idx[k]))); ok {
			out = append(out, r)
		}
	}
	return out
}

// runLinksBack is runLinks for an order that is generation order reversed,
// bounded above by where: it streams from the bound backwards.
func (x *plan) runLinksBack(limit int) []row {
	ds := x.ds
	end := sort.Search(ds.n, func(i int) bool { l := ds.locate(i); return ds.pageURL(l.d, l.pg) > x.highKey })
	var out []row
	lastD := -1
	d := ds.domainOf(max(0, end-1))
	for i := end - 1; i >= 0 && len(out) < limit; i-- {
		for i < int(ds.domStart[d]) {
			d--
		}
		if x.agg == upstream.AggregationOnePerDomain && d == lastD {
			continue
		}
		r, ok := x.linkRow(ds.locateIn(i, d))
		if !ok {
			continue
		}
		lastD = d
		out = append(out, r)
	}
	return out
}

func (x *plan) runDomains(limit int) []row {
	ds := x.ds
	if x.revOrder && x.hasHigh && limit >= 0 {
		return x.runDomainsBack(limit)
	}
	if x.byFirstSeen && limit >= 0 {
		return x.runByFirstSeen(limit)
	}
	start := 0
	if x.genOrder && x.hasLow {
		start = sort.Search(ds.m(), func(d int) bool { return ds.domainName(d) >= x.lowKey })
	}
	trivialView := x.allAllowed && x.hist == histAll
	var out []row
	for d := start; d < ds.m(); d++ {
		if x.genOrder && limit >= 0 && len(out) >= limit {
			break
		}
		r := row{ds: ds, x: x, d: d}
		if !trivialView && x.domAgg(&r).links == 0 {
			continue
		}
		if !x.domainMatches(&r) {
			continue
		}
		out = append(out, r)
	}
	if x.genOrder {
		return out
	}
	return x.sortAggregate(out, limit)
}

// runDomainsBack is runDomains for an order that is generation order
// reversed, bounded above by where.
func (x *plan) runDomainsBack(limit int) []row {
	ds := x.ds
	end := sort.Search(ds.m(), func(d int) bool { return ds.domainName(d) > x.highKey })
	trivialView := x.allAllowed && x.hist == histAll
	var out []row
	for d := end - 1; d >= 0 && len(out) < limit; d-- {
		r := row{ds: ds, x: x, d: d}
		if !trivialView && x.domAgg(&r).links == 0 {
			continue
		}
		if !x.domainMatches(&r) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// domainMatches tests a referring domain: a where on link columns holds when
// it holds for any one of the domain's links in view, with the domain's own
// columns alongside.
func (x *plan) domainMatches(r *row) bool {
	if !x.where.linkLevel {
		return x.where.eval(r)
	}
	ds := x.ds
	for i := int(ds.domStart[r.d]); i < int(ds.domStart[r.d+1]); i++ {
		lr := row{ds: ds, x: x, l: ds.locateIn(i, r.d), hasLink: true, d: r.d, agg: r.agg}
		if x.linkIn(lr.l) && x.where.eval(&lr) {
			r.agg = lr.agg
			return true
		}
		r.agg = lr.agg
	}
	return false
}

// sortAggregate sorts by order_by with the generation index as the final
// tie-breaker (always ascending), so every order is total and repeatable,
// then applies 1_per_domain in that order and cuts to the limit.
func (x *plan) sortAggregate(rows []row, limit int) []row {
	keys := make([][]val, len(rows))
	for k := range rows {
		keys[k] = make([]val, len(x.order))
		for o, ok := range x.order {
			keys[k][o] = x.ord.sortKey(ok.g(&rows[k]))
		}
	}
	idx := make([]int, len(rows))
	for k := range idx {
		idx[k] = k
	}
	slices.SortFunc(idx, func(a, b int) int {
		for o, ok := range x.order {
			c := compare(keys[a][o], keys[b][o])
			if ok.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return rowID(rows[a]) - rowID(rows[b])
	})
	out := make([]row, 0, min(len(rows), max(limit, 0)))
	seen := map[int]bool{}
	for _, k := range idx {
		if limit >= 0 && len(out) >= limit {
			break
		}
		if x.ep != upstream.RefDomains && x.agg == upstream.AggregationOnePerDomain {
			if seen[rows[k].d] {
				continue
			}
			seen[rows[k].d] = true
		}
		out = append(out, rows[k])
	}
	return out
}

// rowID is the stable identity of a row: its generation index.
func rowID(r row) int {
	if r.hasLink {
		return r.l.i
	}
	return r.d
}

// stats computes backlinks-stats as of the end of a day.
func (x *plan) stats(date time.Time) (live, allTime, liveDoms, allDoms int) {
	ds := x.ds
	end := date.Unix() + day - 1
	if x.allAllowed && end >= DataDate.Unix() {
		return ds.live, ds.n, ds.liveDoms, ds.m()
	}
	for d := range ds.m() {
		dl, da := 0, 0
		for i := int(ds.domStart[d]); i < int(ds.domStart[d+1]); i++ {
			l := ds.locateIn(i, d)
			if !x.allowed[l.tp] || ds.firstSeenLink(l) > end {
				continue
			}
			da++
			if t, lost := ds.lastSeen(l); !lost || t > end {
				dl++
			}
		}
		live, allTime = live+dl, allTime+da
		if dl > 0 {
			liveDoms++
		}
		if da > 0 {
			allDoms++
		}
	}
	return live, allTime, liveDoms, allDoms
}

// refIPs counts the distinct IP addresses (ip_source) and class C subnets
// (their first three octets) of the referring domains with a live link in
// the target's scope, as batch-analysis reports refips and refips_subnets.
// They are the values the refdomains and all-backlinks rows carry.
func (x *plan) refIPs() (ips, subnets int) {
	ds := x.ds
	seen, nets := map[string]bool{}, map[string]bool{}
	ip := linkGetters["ip_source"]
	for d := range ds.m() {
		live := false
		for i := int(ds.domStart[d]); i < int(ds.domStart[d+1]) && !live; i++ {
			l := ds.locateIn(i, d)
			live = x.allowed[l.tp] && !ds.lost(i)
		}
		if !live {
			continue
		}
		v := ip(&row{ds: ds, x: x, d: d})
		addr, ok := v.toAny().(string)
		if !ok {
			continue
		}
		seen[addr] = true
		nets[addr[:strings.LastIndexByte(addr, '.')]] = true
	}
	return len(seen), len(nets)
}
