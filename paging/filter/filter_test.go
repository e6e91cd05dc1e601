package filter

import (
	"errors"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/upstream"
)

var (
	backlinks = upstream.MustSchema(upstream.AllBacklinks)
	refdoms   = upstream.MustSchema(upstream.RefDomains)
	broken    = upstream.MustSchema(upstream.BrokenBacklinks)
)

func compileJSON(t *testing.T, src string, s *upstream.Schema) string {
	t.Helper()
	e, err := Compile(src, s)
	if err != nil {
		t.Fatalf("Compile(%q): %v", src, err)
	}
	if e == nil {
		return ""
	}
	b, err := upstream.MarshalWhere(e)
	if err != nil {
		t.Fatalf("MarshalWhere(%q): %v", src, err)
	}
	return string(b)
}

func TestCompile(t *testing.T) {
	const (
		dofollow = `{"field":"is_dofollow","is":["eq",true]}`
		spam     = `{"field":"is_spam","is":["eq",true]}`
		code200  = `{"field":"http_code","is":["eq",200]}`
	)
	tests := []struct {
		name string
		src  string
		s    *upstream.Schema // all-backlinks when nil
		want string
	}{
		{"blank", "  \t\n ", nil, ``},
		{"empty", "", nil, ``},

		// comparisons
		{"eq int", `http_code = 200`, nil, code200},
		{"eq double equals", `http_code == 200`, nil, code200},
		{"neq", `http_code != 404`, nil, `{"not":{"field":"http_code","is":["eq",404]}}`},
		{"neq keeps nulls", `alt != "zzz"`, nil, `{"not":{"field":"alt","is":["eq","zzz"]}}`},
		{"date on date-time is the day", `first_seen_link = 2025-08-10`, nil, `{"and":[{"field":"first_seen_link","is":["gte","2025-08-10"]},{"field":"first_seen_link","is":["lt","2025-08-11"]}]}`},
		{"quoted date on date-time", `first_seen_link != "2025-08-10"`, nil, `{"not":{"and":[{"field":"first_seen_link","is":["gte","2025-08-10"]},{"field":"first_seen_link","is":["lt","2025-08-11"]}]}}`},
		{"date <= is through the day", `last_seen <= 2025-08-10`, nil, `{"field":"last_seen","is":["lt","2025-08-11"]}`},
		{"date > is after the day", `last_seen > 2025-08-10`, nil, `{"field":"last_seen","is":["gte","2025-08-11"]}`},
		{"date < is before the day", `last_seen < 2025-08-10`, nil, `{"field":"last_seen","is":["lt","2025-08-10"]}`},
		{"date-time stays an instant", `last_seen = 2025-08-10T10:00:00Z`, nil, `{"field":"last_seen","is":["eq","2025-08-10T10:00:00Z"]}`},
		{"lt", `traffic < 10`, nil, `{"field":"traffic","is":["lt",10]}`},
		{"lte", `traffic <= 10`, nil, `{"field":"traffic","is":["lte",10]}`},
		{"gt", `traffic > 10`, nil, `{"field":"traffic","is":["gt",10]}`},
		{"gte", `traffic >= 10`, nil, `{"field":"traffic","is":["gte",10]}`},
		{"negative int", `refdomains_source > -3`, nil, `{"field":"refdomains_source","is":["gt",-3]}`},
		{"float", `domain_rating_source >= 19.5`, nil, `{"field":"domain_rating_source","is":["gte",19.5]}`},
		{"int on float field", `domain_rating_source > 30`, nil, `{"field":"domain_rating_source","is":["gt",30]}`},
		{"exponent", `url_rating_source < 1e2`, nil, `{"field":"url_rating_source","is":["lt",100]}`},
		{"negative float", `url_rating_source > -0.5`, nil, `{"field":"url_rating_source","is":["gt",-0.5]}`},
		{"string eq", `anchor = "seo tools"`, nil, `{"field":"anchor","is":["eq","seo tools"]}`},
		{"string order", `name_source >= "m"`, nil, `{"field":"name_source","is":["gte","m"]}`},
		{"bool true", `is_dofollow = true`, nil, dofollow},
		{"bool false", `is_spam = FALSE`, nil, `{"field":"is_spam","is":["eq",false]}`},
		{"bool neq", `is_spam != true`, nil, `{"not":{"field":"is_spam","is":["eq",true]}}`},
		{"bare bool", `is_dofollow`, nil, dofollow},
		{"date quoted", `first_seen >= "2025-01-01"`, nil, `{"field":"first_seen","is":["gte","2025-01-01"]}`},
		{"date bare", `first_seen_link >= 2025-01-01`, nil, `{"field":"first_seen_link","is":["gte","2025-01-01"]}`},
		{"datetime bare", `last_visited < 2025-03-01T12:30:00Z`, nil, `{"field":"last_visited","is":["lt","2025-03-01T12:30:00Z"]}`},
		{"datetime offset", `last_visited < "2025-03-01T12:30:00+02:00"`, nil, `{"field":"last_visited","is":["lt","2025-03-01T12:30:00+02:00"]}`},
		{"date field", `source_page_publish_date > 2024-12-31`, nil, `{"field":"source_page_publish_date","is":["gt","2024-12-31"]}`},
		{"is null", `last_seen = null`, nil, `{"field":"last_seen","is":"is_null"}`},
		{"not null", `last_seen != NULL`, nil, `{"not":{"field":"last_seen","is":"is_null"}}`},
		{"has substring", `anchor:"seo"`, nil, `{"field":"anchor","is":["substring","seo"]}`},
		{"has int", `http_code:301`, nil, `{"field":"http_code","is":["eq",301]}`},
		{"regex", `url_from =~ "^https://[a-z]+\\.example\\.com/"`, nil, `{"field":"url_from","is":["regex","^https://[a-z]+\\.example\\.com/"]}`},
		{"not regex", `url_from !~ "utm_"`, nil, `{"not":{"field":"url_from","is":["regex","utm_"]}}`},
		{"dotted field", `anchor = 'x'`, nil, `{"field":"anchor","is":["eq","x"]}`},

		// wildcards
		{"wildcard both", `anchor = "*seo*"`, nil, `{"field":"anchor","is":["substring","seo"]}`},
		{"wildcard prefix", `url_from = "https://blog.*"`, nil, `{"field":"url_from","is":["prefix","https://blog."]}`},
		{"wildcard suffix", `url_from = "*.pdf"`, nil, `{"field":"url_from","is":["suffix",".pdf"]}`},
		{"wildcard neq", `url_from != "*.pdf"`, nil, `{"not":{"field":"url_from","is":["suffix",".pdf"]}}`},
		{"inner star literal", `anchor = "a*b"`, nil, `{"field":"anchor","is":["eq","a*b"]}`},
		{"escaped star literal", `anchor = "\*seo\*"`, nil, `{"field":"anchor","is":["eq","*seo*"]}`},
		{"escaped and wild", `anchor = "\**"`, nil, `{"field":"anchor","is":["prefix","*"]}`},

		// functions
		{"contains", `contains(anchor, "seo")`, nil, `{"field":"anchor","is":["substring","seo"]}`},
		{"icontains", `icontains(title, "SEO")`, nil, `{"field":"title","is":["isubstring","SEO"]}`},
		{"prefix", `prefix(url_from, "https://")`, nil, `{"field":"url_from","is":["prefix","https://"]}`},
		{"startsWith", `startsWith(url_from, "https://")`, nil, `{"field":"url_from","is":["prefix","https://"]}`},
		{"starts_with", `starts_with(url_from, "https://")`, nil, `{"field":"url_from","is":["prefix","https://"]}`},
		{"suffix", `suffix(url_to, "/")`, nil, `{"field":"url_to","is":["suffix","/"]}`},
		{"endsWith", `endsWith(url_to, "/")`, nil, `{"field":"url_to","is":["suffix","/"]}`},
		{"phrase", `phrase(snippet_left, "best tools")`, nil, `{"field":"snippet_left","is":["phrase_match","best tools"]}`},
		{"iphrase", `IPHRASE(title, "Best Tools")`, nil, `{"field":"title","is":["iphrase_match","Best Tools"]}`},
		{"regex fn", `regex(anchor, "^buy ")`, nil, `{"field":"anchor","is":["regex","^buy "]}`},
		{"matches", `matches(anchor, "^buy ")`, nil, `{"field":"anchor","is":["regex","^buy "]}`},
		{"empty", `empty(alt)`, nil, `{"field":"alt","is":"empty"}`},
		{"empty list", `empty(languages)`, nil, `{"field":"languages","is":"empty"}`},
		{"is_null fn", `is_null(redirect_code)`, nil, `{"field":"redirect_code","is":"is_null"}`},

		// lists
		{"list has", `languages:"en"`, nil, `{"field":"languages","list_is":{"any":["eq","en"]}}`},
		{"list has wildcard", `url_redirect:"https://*"`, nil, `{"field":"url_redirect","list_is":{"any":["prefix","https://"]}}`},
		{"list has int", `redirect_kind:301`, nil, `{"field":"redirect_kind","list_is":{"any":["eq",301]}}`},
		{"list null", `languages = null`, nil, `{"field":"languages","is":"is_null"}`},
		{"any shorthand", `any(languages, "de")`, nil, `{"field":"languages","list_is":{"any":["eq","de"]}}`},
		{"all shorthand", `all(redirect_kind, 301)`, nil, `{"field":"redirect_kind","list_is":{"all":["eq",301]}}`},
		{"any cond", `any(powered_by, prefix(_, "Word") OR _ = "Drupal")`, nil,
			`{"field":"powered_by","list_is":{"any":{"or":[["prefix","Word"],["eq","Drupal"]]}}}`},
		{"all cond", `all(redirect_kind, _ = 301 OR _ = 308)`, nil,
			`{"field":"redirect_kind","list_is":{"all":{"or":[["eq",301],["eq",308]]}}}`},
		{"all not", `ALL(languages, NOT _ = "en")`, nil, `{"field":"languages","list_is":{"all":{"not":["eq","en"]}}}`},
		{"any and", `any(url_redirect, _:"utm" AND NOT empty(_))`, nil,
			`{"field":"url_redirect","list_is":{"any":{"and":[["substring","utm"],{"not":"empty"}]}}}`},
		{"any wildcard", `any(url_redirect, _ = "*.pdf")`, nil, `{"field":"url_redirect","list_is":{"any":["suffix",".pdf"]}}`},
		{"any null", `any(url_redirect, _ != null)`, nil, `{"field":"url_redirect","list_is":{"any":{"not":"is_null"}}}`},

		// boolean structure and precedence: NOT > AND > OR
		{"and", `is_dofollow AND is_spam`, nil, `{"and":[` + dofollow + `,` + spam + `]}`},
		{"implicit and", `is_dofollow is_spam`, nil, `{"and":[` + dofollow + `,` + spam + `]}`},
		{"lowercase keywords", `is_dofollow and not is_spam or http_code = 200`, nil,
			`{"or":[{"and":[` + dofollow + `,{"not":` + spam + `}]},` + code200 + `]}`},
		{"and binds tighter than or", `is_dofollow OR is_spam AND http_code = 200`, nil,
			`{"or":[` + dofollow + `,{"and":[` + spam + `,` + code200 + `]}]}`},
		{"implicit and binds tighter than or", `is_dofollow OR is_spam http_code = 200`, nil,
			`{"or":[` + dofollow + `,{"and":[` + spam + `,` + code200 + `]}]}`},
		{"parens", `(is_dofollow OR is_spam) AND http_code = 200`, nil,
			`{"and":[{"or":[` + dofollow + `,` + spam + `]},` + code200 + `]}`},
		{"not binds tighter than and", `NOT is_spam AND is_dofollow`, nil,
			`{"and":[{"not":` + spam + `},` + dofollow + `]}`},
		{"not parens", `NOT (is_spam AND is_dofollow)`, nil,
			`{"not":{"and":[` + spam + `,` + dofollow + `]}}`},
		{"minus", `-is_spam`, nil, `{"not":` + spam + `}`},
		{"double not", `NOT NOT is_spam`, nil, `{"not":{"not":` + spam + `}}`},
		{"flatten and", `(is_dofollow AND is_spam) AND (http_code = 200)`, nil,
			`{"and":[` + dofollow + `,` + spam + `,` + code200 + `]}`},
		{"flatten or", `is_dofollow OR (is_spam OR http_code = 200)`, nil,
			`{"or":[` + dofollow + `,` + spam + `,` + code200 + `]}`},
		{"redundant parens", `((((is_spam))))`, nil, spam},
		{"newlines", "is_dofollow\nAND\tis_spam\r\n", nil, `{"and":[` + dofollow + `,` + spam + `]}`},

		// quoting and escapes
		{"single quotes", `anchor = 'it''s'`, nil, ``}, // replaced below: two strings is an error
		{"escapes", `anchor = "a\"b\\c\n\t\u00e9"`, nil, `{"field":"anchor","is":["eq","a\"b\\c\n\té"]}`},
		{"single quote escapes", `anchor = 'it\'s "fine"'`, nil, `{"field":"anchor","is":["eq","it's \"fine\""]}`},
		{"unicode", `title:"café ☕"`, nil, `{"field":"title","is":["substring","café ☕"]}`},
		{"keyword in string", `anchor = "a AND b"`, nil, `{"field":"anchor","is":["eq","a AND b"]}`},

		// other datasets
		{"refdomains", `domain_rating >= 50 AND dofollow_links > 0 AND NOT is_spam`, refdoms,
			`{"and":[{"field":"domain_rating","is":["gte",50]},{"field":"dofollow_links","is":["gt",0]},{"not":{"field":"is_spam","is":["eq",true]}}]}`},
		{"broken", `http_code_target = 404 AND last_visited_target >= 2025-01-01`, broken,
			`{"and":[{"field":"http_code_target","is":["eq",404]},{"field":"last_visited_target","is":["gte","2025-01-01"]}]}`},
	}
	for _, tt := range tests {
		if tt.name == "single quotes" {
			continue // covered in TestCompileErrors
		}
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			if s == nil {
				s = backlinks
			}
			if got := compileJSON(t, tt.src, s); got != tt.want {
				t.Errorf("Compile(%s)\n got %s\nwant %s", tt.src, got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	deep := strings.Repeat("(", MaxDepth) + "is_spam" + strings.Repeat(")", MaxDepth)
	tests := []struct {
		name   string
		src    string
		s      *upstream.Schema
		col    int
		field  string
		substr string
	}{
		{"unknown field", `is_dofollow AND ancor = "x"`, nil, 17, "ancor", `unknown field of all-backlinks; did you mean "anchor"?`},
		{"v2 column", `is_dofollow AND ahrefs_rank > 10`, nil, 17, "ahrefs_rank", `"ahrefs_rank" is the Ahrefs v2 name of v3 "url_rating_source"`},
		{"v2 value", `link_type = "href"`, nil, 13, "link_type", `"href" is the Ahrefs v2 value; v3 calls it "text"`},
		{"field of another dataset", `http_code_target = 404`, nil, 1, "http_code_target", "not a field of all-backlinks (only of broken-backlinks)"},
		{"field of another dataset refdomains", `traffic > 10`, refdoms, 1, "traffic", "not a field of refdomains"},
		{"wrong type string for int", `is_dofollow AND http_code = "abc"`, nil, 29, "http_code", `needs an integer, got the string "abc"`},
		{"quoted number", `http_code = "200"`, nil, 13, "http_code", "write numbers without quotes"},
		{"float for int", `http_code = 2.5`, nil, 13, "http_code", "needs an integer, got the number 2.5"},
		{"number for string", `anchor = 5`, nil, 10, "anchor", "needs a string, got the number 5"},
		{"string for bool", `is_spam = "yes"`, nil, 11, "is_spam", "needs a boolean"},
		{"bool order", `is_spam < true`, nil, 9, "is_spam", "a boolean has no order"},
		{"bad date", `first_seen > "yesterday"`, nil, 14, "first_seen", "needs a date (YYYY-MM-DD) or an RFC 3339 date-time"},
		{"bad bare date", `first_seen > 2025-13-01`, nil, 14, "", "not a date"},
		{"date for string", `anchor = 2025-01-01`, nil, 10, "anchor", "quote text"},
		{"bare word value", `anchor = seo`, nil, 10, "", `quote text: "seo"`},
		{"null order", `last_seen > null`, nil, 11, "last_seen", "null can only be compared with = or !="},
		{"regex", `url_from =~ "(abc"`, nil, 13, "url_from", "invalid regular expression (RE2): missing closing )"},
		{"regex fn", `regex(anchor, "a**")`, nil, 15, "anchor", "invalid regular expression (RE2)"},
		{"regex not RE2", `regex(anchor, "(?=x)")`, nil, 15, "anchor", "RE2"},
		{"text op on int", `contains(http_code, "2")`, nil, 10, "http_code", "applies to text"},
		{"has on int with string", `http_code:"x"`, nil, 11, "http_code", "needs an integer"},
		{"regex on int", `http_code =~ "2.."`, nil, 1, "http_code", "applies to text"},
		{"text fn on list", `contains(languages, "en")`, nil, 10, "languages", "any(languages, contains(_, …))"},
		{"eq on list", `languages = "en"`, nil, 11, "languages", `languages:value, any(languages, …)`},
		{"empty on int", `empty(http_code)`, nil, 7, "http_code", "empty applies to text and lists"},
		{"any on scalar", `any(anchor, "x")`, nil, 5, "anchor", "needs a list field"},
		{"field inside any", `any(languages, anchor = "x")`, nil, 16, "anchor", "write _ instead"},
		{"underscore outside", `_ = "x"`, nil, 1, "", "only allowed inside any() or all()"},
		{"nested any", `any(languages, any(languages, "x"))`, nil, 16, "", "cannot be nested"},
		{"wildcard only", `anchor = "*"`, nil, 10, "anchor", "a wildcard needs some text"},
		{"unknown function", `like(anchor, "x")`, nil, 1, "", `unknown function "like"`},
		{"non-bool bare field", `anchor AND is_spam`, nil, 8, "anchor", "needs a comparison"},
		{"unterminated string", `anchor = "seo`, nil, 10, "", "unterminated string"},
		{"unterminated single", `is_spam AND anchor = 'x\'`, nil, 22, "", "unterminated string"},
		{"bad escape", `anchor = "a\qb"`, nil, 12, "", `invalid escape \q`},
		{"bad unicode escape", `anchor = "\u12"`, nil, 11, "", `\u needs four hex digits`},
		{"two strings", `anchor = 'it''s'`, nil, 14, "", `unexpected the string 's'`},
		{"trailing garbage", `http_code = 200 200`, nil, 17, "", "unexpected the number 200; expected AND, OR or the end"},
		{"trailing paren", `is_spam)`, nil, 8, "", `no "(" to close`},
		{"missing paren", `(is_spam OR is_dofollow`, nil, 24, "", `expected ")" to close the "(" at column 1, got the end of the filter`},
		{"dangling and", `is_spam AND`, nil, 12, "", "expected a condition"},
		{"dangling or", `is_spam OR OR is_dofollow`, nil, 12, "", "expected a condition before OR"},
		{"leading and", `AND is_spam`, nil, 1, "", "expected a condition before AND"},
		{"missing value", `http_code =`, nil, 12, "", "expected a value after \"=\""},
		{"missing comma", `contains(anchor "x")`, nil, 17, "", `expected "," in contains(field, value)`},
		{"missing close", `contains(anchor, "x"`, nil, 21, "", `expected ")"`},
		{"ampersands", `is_spam && is_dofollow`, nil, 9, "", `write AND`},
		{"bang", `!is_spam`, nil, 1, "", `write NOT`},
		{"bad char", `is_spam ; x`, nil, 9, "", `unexpected character ';'`},
		{"malformed number", `http_code = 20x`, nil, 13, "", `malformed number "20x"`},
		{"int overflow", `traffic > 99999999999999999999`, nil, 11, "", "out of range"},
		{"keyword as field", `true`, nil, 1, "", `expected a field name`},
		{"column counts runes", `title:"☕☕" AND ancor = "x"`, nil, 16, "ancor", "unknown field"},
		{"second line", "is_spam\n  AND ancor = 'x'", nil, 7, "ancor", "unknown field"},
		{"too deep", "(" + deep + ")", nil, MaxDepth, "", "nests deeper than 32 levels"},
		{"too deep not", strings.Repeat("NOT ", MaxDepth) + "is_spam", nil, 1 + 4*(MaxDepth-1), "", "nests deeper than 32 levels"},
		{"too long", `anchor = "` + strings.Repeat("a", MaxLength) + `"`, nil, MaxLength + 1, "", "the limit is 4096"},
		{"invalid utf8", "anchor = \"a\xffb\"", nil, 12, "", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.s
			if s == nil {
				s = backlinks
			}
			e, err := Compile(tt.src, s)
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("Compile(%q) = %v, %v; want an *Error", tt.src, e, err)
			}
			if fe.Column != tt.col || fe.Field != tt.field || !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("Compile(%q):\n got column %d, field %q: %v\nwant column %d, field %q, containing %q",
					tt.src, fe.Column, fe.Field, err, tt.col, tt.field, tt.substr)
			}
			if fe.Pos < 0 || fe.Pos > len(tt.src) {
				t.Errorf("Pos %d outside the input (length %d)", fe.Pos, len(tt.src))
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	_, err := Compile(`is_dofollow AND http_code = "abc"`, backlinks)
	const want = `filter: column 29: field "http_code": needs an integer, got the string "abc"`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	fe := err.(*Error)
	if fe.Pos != 28 || fe.Line != 1 {
		t.Errorf("Pos, Line = %d, %d; want 28, 1", fe.Pos, fe.Line)
	}
	const excerpt = "is_dofollow AND http_code = \"abc\"\n                            ^"
	if got := fe.Excerpt(); got != excerpt {
		t.Errorf("Excerpt:\n%s\nwant\n%s", got, excerpt)
	}

	_, err = Compile("is_spam AND\n\tancor = 1", backlinks)
	fe = err.(*Error)
	if got, want := err.Error(), `filter: line 2, column 2: field "ancor": unknown field of all-backlinks; did you mean "anchor"?`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got, want := fe.Excerpt(), "\tancor = 1\n\t^"; got != want {
		t.Errorf("Excerpt %q, want %q", got, want)
	}
}

// TestDepthLimits checks that the deepest filters the parser admits still
// fit the nesting the upstream package accepts, and that the tree bound
// catches the alternating AND/OR shape that MaxDepth alone would let by.
func TestDepthLimits(t *testing.T) {
	atLimit := []string{
		strings.Repeat("(", MaxDepth-1) + "is_spam" + strings.Repeat(")", MaxDepth-1),
		strings.Repeat("NOT ", MaxDepth-1) + "is_spam",
		strings.Repeat("NOT ", MaxDepth-3) + `any(languages, NOT _ = "en")`,
	}
	for _, src := range atLimit {
		e, err := Compile(src, backlinks)
		if err != nil {
			t.Fatalf("Compile(%.40s…): %v", src, err)
		}
		roundTrip(t, src, backlinks, e)
	}

	// Every "(" here adds an or and an and to the tree, two levels per
	// nesting level, so MaxDepth alone would let the tree grow past what
	// the upstream accepts; one level less fits.
	alternating := func(levels int) string {
		var b strings.Builder
		for i := 0; i < levels; i++ {
			b.WriteString("is_spam OR is_dofollow AND (")
		}
		b.WriteString(`is_spam OR is_dofollow AND anchor != "*x"`)
		b.WriteString(strings.Repeat(")", levels))
		return b.String()
	}
	src := alternating(MaxDepth - 1)
	_, err := Compile(src, backlinks)
	if err == nil || !strings.Contains(err.Error(), "too deeply for the upstream") {
		t.Fatalf("Compile(alternating %d) = %v; want the tree-depth error", MaxDepth-1, err)
	}
	if fe := err.(*Error); fe.Pos != strings.Index(src, "anchor") {
		t.Errorf("tree-depth error at %d, want %d (the deepest condition)", fe.Pos, strings.Index(src, "anchor"))
	}
	src = alternating(MaxDepth - 2)
	e, err := Compile(src, backlinks)
	if err != nil {
		t.Fatalf("Compile(alternating %d): %v", MaxDepth-2, err)
	}
	roundTrip(t, src, backlinks, e)
}

func roundTrip(t *testing.T, src string, s *upstream.Schema, e upstream.Expr) {
	t.Helper()
	if err := s.CheckWhere(e); err != nil {
		t.Fatalf("CheckWhere(Compile(%q)): %v", src, err)
	}
	b, err := upstream.MarshalWhere(e)
	if err != nil {
		t.Fatalf("MarshalWhere(Compile(%q)): %v", src, err)
	}
	back, err := upstream.ParseWhere(b)
	if err != nil {
		t.Fatalf("ParseWhere(%s) from %q: %v", b, src, err)
	}
	b2, err := upstream.MarshalWhere(back)
	if err != nil || string(b2) != string(b) {
		t.Fatalf("round trip of %q:\n%s\n%s (%v)", src, b, b2, err)
	}
}
