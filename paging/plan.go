package paging

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/linkgate/linkgate/paging/filter"
	"github.com/linkgate/linkgate/upstream"
)

// Dataset is one of the four datasets linkgate serves.
type Dataset struct {
	label    string // the ledger label and the name in errors and telemetry
	endpoint upstream.Endpoint
	// tieBreakers are appended to every order so that it is total: rows
	// with equal caller keys still come in one deterministic order.
	tieBreakers []string
	// defaultSelect is a cheap, useful selection for callers who name none.
	defaultSelect []string
	// defaultOrder is the order of callers who name none: newest first, by
	// a time that is nearly unique per row, so that pages start at runs of
	// it and compare no text (Plan.aligned), and need no boundary check.
	defaultOrder string
	// merged: the dataset is a feed of events merged from upstream
	// readings, one per kind of change (new/lost).
	merged bool
	// rest is the dataset's REST collection, /v1/<rest>; rows names the
	// field of its responses and stream messages that holds the rows.
	rest, rows string
}

// The datasets.
var (
	Backlinks = &Dataset{
		label: "backlinks", endpoint: upstream.AllBacklinks,
		rest: "backlinks", rows: "backlinks",
		tieBreakers:   []string{"url_from", "url_to"},
		defaultSelect: []string{"url_from", "url_to", "anchor", "domain_rating_source", "first_seen_link", "last_seen"},
		defaultOrder:  "first_seen_link:desc",
	}
	RefDomains = &Dataset{
		label: "refdomains", endpoint: upstream.RefDomains,
		rest: "refdomains", rows: "ref_domains",
		tieBreakers:   []string{"domain"},
		defaultSelect: []string{"domain", "domain_rating", "links_to_target", "first_seen", "last_seen"},
		defaultOrder:  "first_seen:desc",
	}
	BrokenBacklinks = &Dataset{
		label: "broken_backlinks", endpoint: upstream.BrokenBacklinks,
		rest: "broken-backlinks", rows: "broken_backlinks",
		tieBreakers:   []string{"url_from", "url_to"},
		defaultSelect: []string{"url_from", "url_to", "anchor", "http_code_target", "last_visited_target", "first_seen_link"},
		defaultOrder:  "first_seen_link:desc",
	}
	NewLost = &Dataset{
		label: "new_lost_backlinks", endpoint: upstream.AllBacklinks, merged: true,
		rest: "new-lost-backlinks", rows: "new_lost_backlinks",
		// A link is unique by (url_from, url_to), and has at most one
		// event of each change.
		tieBreakers:   []string{"url_from", "url_to", upstream.ChangeFieldName},
		defaultSelect: []string{"url_from", "url_to", "anchor", "first_seen_link", "last_seen"},
		defaultOrder:  upstream.ChangeTimeFieldName + ":desc",
	}
)

// Datasets are the four datasets.
var Datasets = []*Dataset{Backlinks, RefDomains, BrokenBacklinks, NewLost}

// Label names the dataset in the ledger, errors and telemetry.
func (d *Dataset) Label() string { return d.label }

// RESTPath is the dataset's REST collection: its List route, and with
// ":stream" its Stream route.
func (d *Dataset) RESTPath() string { return "/v1/" + d.rest }

// RowsField names the field of the dataset's responses and stream messages
// that holds the rows.
func (d *Dataset) RowsField() string { return d.rows }

// DefaultSelect is the selection used when a request names no field: what
// a CSV header shows when select is empty.
func (d *Dataset) DefaultSelect() []string { return slices.Clone(d.defaultSelect) }

// DefaultOrder is the order used when a request names none, before the
// tie-breakers.
func (d *Dataset) DefaultOrder() string { return d.defaultOrder }

// Events reports whether the dataset's rows are events (new/lost), each
// with its change and change_time.
func (d *Dataset) Events() bool { return d.merged }

// Endpoint is the upstream endpoint the dataset reads.
func (d *Dataset) Endpoint() upstream.Endpoint { return d.endpoint }

// Changes picks the changes a new/lost request reports.
type Changes int

