package upstream

import (
	"fmt"
	"sort"
)

// Endpoint names a Site Explorer list endpoint of the v3 API.
type Endpoint string

// The list endpoints linkgate reads.
const (
	AllBacklinks    Endpoint = "all-backlinks"
	RefDomains      Endpoint = "refdomains"
	BrokenBacklinks Endpoint = "broken-backlinks"
)

// Paths of the endpoints that are not lists.
const (
	BacklinksStatsPath  = "/v3/site-explorer/backlinks-stats"
	LimitsAndUsagePath  = "/v3/subscription-info/limits-and-usage"
	siteExplorerPathPfx = "/v3/site-explorer/"
)

// Path is the URL path of the endpoint below the API's base URL.
func (e Endpoint) Path() string { return siteExplorerPathPfx + string(e) }

// Kind is the value type of a field.
type Kind int

// The kinds of field values the catalog knows.
const (
	KindString Kind = iota + 1
	KindInt
	KindFloat
	KindBool
	KindTime // RFC 3339 date-time
	KindDate // YYYY-MM-DD
	KindStringList
	KindIntList
)

var kindNames = map[Kind]string{
	KindString: "string", KindInt: "integer", KindFloat: "number", KindBool: "boolean",
	KindTime: "date-time", KindDate: "date", KindStringList: "list of strings", KindIntList: "list of integers",
}

func (k Kind) String() string { return kindNames[k] }

// IsList reports whether values of the kind are arrays.
func (k Kind) IsList() bool { return k == KindStringList || k == KindIntList }

// Elem is the kind of one element of a list kind, or k itself.
func (k Kind) Elem() Kind {
	switch k {
	case KindStringList:
		return KindString
	case KindIntList:
		return KindInt
	}
	return k
}

// Field describes one column of an endpoint: its type, its unit cost per
// row, and which parameters accept it.
type Field struct {
	Name     string
	Kind     Kind
	Nullable bool
	Cost     int  // units per returned row when the field appears anywhere in the query
	Select   bool // accepted by select (and therefore present in rows)
	Where    bool // accepted by where
	Order    bool // accepted by order_by
	Enum     []string
	Doc      string
	// PerDomain: the value describes the link's referring domain, so it is
	// the same for all links of a domain.
	PerDomain bool
}

// Schema is the catalog of one endpoint.
type Schema struct {
	Endpoint       Endpoint
	ResponseKey    string // the top-level JSON key holding the rows
	HasAggregation bool
	HasHistory     bool

	fields []Field
	byName map[string]*Field
}

var schemas = map[Endpoint]*Schema{
	AllBacklinks:    newSchema(AllBacklinks, "backlinks", true, true, allBacklinksFields),
	RefDomains:      newSchema(RefDomains, "refdomains", false, true, refDomainsFields),
	BrokenBacklinks: newSchema(BrokenBacklinks, "backlinks", true, false, brokenBacklinksFields),
}

func newSchema(ep Endpoint, key string, agg, hist bool, fields []Field) *Schema {
	s := &Schema{Endpoint: ep, ResponseKey: key, HasAggregation: agg, HasHistory: hist, fields: fields, byName: map[string]*Field{}}
	for i := range fields {
		fields[i].PerDomain = ep != RefDomains && perDomain[fields[i].Name]
		s.byName[fields[i].Name] = &fields[i]
	}
	return s
}

// SchemaOf returns the catalog of a list endpoint.
func SchemaOf(ep Endpoint) (*Schema, error) {
	s, ok := schemas[ep]
	if !ok {
		return nil, fmt.Errorf("unknown endpoint %q", ep)
	}
	return s, nil
}

// MustSchema is SchemaOf for endpoints known at compile time.
func MustSchema(ep Endpoint) *Schema {
	s, err := SchemaOf(ep)
	if err != nil {
		panic(err)
	}
	return s
}

// Endpoints lists the list endpoints in a stable order.
func Endpoints() []Endpoint {
	eps := make([]Endpoint, 0, len(schemas))
	for ep := range schemas {
		eps = append(eps, ep)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i] < eps[j] })
	return eps
}

// listParams are the query parameters every list endpoint defines.
var listParams = map[string]bool{
	"select": true, "target": true, "mode": true, "protocol": true, "where": true,
	"order_by": true, "limit": true, "timeout": true, "output": true,
}

// hasParam reports whether the endpoint defines a query parameter.
func (s *Schema) hasParam(name string) bool {
	switch name {
	case "aggregation":
		return s.HasAggregation
	case "history":
		return s.HasHistory
	}
	return listParams[name]
}

// Field looks a field up by its Ahrefs name.
func (s *Schema) Field(name string) (*Field, bool) {
	f, ok := s.byName[name]
	return f, ok
}

// Fields returns every field of the endpoint in catalog order. The slice is
// shared and must not be modified.
func (s *Schema) Fields() []Field { return s.fields }

// Selectable returns the names of the fields select accepts.
func (s *Schema) Selectable() []string {
	var names []string
	for _, f := range s.fields {
		if f.Select {
			names = append(names, f.Name)
		}
	}
	return names
}
