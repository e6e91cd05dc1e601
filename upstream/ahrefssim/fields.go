package ahrefssim

import (
	"math"
	"strconv"
	"strings"

	"github.com/linkgate/linkgate/upstream"
)

// row is the cursor the field getters read: a link (backlinks endpoints) or a
// referring domain with, while a where is tested against its links, one of
// them.
type row struct {
	ds      *dataset
	x       *plan
	l       loc // the link, when hasLink
	hasLink bool
	d       int // the referring domain
	agg     *domAgg
}

type getter func(r *row) val

const day = 86400

// Domain-level values.

func (ds *dataset) dr(d int) float64 {
	u := unit(hash3(ds.seed, uint64(d), saltDomDR))
	return math.Round(1000*math.Pow(u, 2.2)) / 10
}

func (ds *dataset) domU(d int, k uint64) float64 {
	return unit(mix(hash3(ds.seed, uint64(d), saltDomMisc) + k))
}

func (ds *dataset) tldClass(name string) string {
	switch {
	case strings.HasSuffix(name, ".edu"):
		return "edu"
	case strings.HasSuffix(name, ".gov"):
		return "gov"
	}
	return "normal"
}

// Page-level values: every link of a referring page shares them.

func (ds *dataset) pageH(d, pg int) uint64 {
	return hash3(ds.seed, uint64(ds.domStart[d])+uint64(pg)<<32, saltPageMisc)
}

func (ds *dataset) pageU(d, pg int, k uint64) float64 { return unit(mix(ds.pageH(d, pg) + k)) }

// firstSeenPage is when the referring page was discovered: over twelve
// years, skewed towards recent years.
func (ds *dataset) firstSeenPage(d, pg int) int64 {
	spanSec := float64(DataDate.Unix() - dataStart.Unix())
	return DataDate.Unix() - int64(spanSec*math.Pow(ds.pageU(d, pg, 1), 1.5))
}

// Link-level values.

func (ds *dataset) linkH(i int) uint64 { return hash3(ds.seed, uint64(i), saltLinkMisc) }

func (ds *dataset) linkU(i int, k uint64) float64 { return unit(mix(ds.linkH(i) + k)) }

func (ds *dataset) firstSeenLink(l loc) int64 {
	fs := ds.firstSeenPage(l.d, l.pg)
	return fs + int64(float64(DataDate.Unix()-fs)*math.Pow(ds.linkU(l.i, 1), 3))
}

// lastSeen is when a lost link was found lost; ok is false for live links.
func (ds *dataset) lastSeen(l loc) (int64, bool) {
	if !ds.lost(l.i) {
		return 0, false
	}
	fsl := ds.firstSeenLink(l)
	return fsl + int64(float64(DataDate.Unix()-fsl)*ds.linkU(l.i, 2)), true
}

var linkTypes = []struct {
	name string
	upTo float64
}{{"text", 0.80}, {"image", 0.88}, {"redirect", 0.92}, {"canonical", 0.94}, {"alternate", 0.96}, {"rss", 0.97}, {"frame", 0.98}, {"form", 1}}

func (ds *dataset) linkType(i int) string {
	u := ds.linkU(i, 3)
	for _, t := range linkTypes {
		if u < t.upTo {
			return t.name
		}
	}
	return "text"
}

func (ds *dataset) dofollow(i int) bool { return ds.linkU(i, 4) < 0.75 }

func (ds *dataset) redirectChain(l loc) []string {
	if ds.linkType(l.i) != "redirect" {
		return []string{}
	}
	n := 1 + int(ds.linkU(l.i, 5)*2)
	chain := make([]string, n)
	for k := range chain {
		chain[k] = "https://" + ds.domainName(l.d) + "/go/" + strconv.Itoa(k) + "/" + pad(l.o, 6)
	}
	return chain
}

