package upstream

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Mode is the scope of a target.
type Mode string

// The modes of the API; the zero value means the API's default, subdomains.
const (
	ModeExact      Mode = "exact"
	ModePrefix     Mode = "prefix"
	ModeDomain     Mode = "domain"
	ModeSubdomains Mode = "subdomains"
)

// Protocol restricts a target to a scheme; the zero value means both.
type Protocol string

// The protocols of the API.
const (
	ProtocolBoth  Protocol = "both"
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTPS Protocol = "https"
)

// Aggregation groups similar links; the zero value means similar_links.
type Aggregation string

// The aggregations of the API.
const (
	AggregationSimilarLinks Aggregation = "similar_links"
	AggregationOnePerDomain Aggregation = "1_per_domain"
	AggregationAll          Aggregation = "all"
)

// History values other than since:DATE.
const (
	HistoryLive    = "live"
	HistoryAllTime = "all_time"
	historySince   = "since:"
)

// Order is one key of order_by.
type Order struct {
	Field string
	Desc  bool
}

// Query is one request to a list endpoint.
type Query struct {
	Endpoint    Endpoint
	Target      string
	Mode        Mode
	Protocol    Protocol
	Select      []string
	Where       Expr // nil for none
	OrderBy     []Order
	Limit       int // 0 means the API's default of 1000
	Aggregation Aggregation
	History     string // "", live, all_time or since:YYYY-MM-DD
}

// Validate checks the query against the endpoint's catalog, naming the
// parameter and field of the first problem.
func (q *Query) Validate() error {
	s, err := SchemaOf(q.Endpoint)
	if err != nil {
		return &InvalidError{Param: "endpoint", Problem: err.Error()}
	}
	if strings.TrimSpace(q.Target) == "" {
		return invalid("target", "", "is required")
	}
	switch q.Mode {
	case "", ModeExact, ModePrefix, ModeDomain, ModeSubdomains:
	default:
		return invalid("mode", "", "must be exact, prefix, domain or subdomains, not %q", q.Mode)
	}
	switch q.Protocol {
	case "", ProtocolBoth, ProtocolHTTP, ProtocolHTTPS:
	default:
		return invalid("protocol", "", "must be both, http or https, not %q", q.Protocol)
	}
	if len(q.Select) == 0 {
		return invalid("select", "", "is required: name at least one field")
	}
	seen := map[string]bool{}
	for _, name := range q.Select {
		f, ok := s.Field(name)
		switch {
		case !ok:
			return invalid("select", name, "unknown field of %s", q.Endpoint)
		case !f.Select:
			return invalid("select", name, "cannot be selected (it is accepted in where only)")
		case seen[name]:
			return invalid("select", name, "is selected twice")
		}
		seen[name] = true
	}
	if err := s.CheckWhere(q.Where); err != nil {
		return err
	}
	for _, o := range q.OrderBy {
		f, ok := s.Field(o.Field)
		switch {
		case !ok:
			return invalid("order_by", o.Field, "unknown field of %s", q.Endpoint)
		case !f.Order:
			return invalid("order_by", o.Field, "cannot be used in order_by")
		}
	}
	if q.Limit < 0 {
		return invalid("limit", "", "must not be negative")
	}
	if q.Aggregation != "" {
		if !s.HasAggregation {
			return invalid("aggregation", "", "%s has no aggregation", q.Endpoint)
		}
		switch q.Aggregation {
		case AggregationSimilarLinks, AggregationOnePerDomain:
		case AggregationAll:
			if q.mentions("link_group_count") {
				return invalid("aggregation", "link_group_count", "cannot be used with aggregation all")
			}
		default:
			return invalid("aggregation", "", "must be similar_links, 1_per_domain or all, not %q", q.Aggregation)
		}
	}
	if q.History != "" {
		if !s.HasHistory {
			return invalid("history", "", "%s has no history", q.Endpoint)
		}
		if _, err := ParseHistory(q.History); err != nil {
			return &InvalidError{Param: "history", Problem: err.Error()}
		}
	}
	return nil
}

func (q *Query) mentions(field string) bool {
	for _, c := range q.Charges() {
		if c.Field == field {
			return true
		}
	}
	return false
}

// ParseHistory checks a history value and returns the date of since:DATE
// (zero for live and all_time).
func ParseHistory(h string) (time.Time, error) {
	switch {
	case h == HistoryLive || h == HistoryAllTime:
		return time.Time{}, nil
	case strings.HasPrefix(h, historySince):
		d, err := time.Parse(time.DateOnly, strings.TrimPrefix(h, historySince))
		if err != nil {
			return time.Time{}, fmt.Errorf("since needs a date YYYY-MM-DD, got %q", strings.TrimPrefix(h, historySince))
		}
		return d, nil
	}
	return time.Time{}, fmt.Errorf("must be live, all_time or since:YYYY-MM-DD, not %q", h)
}