// The changes of the new/lost dataset.
const (
	ChangesBoth Changes = iota
	ChangesNew
	ChangesLost
)

// Params are the parameters every list request shares, whatever its message.
type Params struct {
	Target      string
	Mode        upstream.Mode
	Protocol    upstream.Protocol
	Select      []string
	Filter      string
	OrderBy     string
	Aggregation upstream.Aggregation
	History     string
	// Since, Until and Changes are the new/lost dataset's window.
	Since, Until string
	Changes      Changes
}

// Plan is a request compiled for the upstream: the query without its
// continuation and limit, the total order the pager seeks on, and what the
// caller asked to see.
type Plan struct {
	data     *Dataset
	query    upstream.Query
	keys     []sortKey
	selected []string // the fields returned to the caller
	filter   upstream.Expr
	// feeds and events are the new/lost dataset's: one sub-plan per kind
	// of change, merged in the event order.
	feeds  []*feed
	events []eventKey
	// tieBreakerFields are the fields the order gained to become total.
	tieBreakerFields []string
	fingerprint      string
	perRowUnits      int                // see price
	seek             []upstream.SeekKey // keys, for the continuation of pages
	// prep is query, checked and encoded once for every page.
	prep *upstream.Prepared
	// back is query in the reverse order, for the boundary check of a
	// continuation whose where compares text (see beforeCheck); nil when
	// the keys hold no text or an aggregation makes the check unsound.
	back *upstream.Prepared
}

// InvalidArgument is a caller error: the request field and what is wrong.
type InvalidArgument struct {
	Field       string
	Description string
}

func (e *InvalidArgument) Error() string { return e.Field + ": " + e.Description }

// BadField is the caller error on field, described by format and args.
func BadField(field, format string, args ...any) *InvalidArgument {
	return &InvalidArgument{Field: field, Description: fmt.Sprintf(format, args...)}
}

