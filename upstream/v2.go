package upstream

import "fmt"

// The Ahrefs v2 tables linkgate's datasets replace named their columns
// differently. A caller who brings a v2 name gets the v3 one in the error
// rather than "unknown field". Names that are also v3 fields (v2
// first_seen is v3 first_seen_link, but v3 has a first_seen of its own) are
// not errors; the README's table warns about them.

// V2Column is one v2 column and its v3 equivalent ("" when v3 has none).
type V2Column struct {
	V2, V3 string
	Note   string
}

// refpagesV2 are the v2 refpages columns (backlinks, broken_backlinks)
// whose names are not v3 fields.
var refpagesV2 = []V2Column{
	{V2: "ahrefs_rank", V3: "url_rating_source", Note: "v2's \"ahrefs_rank\" was the URL Rating of the referring page"},
	{V2: "domain_rating", V3: "domain_rating_source"},
	{V2: "ahrefs_top", V3: "ahrefs_rank_target"},
	{V2: "ip_from", V3: "ip_source"},
	{V2: "language", V3: "languages", Note: "a list in v3"},
	{V2: "prev_visited", Note: "v3 keeps only last_visited"},
	{V2: "original", V3: "discovered_status", Note: "pagefound is v2's original = true"},
	{V2: "redirect", V3: "redirect_code", Note: "null instead of 0 for links that are not redirects"},
	{V2: "nofollow", V3: "is_nofollow"},
	{V2: "text_pre", V3: "snippet_left"},
	{V2: "text_post", V3: "snippet_right"},
	{V2: "url_from_first_seen", V3: "first_seen", Note: "v3 first_seen is when the referring page was first seen"},
}

var v2Columns = map[Endpoint][]V2Column{
	AllBacklinks: refpagesV2,
	BrokenBacklinks: append(append([]V2Column(nil), refpagesV2...),
		V2Column{V2: "broken_at", V3: "last_visited_target", Note: "when the target was last found broken"},
		V2Column{V2: "error", V3: "http_code_target", Note: "v3 gives the target's HTTP code"},
	),
	RefDomains: {
		{V2: "refdomain", V3: "domain"},
		{V2: "ip", V3: "ip_source"},
		{V2: "backlinks", V3: "links_to_target"},
		{V2: "refpages", Note: "v3 counts links (links_to_target), not pages"},
		{V2: "last_visited", V3: "last_seen", Note: "v3 last_seen is when the domain's last link was lost"},
	},
}

// newLostV2 are the v2 backlinks_new_lost columns for its events.
var newLostV2 = []V2Column{
	{V2: "date", V3: ChangeTimeFieldName},
	{V2: "type", V3: ChangeFieldName},
	{V2: "origin", V3: "discovered_status"},
}

// V2Columns lists the v2 columns of an endpoint's table whose names are not
// v3 fields; events adds those of backlinks_new_lost.
func V2Columns(ep Endpoint, events bool) []V2Column {
	cols := v2Columns[ep]
	if events {
		cols = append(append([]V2Column(nil), cols...), newLostV2...)
	}
	return cols
}

// V3Name finds the v3 field for a v2 column name that is not a v3 field of
// the schema. ok is false for names v2 did not have. An empty v3 with ok
// means v3 has no such field.
func V3Name(s *Schema, name string) (col V2Column, ok bool) {
	if _, isV3 := s.Field(name); isV3 {
		return V2Column{}, false
	}
	_, events := s.Field(ChangeFieldName)
	for _, c := range V2Columns(s.Endpoint, events) {
		if c.V2 == name {
			return c, true
		}
	}
	return V2Column{}, false
}

// v2Values are enum values of v2 that v3 spells differently, per v3 field.
var v2Values = map[string]map[string]string{
	"link_type":     {"href": "text"},
	ChangeFieldName: {"new": "new", "lost": "lost"},
}

// V3Value finds the v3 value of a v2 value of a field, when they differ.
func V3Value(field, value string) (string, bool) {
	v3, ok := v2Values[field][value]
	if !ok || v3 == value {
		return "", false
	}
	return v3, true
}

// PerDomainFields lists the fields of an endpoint whose value is the same
// for every link of a referring domain.
func PerDomainFields(ep Endpoint) []string {
	s := MustSchema(ep)
	var names []string
	for _, f := range s.fields {
		if f.PerDomain && f.Order {
			names = append(names, f.Name)
		}
	}
	return names
}

// DomainKeyField is the field naming the referring domain of a link: the
// domain aggregation 1_per_domain keeps one link of.
const DomainKeyField = "name_source"

// perDomain marks the fields describing a link's referring domain rather
// than the link or its page.
var perDomain = map[string]bool{
	"ahrefs_rank_source": true, "domain_rating_source": true, "ip_source": true,
	"is_root_source": true, "is_spam": true, "linked_domains_source_domain": true,
	"name_source": true, "positions_source_domain": true, "refdomains_source_domain": true,
	"root_name_source": true, "tld_class_source": true, "traffic_domain": true,
}

// V2Hint says what to use instead of a v2 column.
func V2Hint(c V2Column) string {
	msg := fmt.Sprintf("%q is an Ahrefs v2 column; v3 has no equivalent", c.V2)
	if c.V3 != "" {
		msg = fmt.Sprintf("%q is the Ahrefs v2 name of v3 %q", c.V2, c.V3)
	}
	if c.Note != "" {
		msg += " (" + c.Note + ")"
	}
	return msg
}