// linkGetters generates every field of a backlink by its catalog name; the
// refdomains where-only link fields reuse them under their own names.
var linkGetters = map[string]getter{
	// The referring domain.
	"domain_rating_source": func(r *row) val { return vf(r.ds.dr(r.d)) },
	"ahrefs_rank_source": func(r *row) val {
		dr := r.ds.dr(r.d)
		return vi(1 + int64(math.Pow(100-dr, 3)*50*(0.5+r.ds.domU(r.d, 1))))
	},
	"ip_source": func(r *row) val {
		if r.ds.domU(r.d, 2) < 0.1 {
			return vnull()
		}
		h := mix(hash3(r.ds.seed, uint64(r.d), saltDomMisc) ^ 0x1b)
		return vs(strconv.Itoa(int(1+h%223)) + "." + strconv.Itoa(int(h>>8%256)) + "." + strconv.Itoa(int(h>>16%256)) + "." + strconv.Itoa(int(1+h>>24%254)))
	},
	"traffic_domain": func(r *row) val {
		return vi(int64(math.Exp(r.ds.dr(r.d)/100*14*r.ds.domU(r.d, 3))) - 1)
	},
	"refdomains_source_domain": func(r *row) val {
		return vi(int64(math.Exp(r.ds.dr(r.d)/8) * (0.5 + r.ds.domU(r.d, 4))))
	},
	"linked_domains_source_domain": func(r *row) val { return vi(10 + int64(math.Exp(r.ds.domU(r.d, 5)*9))) },
	"positions_source_domain": func(r *row) val {
		return vi(int64(math.Exp(r.ds.dr(r.d) / 100 * 12 * r.ds.domU(r.d, 6))))
	},
	"tld_class_source": func(r *row) val { return vs(r.ds.tldClass(r.ds.domainName(r.d))) },
	"name_source":      func(r *row) val { return vs(r.ds.domainName(r.d)) },
	"root_name_source": func(r *row) val {
		if p, ok := r.ds.platform(r.d); ok {
			return vs(p)
		}
		return vs(r.ds.domainName(r.d))
	},
	"is_root_source": func(r *row) val { _, ok := r.ds.platform(r.d); return vb(!ok) },
	"is_spam":        func(r *row) val { return vb(r.ds.domU(r.d, 7) < 0.03) },

	// The referring page.
	"url_from":       func(r *row) val { return vs(r.ds.pageURL(r.d, r.l.pg)) },
	"url_from_plain": func(r *row) val { return vs(plainURL(r.ds.pageURL(r.d, r.l.pg))) },
	"title": func(r *row) val {
		return vs(strings.ToUpper(r.ds.domainName(r.d)[:1]) + " " + words(slugWords, r.ds.pageH(r.d, r.l.pg), 4, " "))
	},
	"first_seen": func(r *row) val { return vtu(r.ds.firstSeenPage(r.d, r.l.pg)) },
	"http_code": func(r *row) val {
		switch u := r.ds.pageU(r.d, r.l.pg, 2); {
		case u < 0.95:
			return vi(200)
		case u < 0.97:
			return vi(301)
		case u < 0.98:
			return vi(302)
		case u < 0.99:
			return vi(404)
		}
		return vi(500)
	},
	"url_rating_source": func(r *row) val {
		return vf(math.Round(10*min(r.ds.dr(r.d)+5, 100*math.Pow(r.ds.pageU(r.d, r.l.pg, 3), 2.5))) / 10)
	},
	"page_size":  func(r *row) val { return vi(2000 + int64(r.ds.pageU(r.d, r.l.pg, 4)*400000)) },
	"encoding":   func(r *row) val { return vs(encodings[int(r.ds.pageU(r.d, r.l.pg, 5)*float64(len(encodings)))]) },
	"languages":  func(r *row) val { return vss(pickList(languages, r.ds.pageH(r.d, r.l.pg)^0x51, 0, 3)) },
	"powered_by": func(r *row) val { return vss(pickList(poweredBy, r.ds.pageH(r.d, r.l.pg)^0x52, 0, 4)) },
	"links_external": func(r *row) val {
		return vi(int64(r.l.k) + int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 6)*6)))
	},
	"links_internal": func(r *row) val { return vi(int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 7) * 6))) },
	"traffic": func(r *row) val {
		return vi(int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 8)*r.ds.pageU(r.d, r.l.pg, 9)*13)) - 1)
	},
	"positions":         func(r *row) val { return vi(int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 10)*8)) - 1) },
	"refdomains_source": func(r *row) val { return vi(int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 11) * 7))) },
	"class_c": func(r *row) val {
		rd := int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 11) * 7))
		return vi(max(1, int64(float64(rd)*(0.5+r.ds.pageU(r.d, r.l.pg, 12)/2))))
	},
	"linked_domains_source_page": func(r *row) val {
		return vi(1 + int64(math.Exp(r.ds.pageU(r.d, r.l.pg, 6)*5)))
	},
	"noindex": func(r *row) val { return vb(r.ds.pageU(r.d, r.l.pg, 13) < 0.02) },
	"source_page_author": func(r *row) val {
		if r.ds.pageU(r.d, r.l.pg, 14) < 0.6 {
			return vnull()
		}
		return vs(authors[int(r.ds.pageU(r.d, r.l.pg, 15)*float64(len(authors)))])
	},
	"source_page_publish_date": func(r *row) val {
		if r.ds.pageU(r.d, r.l.pg, 16) < 0.5 {
			return vnull()
		}
		fs := r.ds.firstSeenPage(r.d, r.l.pg) - int64(r.ds.pageU(r.d, r.l.pg, 17)*400)*day
		return val{k: vDate, n: fs - fs%day}
	},
	"page_category_source": func(r *row) val {
		if r.ds.pageU(r.d, r.l.pg, 18) < 0.3 {
			return vnull()
		}
		return vs(strings.Join(pickList(categories, r.ds.pageH(r.d, r.l.pg)^0x53, 1, 2), ","))
	},
	"page_type_source": func(r *row) val {
		if r.ds.pageU(r.d, r.l.pg, 19) < 0.3 {
			return vnull()
		}
		return vs(strings.Join(pickList(pageTypes, r.ds.pageH(r.d, r.l.pg)^0x54, 1, 2), ","))
	},
	"port_source": func(r *row) val {
		if r.ds.domainHTTPS(r.d) {
			return vi(443)
		}
		return vi(80)
	},
	"is_homepage_link": func(r *row) val { return vb(r.l.pg == 0) },

	// The link itself.
	"anchor": func(r *row) val {
		if r.ds.linkType(r.l.i) == "image" && r.ds.linkU(r.l.i, 6) < 0.5 {
			return vs("")
		}
		if r.ds.linkU(r.l.i, 7) < 0.15 {
			return vs(r.ds.pages[r.l.tp].host)
		}
		return vs(anchorTxt[int(r.ds.linkU(r.l.i, 8)*float64(len(anchorTxt)))])
	},
	"alt": func(r *row) val {
		if r.ds.linkType(r.l.i) != "image" || r.ds.linkU(r.l.i, 9) < 0.3 {
			return vnull()
		}
		return vs(words(slugWords, r.ds.linkH(r.l.i), 3, " "))
	},
	"snippet_left":    func(r *row) val { return vs(words(slugWords, r.ds.linkH(r.l.i)^0x61, 6, " ")) },
	"snippet_right":   func(r *row) val { return vs(words(slugWords, r.ds.linkH(r.l.i)^0x62, 6, " ")) },
	"link_type":       func(r *row) val { return vs(r.ds.linkType(r.l.i)) },
	"is_text":         linkTypeIs("text"),
	"is_image":        linkTypeIs("image"),
	"is_redirect":     linkTypeIs("redirect"),
	"is_canonical":    linkTypeIs("canonical"),
	"is_alternate":    linkTypeIs("alternate"),
	"is_rss":          linkTypeIs("rss"),
	"is_frame":        linkTypeIs("frame"),
	"is_form":         linkTypeIs("form"),
	"is_dofollow":     func(r *row) val { return vb(r.ds.dofollow(r.l.i)) },
	"is_nofollow":     func(r *row) val { return vb(!r.ds.dofollow(r.l.i)) },
	"is_ugc":          func(r *row) val { return vb(!r.ds.dofollow(r.l.i) && r.ds.linkU(r.l.i, 10) < 0.2) },
	"is_sponsored":    func(r *row) val { return vb(!r.ds.dofollow(r.l.i) && r.ds.linkU(r.l.i, 11) < 0.1) },
	"is_content":      func(r *row) val { return vb(r.ds.linkU(r.l.i, 12) < 0.6) },
	"http_crawl":      func(r *row) val { return vb(r.ds.linkU(r.l.i, 13) < 0.85) },
	"js_crawl":        func(r *row) val { return vb(r.ds.linkU(r.l.i, 13) >= 0.85 || r.ds.linkU(r.l.i, 14) < 0.1) },
	"first_seen_link": func(r *row) val { return vtu(r.ds.firstSeenLink(r.l)) },
	"last_seen": func(r *row) val {
		if t, ok := r.ds.lastSeen(r.l); ok {
			return vtu(t)
		}
		return vnull()
	},
	"last_visited": func(r *row) val {
		if t, ok := r.ds.lastSeen(r.l); ok {
			return vtu(t)
		}
		return vtu(max(r.ds.firstSeenLink(r.l), DataDate.Unix()-int64(r.ds.linkU(r.l.i, 15)*20*day)))
	},
	"is_lost": func(r *row) val { return vb(r.ds.lost(r.l.i)) },
	"lost_reason": func(r *row) val {
		if !r.ds.lost(r.l.i) {
			return vnull()
		}
		e := lostReasons
		return vs(e[int(r.ds.linkU(r.l.i, 16)*float64(len(e)))])
	},
	"drop_reason": func(r *row) val {
		if !r.ds.lost(r.l.i) || r.ds.linkU(r.l.i, 17) < 0.7 {
			return vnull()
		}
		e := dropReasons
		return vs(e[int(r.ds.linkU(r.l.i, 18)*float64(len(e)))])
	},
	"is_new": func(r *row) val {
		return vb(!r.ds.lost(r.l.i) && r.ds.firstSeenLink(r.l) >= DataDate.Unix()-14*day)
	},
	"discovered_status": func(r *row) val {
		switch u := r.ds.linkU(r.l.i, 19); {
		case u < 0.4:
			return vnull()
		case u < 0.7:
			return vs("pagefound")
		case u < 0.95:
			return vs("linkfound")
		}
		return vs("linkrestored")
	},
	"link_group_count": func(r *row) val { return vi(r.x.groupCount(r)) },
	"redirect_code": func(r *row) val {
		if r.ds.linkType(r.l.i) != "redirect" {
			return vnull()
		}
		return vi([]int64{301, 302, 307, 308}[int(r.ds.linkU(r.l.i, 20)*4)])
	},
	"redirect_kind": func(r *row) val {
		chain := r.ds.redirectChain(r.l)
		codes := make([]int64, len(chain))
		for k := range codes {
			codes[k] = []int64{301, 302}[int(r.ds.linkU(r.l.i, 21+uint64(k))*2)]
		}
		return vns(codes)
	},
	"url_redirect": func(r *row) val { return vss(r.ds.redirectChain(r.l)) },
	"url_redirect_with_target": func(r *row) val {
		return vss(append(r.ds.redirectChain(r.l), r.ds.pages[r.l.tp].url))
	},
	"len_url_redirect": func(r *row) val { return vi(int64(len(r.ds.redirectChain(r.l)))) },
	"is_redirect_lost": func(r *row) val {
		return vb(r.ds.linkType(r.l.i) == "redirect" && r.ds.lost(r.l.i) && r.ds.linkU(r.l.i, 24) < 0.5)
	},
	"broken_redirect_source": func(r *row) val {
		if !brokenRedirect(r) {
			return vnull()
		}
		return vs(r.ds.redirectChain(r.l)[0])
	},
	"broken_redirect_new_target": func(r *row) val {
		if !brokenRedirect(r) || r.ds.linkU(r.l.i, 25) < 0.5 {
			return vnull()
		}
		return vs("https://" + r.ds.domainName(r.d) + "/moved")
	},
	"broken_redirect_reason": func(r *row) val {
		if !brokenRedirect(r) {
			return vnull()
		}
		e := brokenReasons
		return vs(e[int(r.ds.linkU(r.l.i, 26)*float64(len(e)))])
	},

	// The target page.
	"url_to":           func(r *row) val { return vs(r.ds.pages[r.l.tp].url) },
	"url_to_plain":     func(r *row) val { return vs(plainURL(r.ds.pages[r.l.tp].url)) },
	"name_target":      func(r *row) val { return vs(r.ds.pages[r.l.tp].host) },
	"root_name_target": func(r *row) val { return vs(r.ds.root) },
	"is_root_target":   func(r *row) val { return vb(r.ds.pages[r.l.tp].hostIdx == 0) },
	"port_target": func(r *row) val {
		if r.ds.pages[r.l.tp].https {
			return vi(443)
		}
		return vi(80)
	},
	"tld_class_target":         func(r *row) val { return vs(r.ds.tldClass(r.ds.root)) },
	"domain_rating_target":     func(r *row) val { return vf(math.Round(1000*unit(r.ds.seed^0xd1)) / 10) },
	"ahrefs_rank_target":       func(r *row) val { return vi(1 + int64(unit(r.ds.seed^0xd2)*5e6)) },
	"refdomains_target_domain": func(r *row) val { return vi(int64(r.ds.m())) },
	"linked_domains_target_domain": func(r *row) val {
		return vi(5 + int64(unit(r.ds.seed^0xd3)*2000))
	},
	"is_non_html": func(r *row) val { return vb(strings.HasSuffix(r.ds.pages[r.l.tp].url, ".pdf")) },
	"http_code_target": func(r *row) val {
		if c := r.ds.pages[r.l.tp].code; c != 0 {
			return vi(int64(c))
		}
		return vi(200)
	},
	"last_visited_target": func(r *row) val {
		h := hash3(r.ds.seed, uint64(r.l.tp), saltTPageMisc)
		if unit(h) < 0.1 {
			return vnull()
		}
		return vtu(DataDate.Unix() - int64(unit(mix(h))*30*day))
	},
}