// Compile checks a request and turns it into a plan without calling the
// upstream, so an invalid request costs nothing. It is the one semantic
// check of a request. A plan reads one upstream feed, or, for new/lost,
// one per kind of change that the request (changes, filter) can match,
// merged in the event order.
func Compile(d *Dataset, p Params, tenant string) (*Plan, error) {
	links := upstream.MustSchema(d.endpoint)
	// The fields the filter and the order name: a backlink's, or for
	// new/lost an event's (a backlink's, change and change_time).
	s := links
	if d.merged {
		s = upstream.NewLostSchema()
	}
	if strings.TrimSpace(p.Target) == "" {
		return nil, BadField("target", "is required: a domain or URL")
	}
	names := p.Select
	if d.merged {
		names = nil // change and change_time are in every row; naming them selects nothing
		for _, item := range p.Select {
			for _, name := range strings.Split(item, ",") {
				if n := strings.TrimSpace(name); n != upstream.ChangeFieldName && n != upstream.ChangeTimeFieldName {
					names = append(names, n)
				}
			}
		}
	}
	sel, err := selection(links, names, d.defaultSelect)
	if err != nil {
		return nil, err
	}
	pl := &Plan{data: d, selected: sel}
	if pl.filter, err = filter.Compile(p.Filter, s); err != nil {
		return nil, err // a *filter.Error, with the position in the string
	}
	orderBy := p.OrderBy
	if strings.TrimSpace(orderBy) == "" && p.Aggregation != upstream.AggregationOnePerDomain {
		// Under 1_per_domain the order starts with the referring domain
		// (tieBreakers), which no default may come before.
		orderBy = d.defaultOrder
	}
	order, err := upstream.ParseOrder(orderBy)
	if err != nil {
		return nil, UpstreamInvalid(err)
	}
	for i, o := range order {
		f, ok := s.Field(o.Field)
		if !ok {
			return nil, BadField("order_by", "field %q: %s", o.Field, unknownFieldHint(s, o.Field, d.label))
		}
		if !f.Order {
			return nil, BadField("order_by", "field %q: cannot be used to order %s", o.Field, d.label)
		}
		if slices.ContainsFunc(order[:i], func(prev upstream.Order) bool { return prev.Field == o.Field }) {
			return nil, BadField("order_by", "field %q: appears twice", o.Field)
		}
	}
	for _, name := range tieBreakers(d, p.Aggregation) {
		if !slices.ContainsFunc(order, func(o upstream.Order) bool { return o.Field == name }) {
			order = append(order, upstream.Order{Field: name})
			if name != upstream.ChangeFieldName { // not an upstream field: charges nothing
				pl.tieBreakerFields = append(pl.tieBreakerFields, name)
			}
		}
	}
	pl.fingerprint = fingerprint(d, p, sel, tenant)
	if !d.merged {
		if err := pl.read(p, order, pl.filter, p.History); err != nil {
			return nil, err
		}
		return pl, nil
	}
	since, err := time.Parse(time.DateOnly, p.Since)
	if err != nil {
		return nil, BadField("since", "needs a date YYYY-MM-DD, got %q", p.Since)
	}
	var until time.Time
	if p.Until != "" {
		if until, err = time.Parse(time.DateOnly, p.Until); err != nil {
			return nil, BadField("until", "needs a date YYYY-MM-DD, got %q", p.Until)
		}
		if !until.After(since) {
			return nil, BadField("until", "must be after since (%s), got %s: the window is [since, until)", p.Since, p.Until)
		}
	}
	for _, o := range order {
		pl.events = append(pl.events, eventKey{name: o.Field, desc: o.Desc})
	}
	for _, cf := range upstream.ChangeFeeds {
		if (p.Changes == ChangesNew && cf.Change != upstream.ChangeNew) || (p.Changes == ChangesLost && cf.Change != upstream.ChangeLost) {
			continue
		}
		where, matches, err := cf.Bind(pl.filter)
		if err != nil {
			return nil, UpstreamInvalid(err)
		}
		if !matches {
			continue // the filter excludes this kind of change: nothing to read
		}
		// The event order on this feed's fields: change_time is its time
		// field; change is the same on every row of it.
		var feedOrder []upstream.Order
		for _, o := range order {
			if name, ok := cf.Field(o.Field); ok {
				feedOrder = append(feedOrder, upstream.Order{Field: name, Desc: o.Desc})
			}
		}
		fp := &Plan{data: d, selected: sel, fingerprint: pl.fingerprint}
		if err := fp.read(p, feedOrder, andWhere(where, cf.Window(since, until)), cf.History(since), cf.Fields()...); err != nil {
			return nil, err
		}
		pl.feeds = append(pl.feeds, &feed{cf: cf, plan: fp})
	}
	return pl, nil
}

// read sets the upstream query of a plan that reads one feed: the order
// (a field named twice counts once), the where tree, the history, and the
// fields to fetch beyond the selected ones and the sort keys.
func (pl *Plan) read(p Params, order []upstream.Order, where upstream.Expr, history string, extra ...string) error {
	links := upstream.MustSchema(pl.data.endpoint)
	for _, o := range order {
		f, _ := links.Field(o.Field)
		if !slices.ContainsFunc(pl.keys, func(k sortKey) bool { return k.field == f }) {
			pl.keys = append(pl.keys, sortKey{field: f, desc: o.Desc})
		}
	}
	pl.query = upstream.Query{
		Endpoint:    pl.data.endpoint,
		Target:      strings.TrimSpace(p.Target),
		Mode:        p.Mode,
		Protocol:    p.Protocol,
		Select:      fetched(pl, extra...),
		Where:       where,
		Aggregation: p.Aggregation,
		History:     history,
	}
	for i, k := range pl.keys {
		pl.query.OrderBy = append(pl.query.OrderBy, upstream.Order{Field: k.field.Name, Desc: k.desc})
		pl.keys[i].col = slices.Index(pl.query.Select, k.field.Name)
		pl.seek = append(pl.seek, upstream.SeekKey{Field: k.field, Desc: k.desc})
	}
	if err := checkAggregation(pl, p.Aggregation); err != nil {
		return err
	}
	prep, err := upstream.Prepare(pl.query)
	if err != nil {
		return UpstreamInvalid(err)
	}
	// The continuation filters on the sort keys only, which order_by
	// already charges: every page of the plan costs this per row.
	pl.prep, pl.perRowUnits = prep, prep.PerRow()
	if comparesText(pl.keys) && p.Aggregation != upstream.AggregationOnePerDomain {
		q := pl.query
		q.OrderBy = make([]upstream.Order, len(pl.query.OrderBy))
		for i, o := range pl.query.OrderBy {
			q.OrderBy[i] = upstream.Order{Field: o.Field, Desc: !o.Desc}
		}
		if pl.back, err = upstream.Prepare(q); err != nil {
			return UpstreamInvalid(err)
		}
	}
	return nil
}

