package filter

import (
	"errors"
	"testing"

	"github.com/linkgate/linkgate/upstream"
)

// FuzzCompile feeds arbitrary strings to Compile for every dataset. It must
// never panic; a success must be a tree the upstream package accepts and
// reads back identically; a failure must be an *Error inside the input.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{
		``,
		`http_code = 200 AND is_dofollow`,
		`anchor = "*seo*" OR url_from = "https://*" -is_spam`,
		`languages:"en" any(powered_by, prefix(_, "Word") OR _ = "Drupal")`,
		`all(redirect_kind, _ = 301 OR _ = 308)`,
		`first_seen >= 2025-01-01T00:00:00Z last_seen = null`,
		`NOT (domain_rating_source > 30.5 AND traffic <= -1e3)`,
		`url_from =~ "^https?://[^/]+/blog/" AND url_from !~ "utm_"`,
		`icontains(title, 'it\'s') iphrase(anchor, "a\u00e9") empty(alt)`,
		`domain_rating >= 50 dofollow_links > 0`,
		`http_code_target = 404 AND last_visited_target >= "2025-01-01"`,
		`((is_spam OR is_dofollow) AND (http_code:301))`,
		`anchor = "\*" "unterminated`,
	} {
		f.Add(seed)
	}
	schemas := []*upstream.Schema{
		upstream.MustSchema(upstream.AllBacklinks),
		upstream.MustSchema(upstream.RefDomains),
		upstream.MustSchema(upstream.BrokenBacklinks),
	}
	f.Fuzz(func(t *testing.T, src string) {
		for _, s := range schemas {
			e, err := Compile(src, s)
			if err != nil {
				var fe *Error
				if !errors.As(err, &fe) {
					t.Fatalf("Compile(%q) on %s: error %T, want *Error: %v", src, s.Endpoint, err, err)
				}
				if fe.Pos < 0 || fe.Pos > len(src) || fe.Line < 1 || fe.Column < 1 || fe.Msg == "" {
					t.Fatalf("Compile(%q) on %s: bad error position %+v", src, s.Endpoint, fe)
				}
				_ = fe.Excerpt()
				continue
			}
			if e == nil {
				continue
			}
			roundTrip(t, src, s, e)
		}
	})
}