// refdomainLinkAliases maps the refdomains where-only link columns whose
// names differ from the backlinks catalog.
var refdomainLinkAliases = map[string]string{
	"linked_domains":   "linked_domains_source_page",
	"refdomains":       "refdomains_source",
	"root_domain_name": "root_name_source",
	"traffic_page":     "traffic",
}

// domainGetters generates the selectable refdomains fields.
var domainGetters = map[string]getter{
	"domain":                  linkGetters["name_source"],
	"domain_rating":           linkGetters["domain_rating_source"],
	"ip_source":               linkGetters["ip_source"],
	"is_root_domain":          linkGetters["is_root_source"],
	"is_spam":                 linkGetters["is_spam"],
	"positions_source_domain": linkGetters["positions_source_domain"],
	"traffic_domain":          linkGetters["traffic_domain"],
	"dofollow_linked_domains": func(r *row) val {
		return vi(int64(float64(linkGetters["linked_domains_source_domain"](r).n) * 0.7))
	},
	"dofollow_refdomains": func(r *row) val {
		return vi(int64(float64(linkGetters["refdomains_source_domain"](r).n) * 0.8))
	},
	"links_to_target": func(r *row) val { return vi(int64(r.x.domAgg(r).links)) },
	"dofollow_links":  func(r *row) val { return vi(int64(r.x.domAgg(r).dofollow)) },
	"lost_links":      func(r *row) val { return vi(int64(r.x.domAgg(r).lost)) },
	"new_links":       func(r *row) val { return vi(int64(r.x.domAgg(r).new)) },
	"first_seen":      func(r *row) val { return vtu(r.x.domAgg(r).firstSeen) },
	"last_seen": func(r *row) val {
		a := r.x.domAgg(r)
		if a.live > 0 {
			return vnull()
		}
		return vtu(a.lastSeen)
	},
}