// selection flattens select (repeated, each possibly comma-separated),
// checks every name and falls back to the dataset's default.
func selection(s *upstream.Schema, raw []string, def []string) ([]string, error) {
	var sel []string
	for _, item := range raw {
		for _, name := range strings.Split(item, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			f, ok := s.Field(name)
			switch {
			case !ok:
				return nil, BadField("select", "field %q: %s", name, unknownFieldHint(s, name, string(s.Endpoint)))
			case !f.Select:
				return nil, BadField("select", "field %q: can be filtered but not selected", name)
			}
			if !slices.Contains(sel, name) {
				sel = append(sel, name)
			}
		}
	}
	if len(sel) == 0 {
		return slices.Clone(def), nil
	}
	return sel, nil
}

// fetched is what the pager selects upstream: the caller's fields plus the
// sort keys, to read the last key of a page. Selecting them is free: a
// field is charged once whether it is selected, filtered or ordered by.
func fetched(pl *Plan, extra ...string) []string {
	names := slices.Clone(pl.selected)
	add := func(name string) {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	for _, k := range pl.keys {
		add(k.field.Name)
	}
	for _, name := range extra {
		add(name)
	}
	return names
}

func andWhere(a, b upstream.Expr) upstream.Expr {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return upstream.And{a, b}
}

// UpstreamInvalid turns the upstream package's validation error into the
// request field it is about.
func UpstreamInvalid(err error) error {
	if ie, ok := err.(*upstream.InvalidError); ok {
		desc := ie.Problem
		if ie.Field != "" {
			desc = fmt.Sprintf("field %q: %s", ie.Field, ie.Problem)
		}
		return &InvalidArgument{Field: ie.Param, Description: desc}
	}
	return &InvalidArgument{Field: "request", Description: err.Error()}
}

// fingerprint identifies what a page token may continue: the dataset, every
// parameter that changes the rows or their order, and the tenant, so that a
// token cannot be replayed with other parameters or by another tenant.
func fingerprint(d *Dataset, p Params, sel []string, tenant string) string {
	b, _ := json.Marshal([]any{d.label, tenant, strings.TrimSpace(p.Target), p.Mode, p.Protocol, sel,
		p.Filter, p.OrderBy, p.Aggregation, p.History, p.Since, p.Changes, p.Until})
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// pageRequest is the upstream request of the page starting at c with
// limit rows.
func (pl *Plan) pageRequest(c cursor, limit int) (*upstream.PageRequest, error) {
	var after upstream.Expr
	switch {
	case pl.aligned(c):
		after = upstream.Seek(pl.seek[:1], c.Key[:1])
	case c.Key != nil:
		after = upstream.Seek(pl.seek, c.Key)
	}
	return pl.prep.Page(after, limit)
}

// alignable reports whether the plan's pages can start at runs of its first
// key without comparing text: the first key is not text and a later one is.
func (pl *Plan) alignable() bool {
	return len(pl.keys) > 1 && pl.keys[0].field.Kind != upstream.KindString && comparesText(pl.keys)
}

// aligned reports whether a page from c starts at a run of the plan's first
// key (cursor.Run), and so asks for the rows from that value alone: every row
// with a smaller one (in the order) was returned, and every row with it is
// returned again, in the upstream's own order, with no text compared. Such a
// page needs no boundary check: whatever the upstream's collation, it skips
// and repeats nothing, and the checks of its first rows stand.
func (pl *Plan) aligned(c cursor) bool {
	return c.Run && c.Skip == 0 && c.Key != nil && pl.alignable()
}

// beforeRequest asks for the row the upstream holds just before cursor c:
// the rows its where puts before c's key, in the reverse order, one row.
// ok is false when no row can sort before the key.
func (pl *Plan) beforeRequest(c cursor) (q *upstream.PageRequest, ok bool, err error) {
	before, ok := upstream.SeekBefore(pl.seek, c.Key)
	if !ok {
		return nil, false, nil
	}
	q, err = pl.back.Page(before, 1)
	return q, true, err
}

// tieBreakers are the keys that make a dataset's order total. Under
// aggregation 1_per_domain the referring domain comes first, which keeps
// each domain's links together (see checkAggregation).
func tieBreakers(d *Dataset, agg upstream.Aggregation) []string {
	if agg == upstream.AggregationOnePerDomain {
		return append([]string{upstream.DomainKeyField}, d.tieBreakers...)
	}
	return d.tieBreakers
}

// unknownFieldHint says that a field is unknown, naming the v3 field when
// the name is a v2 column.
func unknownFieldHint(s *upstream.Schema, name, label string) string {
	if col, ok := upstream.V3Name(s, name); ok {
		return "unknown field of " + label + ": " + upstream.V2Hint(col)
	}
	return "unknown field of " + label
}

// checkAggregation refuses an order that aggregation 1_per_domain cannot
// serve exactly once. The upstream keeps each domain's first link after
// applying the keyset continuation, so a domain whose links straddle a page
// boundary comes back on the next page unless every domain's links are
// contiguous in the order: the order must start with fields that are the
// same for all links of a domain, the domain itself among them.
func checkAggregation(pl *Plan, agg upstream.Aggregation) error {
	if agg != upstream.AggregationOnePerDomain {
		return nil
	}
	for _, k := range pl.keys {
		if k.field.Name == upstream.DomainKeyField {
			return nil
		}
		if !k.field.PerDomain {
			return BadField("order_by", "aggregation ONE_PER_DOMAIN returns each domain exactly once only when the order starts with fields of the referring domain, %s among them (e.g. %q or %q); %q comes before it and varies within a domain. Orders by: %s",
				upstream.DomainKeyField, upstream.DomainKeyField, "domain_rating_source:desc,"+upstream.DomainKeyField, k.field.Name, strings.Join(upstream.PerDomainFields(pl.query.Endpoint), ", "))
		}
	}
	return nil
}

// DefaultSelect is the selection a dataset uses when a request names no
// field, by the dataset's label (backlinks, refdomains, broken_backlinks,
// new_lost_backlinks): what a CSV header shows when select is empty.
func DefaultSelect(label string) []string {
	for _, d := range Datasets {
		if d.label == label {
			return d.DefaultSelect()
		}
	}
	return nil
}

// Dataset is the dataset the plan reads.
func (pl *Plan) Dataset() *Dataset { return pl.data }

// Selected is the fields returned to the caller.
func (pl *Plan) Selected() []string { return pl.selected }

// Fetched is the fields the plan's upstream query selects, in the order of
// the columns of its records: the selected fields and the sort keys.
func (pl *Plan) Fetched() []string { return pl.query.Select }

// merged reports whether the plan merges feeds (new/lost), even none.
func (pl *Plan) merged() bool { return pl.data.merged }

// Layouts is the plans whose records a run of the plan yields, each laid
// out as its Fetched says: the plan itself, or a merged plan's feeds.
func (pl *Plan) Layouts() []*Plan {
	if !pl.merged() {
		return []*Plan{pl}
	}
	out := make([]*Plan, len(pl.feeds))
	for i, f := range pl.feeds {
		out[i] = f.plan
	}
	return out
}

// Query is the upstream query of a plan that reads one feed, without the
// continuation and limit of its pages.
func (pl *Plan) Query() upstream.Query { return pl.query }
