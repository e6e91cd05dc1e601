package upstream

import (
	"reflect"
	"strings"
	"testing"
)

func TestWhereRoundTrip(t *testing.T) {
	docs := []string{
		`{"field":"foo","is":["eq",3]}`,
		`{"and":[{"field":"foo","is":["eq",3]},{"field":"bar","is":["lt",10]}]}`,
		// The grammar's own example, modifier included.
		`{"or":[{"field":"foo","modifier":"uppercase","is":["eq","AHREFS"]},{"field":"bar","list_is":{"any":{"and":[["prefix","Ahrefs"],["suffix","seo"]]}}}]}`,
		`{"field":"last_seen","is":"is_null"}`,
		`{"not":{"field":"root_name_source","is":["isubstring","fortraders"]}}`,
		`{"field":"domain_rating_source","is":["gte",19.5]}`,
		`{"field":"languages","list_is":{"all":{"not":["eq","en"]}}}`,
	}
	for _, doc := range docs {
		e, err := ParseWhere([]byte(doc))
		if err != nil {
			t.Fatalf("ParseWhere(%s): %v", doc, err)
		}
		out, err := MarshalWhere(e)
		if err != nil {
			t.Fatalf("MarshalWhere(%s): %v", doc, err)
		}
		if string(out) != doc {
			t.Errorf("round trip:\n got %s\nwant %s", out, doc)
		}
	}
}

func TestParseWhereRejects(t *testing.T) {
	tests := []struct{ doc, want string }{
		{`[]`, "expected an object"},
		{`{"and":[]}`, "non-empty array"},
		{`{"field":"x"}`, `needs "is" or "list_is"`},
		{`{"field":"x","is":["like","a"]}`, `unknown operator "like"`},
		{`{"field":"x","is":"eq"}`, "stand alone"},
		{`{"field":"x","is":["eq",null]}`, "got null"},
		{`{"field":"x","is":["eq",1],"modifier":3}`, `"modifier" must be a non-empty string`},
		{`{"field":"x","list_is":{"any":["eq","a"]},"modifier":"uppercase"}`, `applies to "is"`},
		{`{"field":"x","is":["eq",1],"modify":"uppercase"}`, `unknown key "modify"`},
		{`{"field":"x","list_is":{"some":["eq",1]}}`, "any"},
		{`{"field":"x","is":["eq",1]} {}`, "trailing data"},
		{strings.Repeat(`{"not":`, 100) + `{"field":"x","is":"empty"}` + strings.Repeat("}", 100), "nested deeper"},
	}
	for _, tt := range tests {
		_, err := ParseWhere([]byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseWhere(%.60s) = %v, want an error containing %q", tt.doc, err, tt.want)
		}
	}
}

func TestCheckWhere(t *testing.T) {
	s := MustSchema(AllBacklinks)
	tests := []struct {
		name string
		e    Expr
		want string // "" = valid
	}{
		{"int comparison", Is{Field: "http_code", Cond: Cond{Op: OpEq, Value: int64(200)}}, ""},
		{"float accepts an integer", Is{Field: "domain_rating_source", Cond: Cond{Op: OpGte, Value: int64(30)}}, ""},
		{"date", Is{Field: "first_seen_link", Cond: Cond{Op: OpGte, Value: "2025-01-01"}}, ""},
		{"where-only field", Is{Field: "is_homepage_link", Cond: Cond{Op: OpEq, Value: true}}, ""},
		{"list any", ListIs{"languages", false, Cond{OpEq, "en"}}, ""},
		{"unknown field", Is{Field: "nope", Cond: Cond{Op: OpEq, Value: int64(1)}}, `field "nope": unknown field`},
		{"int given a string", Is{Field: "http_code", Cond: Cond{Op: OpEq, Value: "200"}}, "needs a integer value, got a string"},
		{"bool ordered", Is{Field: "is_dofollow", Cond: Cond{Op: OpGt, Value: true}}, "does not apply to a boolean"},
		{"substring of a number", Is{Field: "traffic", Cond: Cond{Op: OpSubstring, Value: "1"}}, "applies to strings"},
		{"bad regex", Is{Field: "anchor", Cond: Cond{Op: OpRegex, Value: "("}}, "invalid RE2"},
		{"bad date", Is{Field: "last_seen", Cond: Cond{Op: OpLt, Value: "yesterday"}}, "needs a date"},
		{"is on a list", Is{Field: "languages", Cond: Cond{Op: OpEq, Value: "en"}}, "list_is"},
		{"list_is on a scalar", ListIs{"anchor", true, Cond{OpEq, "x"}}, "not a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.CheckWhere(tt.e)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckWhere: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CheckWhere = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestQueryValuesRoundTrip(t *testing.T) {
	q := &Query{
		Endpoint: AllBacklinks, Target: "example.com", Mode: ModeDomain, Protocol: ProtocolHTTPS,
		Select:      []string{"url_from", "url_to", "domain_rating_source"},
		Where:       And{Is{Field: "domain_rating_source", Cond: Cond{Op: OpGte, Value: 19.5}}, Not{Is{Field: "anchor", Cond: Cond{Op: OpISubstring, Value: "casino"}}}},
		OrderBy:     []Order{{"domain_rating_source", true}, {"url_from", false}},
		Limit:       250,
		Aggregation: AggregationOnePerDomain,
		History:     "since:2025-01-01",
	}
	v, err := q.Values()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseQuery(AllBacklinks, v)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, q) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, q)
	}
}

func FuzzParseWhere(f *testing.F) {
	for _, seed := range []string{
		`{"field":"foo","is":["eq",3]}`,
		`{"and":[{"field":"a","is":"empty"},{"not":{"field":"b","list_is":{"all":{"or":[["gt",1],["lt",0.5]]}}}}]}`,
		`{"field":"x","is":["regex","^a+$"]}`,
	} {
		f.Add(seed)
	}
	s := MustSchema(AllBacklinks)
	f.Fuzz(func(t *testing.T, doc string) {
		e, err := ParseWhere([]byte(doc))
		if err != nil {
			return
		}
		_ = s.CheckWhere(e)
		out, err := MarshalWhere(e)
		if err != nil {
			t.Fatalf("a parsed tree does not marshal: %v", err)
		}
		again, err := ParseWhere(out)
		if err != nil {
			t.Fatalf("marshalled tree %s does not parse: %v", out, err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("round trip changed the tree:\n%#v\n%#v", e, again)
		}
	})
}