// HistorySince is the history value for links lost since a date.
func HistorySince(d time.Time) string { return historySince + d.UTC().Format(time.DateOnly) }

// FormatOrder renders order_by in the API's syntax, a,b:desc.
func FormatOrder(order []Order) string {
	parts := make([]string, len(order))
	for i, o := range order {
		dir := ":asc"
		if o.Desc {
			dir = ":desc"
		}
		parts[i] = o.Field + dir
	}
	return strings.Join(parts, ",")
}

// ParseOrder reads order_by in the API's syntax, `a,b:desc`, or in
// AIP-132's, `a, b desc`; the two may be mixed. A key without a direction
// is ascending.
func ParseOrder(s string) ([]Order, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var order []Order
	for _, part := range strings.Split(s, ",") {
		name, dir, hasDir := strings.Cut(strings.TrimSpace(part), ":")
		if !hasDir {
			words := strings.Fields(part)
			if len(words) > 2 {
				return nil, invalid("order_by", "", "%q is not a key: write field, field:desc or field desc", strings.TrimSpace(part))
			}
			if len(words) == 2 {
				name, dir, hasDir = words[0], words[1], true
			}
		}
		o := Order{Field: strings.TrimSpace(name)}
		if o.Field == "" {
			return nil, invalid("order_by", "", "empty key in %q", s)
		}
		if strings.ContainsFunc(o.Field, unicode.IsSpace) {
			return nil, invalid("order_by", "", "%q is not a key: write field, field:desc or field desc", strings.TrimSpace(part))
		}
		switch strings.ToLower(strings.TrimSpace(dir)) {
		case "asc":
		case "desc":
			o.Desc = true
		default:
			if hasDir {
				return nil, invalid("order_by", o.Field, "direction must be asc or desc, not %q", dir)
			}
		}
		order = append(order, o)
	}
	return order, nil
}

// Values encodes the query as the endpoint's URL parameters.
func (q *Query) Values() (url.Values, error) {
	v := url.Values{}
	v.Set("target", q.Target)
	v.Set("select", strings.Join(q.Select, ","))
	v.Set("output", "json")
	if q.Mode != "" {
		v.Set("mode", string(q.Mode))
	}
	if q.Protocol != "" {
		v.Set("protocol", string(q.Protocol))
	}
	if q.Where != nil {
		w, err := MarshalWhere(q.Where)
		if err != nil {
			return nil, err
		}
		v.Set("where", string(w))
	}
	if len(q.OrderBy) > 0 {
		v.Set("order_by", FormatOrder(q.OrderBy))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Aggregation != "" {
		v.Set("aggregation", string(q.Aggregation))
	}
	if q.History != "" {
		v.Set("history", q.History)
	}
	return v, nil
}

// ParseQuery reads a list request from its URL parameters and validates it,
// as the API does before it charges anything: a parameter the endpoint does
// not define is refused, and where values in the forms the API accepts
// beyond the field's type are read as that type (Schema.loosen).
func ParseQuery(ep Endpoint, v url.Values) (*Query, error) {
	s, err := SchemaOf(ep)
	if err != nil {
		return nil, &InvalidError{Param: "endpoint", Problem: err.Error()}
	}
	for name := range v {
		if !s.hasParam(name) {
			return nil, invalid(name, "", "unknown parameter of %s", ep)
		}
	}
	q := &Query{
		Endpoint:    ep,
		Target:      v.Get("target"),
		Mode:        Mode(v.Get("mode")),
		Protocol:    Protocol(v.Get("protocol")),
		Aggregation: Aggregation(v.Get("aggregation")),
		History:     v.Get("history"),
	}
	if !v.Has("select") {
		return nil, invalid("select", "", "is required")
	}
	for _, name := range strings.Split(v.Get("select"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			q.Select = append(q.Select, name)
		}
	}
	if w := v.Get("where"); w != "" {
		expr, err := ParseWhere([]byte(w))
		if err != nil {
			return nil, &InvalidError{Param: "where", Problem: err.Error()}
		}
		q.Where = s.loosen(expr)
	}
	order, err := ParseOrder(v.Get("order_by"))
	if err != nil {
		return nil, err
	}
	q.OrderBy = order
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, invalid("limit", "", "must be a non-negative integer, not %q", l)
		}
		q.Limit = n
	}
	if o := v.Get("output"); o != "" && o != "json" {
		return nil, invalid("output", "", "only json is supported, not %q", o)
	}
	if t := v.Get("timeout"); t != "" {
		if _, err := strconv.Atoi(t); err != nil {
			return nil, invalid("timeout", "", "must be an integer number of seconds, not %q", t)
		}
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	return q, nil
}