var (
	lostReasons   = []string{"removedfromhtml", "removedfromhtml", "notcanonical", "noindex", "pageredirected", "pageerror", "lostredirect", "notfound"}
	dropReasons   = []string{"manual", "noratingunused", "notop", "tooold", "oldunavailable", "rescursive", "duplicate", "nxdomain", "malformed", "blockedport", "disallowed", "unlinked", "lowvalue"}
	brokenReasons = []string{"droppedmanual", "droppedtooold", "dropped", "codechanged", "nxdomain", "robotsdisallowed", "curlerror", "invalidtarget", "nomorecanonical", "isnowparked", "targetchanged"}
)

func brokenRedirect(r *row) bool {
	return r.ds.linkType(r.l.i) == "redirect" && r.ds.linkU(r.l.i, 27) < 0.3
}

func linkTypeIs(t string) getter {
	return func(r *row) val { return vb(r.ds.linkType(r.l.i) == t) }
}

// pickList picks between lo and hi distinct elements of list.
func pickList(list []string, h uint64, lo, hi int) []string {
	n := lo + int(mix(h)%uint64(hi-lo+1))
	out := make([]string, 0, n)
	for k := 0; len(out) < n && k < 4*n; k++ {
		s := list[mix(h+uint64(k)+1)%uint64(len(list))]
		dup := false
		for _, o := range out {
			dup = dup || o == s
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}

// getterFor resolves a field of an endpoint; for refdomains, link reports
// whether it is a per-link column (where-only) rather than a domain column.
func getterFor(ep upstream.Endpoint, name string) (g getter, link bool) {
	if ep == upstream.RefDomains {
		if g, ok := domainGetters[name]; ok {
			return g, false
		}
		if alias, ok := refdomainLinkAliases[name]; ok {
			name = alias
		}
		return linkGetters[name], true
	}
	return linkGetters[name], true
}
