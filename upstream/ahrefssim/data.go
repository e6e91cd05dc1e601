package ahrefssim

import (
	"cmp"
	"container/list"
	"hash/fnv"
	"math"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DataDate is the instant the synthetic index was "crawled": every date in
// the dataset is at or before it. It is fixed, not the clock, so that the same
// query returns the same rows on any day.
var DataDate = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// dataStart is the earliest date in the dataset.
var dataStart = time.Date(2014, 1, 1, 0, 0, 0, 0, time.UTC)

// MaxSize is the largest target a sized-N.example name may ask for.
const MaxSize = 10_000_000

// mix is the splitmix64 finaliser: a fast, well-distributed, stateless hash
// step. Every random-looking value in the dataset is mix of (seed, position,
// salt), so row i can be generated without generating rows 0..i-1.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func hash3(seed, a, b uint64) uint64 {
	return mix(seed ^ mix(a*0x9e3779b97f4a7c15+b+1))
}

// unit maps a hash to [0, 1).
func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// Salts keep the values of different fields independent.
const (
	saltDomCount uint64 = iota + 1
	saltDomLPP
	saltDomName
	saltDomDR
	saltDomMisc
	saltPage
	saltPageMisc
	saltLink
	saltLinkLost
	saltLinkMisc
	saltTPage
	saltTPageMisc
	saltTP
	saltLinkText
	saltGroup
)

// spec is a target as the request names it, split for mode matching.
type spec struct {
	host string // lower-case host as given, without a leading scheme
	path string // path without a trailing slash, "" for none
	root string // the dataset key: the last two labels of host
}

func parseTarget(t string) spec {
	t = strings.TrimSpace(t)
	if i := strings.Index(t, "://"); i >= 0 {
		t = t[i+3:]
	}
	host, path, _ := strings.Cut(t, "/")
	host = strings.ToLower(host)
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	path = strings.TrimRight(path, "/")
	if path != "" {
		path = "/" + path
	}
	labels := strings.Split(host, ".")
	root := host
	if len(labels) > 2 {
		root = strings.Join(labels[len(labels)-2:], ".")
	}
	return spec{host: host, path: path, root: root}
}

// sizeOf is the number of backlinks (all_time, subdomains) of a dataset.
func sizeOf(root string) int {
	if rest, ok := strings.CutPrefix(root, "sized-"); ok {
		if num, ok := strings.CutSuffix(rest, ".example"); ok {
			if n, err := strconv.Atoi(num); err == nil && n >= 0 && n <= MaxSize && strconv.Itoa(n) == num {
				return n
			}
		}
	}
	// Log-uniform between 300 and 30,000: most ordinary targets are small.
	u := unit(mix(seedOf(root) ^ 0x5eed))
	return int(300 * math.Pow(100, u))
}

func seedOf(root string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(root))
	return mix(h.Sum64())
}

// tpage is one page of the target site: a possible url_to.
type tpage struct {
	url     string // full URL, the url_to
	host    string
	hostIdx uint8
	https   bool
	code    int16 // http_code_target when broken, 0 when the page is fine
}

// dataset is the per-target precomputation, built once and kept in an LRU.
// Everything else about a row is computed on demand from (seed, index).
type dataset struct {
	root     string
	seed     uint64
	n        int     // backlinks, all_time
	domStart []int32 // domStart[d] is the index of domain d's first link; len m+1
	domLive  []int32 // live links per domain
	live     int
	liveDoms int
	pages    []tpage // sorted by url: url_to order is page order
	hosts    []string
	// byFirstSeen orders the links by first_seen_link ([0]) and the
	// referring domains by first_seen, their earliest link's ([1]), each
	// ascending and descending, built on the first query that needs it.
	byFirstSeen [2][2]timeIndex
}

// timeIndex is rows (links or referring domains) in the order of a time,
// the rows of one time in generation order, with the time of each.
type timeIndex struct {
	once sync.Once
	idx  []int32
	at   []int64
}

// firstSeenIndex is the links by first_seen_link (or, with domains, the
// referring domains by first_seen), then generation order: an order by that
// time, then url_from and url_to (domain), under byte order.
func (ds *dataset) firstSeenIndex(domains, desc bool) *timeIndex {
	var k [2]int
	if domains {
		k[0] = 1
	}
	if desc {
		k[1] = 1
	}
	t := &ds.byFirstSeen[k[0]][k[1]]
	t.once.Do(func() {
		type entry struct {
			at int64
			i  int32
		}
		n := ds.n
		if domains {
			n = ds.m()
		}
		rows := make([]entry, n)
		for d := range ds.m() {
			first := int64(math.MaxInt64)
			for i := int(ds.domStart[d]); i < int(ds.domStart[d+1]); i++ {
				at := ds.firstSeenLink(ds.locateIn(i, d))
				if !domains {
					rows[i] = entry{at, int32(i)}
				}
				first = min(first, at)
			}
			if domains {
				rows[d] = entry{first, int32(d)}
			}
		}
		slices.SortFunc(rows, func(a, b entry) int {
			c := cmp.Compare(a.at, b.at)
			if desc {
				c = -c
			}
			return cmp.Or(c, cmp.Compare(a.i, b.i))
		})
		t.idx, t.at = make([]int32, n), make([]int64, n)
		for k, r := range rows {
			t.idx[k], t.at[k] = r.i, r.at
		}
	})
	return t
}

func (ds *dataset) m() int { return len(ds.domStart) - 1 }

func (ds *dataset) count(d int) int { return int(ds.domStart[d+1] - ds.domStart[d]) }

// domainOf finds the domain holding link i.
func (ds *dataset) domainOf(i int) int {
	return sort.Search(ds.m(), func(d int) bool { return int(ds.domStart[d+1]) > i }) // first domain ending after i
}

func buildDataset(root string) *dataset {
	ds := &dataset{root: root, seed: seedOf(root), n: sizeOf(root)}
	n := ds.n
	// Links per domain: Pareto-like (many domains with one or two links, a
	// few with thousands), capped so one domain never dominates a page.
	capD := min(20000, max(4, n/20+1))
	ds.domStart = make([]int32, 1, n/4+2)
	sum := 0
	for d := 0; sum < n; d++ {
		u := unit(hash3(ds.seed, uint64(d), saltDomCount))
		c := int(1 / math.Pow(1-u, 1/1.25))
		c = min(max(c, 1), capD, n-sum)
		sum += c
		ds.domStart = append(ds.domStart, int32(sum))
	}
	ds.domLive = make([]int32, ds.m())
	for d := range ds.m() {
		live := 0
		for i := int(ds.domStart[d]); i < int(ds.domStart[d+1]); i++ {
			if !ds.lost(i) {
				live++
			}
		}
		ds.domLive[d] = int32(live)
		ds.live += live
		if live > 0 {
			ds.liveDoms++
		}
	}
	ds.buildPages()
	return ds
}

var sections = []string{"blog", "docs", "news", "p", "products"}

func (ds *dataset) buildPages() {
	ds.hosts = []string{ds.root, "www." + ds.root, "blog." + ds.root, "shop." + ds.root}
	np := min(5000, max(16, int(4*math.Sqrt(float64(ds.n)))))
	ds.pages = make([]tpage, np)
	for k := range np {
		h := hash3(ds.seed, uint64(k), saltTPage)
		var hi uint8
		switch u := unit(h); {
		case u < 0.5:
			hi = 0
		case u < 0.75:
			hi = 1
		case u < 0.9:
			hi = 2
		default:
			hi = 3
		}
		p := tpage{host: ds.hosts[hi], hostIdx: hi, https: unit(mix(h)) >= 0.25}
		path := "/"
		if k >= len(ds.hosts) {
			sec := sections[mix(h^1)%uint64(len(sections))]
			path = "/" + sec + "/" + pad(k, 5) + "-" + words(slugWords, mix(h^2), 3, "-")
			if mix(h^3)%10 == 0 {
				path += ".pdf"
			}
		} else {
			p.host, p.hostIdx = ds.hosts[k], uint8(k) // every host has a home page
		}
		scheme := "http://"
		if p.https {
			scheme = "https://"
		}
		p.url = scheme + p.host + path
		if unit(mix(h^4)) < 0.07 && k >= len(ds.hosts) {
			switch v := mix(h^5) % 20; {
			case v < 12:
				p.code = 404
			case v < 15:
				p.code = 410
			default:
				p.code = []int16{500, 502, 503}[v%3]
			}
		}
		ds.pages[k] = p
	}
	sort.Slice(ds.pages, func(a, b int) bool { return ds.pages[a].url < ds.pages[b].url })
}

// lost reports whether link i is lost (about 18% of links).
func (ds *dataset) lost(i int) bool {
	return unit(hash3(ds.seed, uint64(i), saltLinkLost)) < 0.18
}

// Domain-level structure. Domain names start with a fixed-width prefix that
// grows with d, so that sorting by domain (and by url_from) is generation
// order; the first tenth of the domains is served over http, which sorts
// before https, for the same reason.

const prefixLetters = 6

func (ds *dataset) domainName(d int) string {
	m := ds.m()
	const span = 308915776 // 26^6
	v := int(int64(d) * span / int64(max(m, 1)))
	var b [prefixLetters]byte
	for k := prefixLetters - 1; k >= 0; k-- {
		b[k] = byte('a' + v%26)
		v /= 26
	}
	h := hash3(ds.seed, uint64(d), saltDomName)
	if plat, ok := ds.platform(d); ok {
		return string(b[:]) + "." + plat
	}
	return string(b[:]) + "-" + words(nameWords, h, 1, "") + "." + tlds[mix(h^7)%uint64(len(tlds))]
}

// platform is the hosting platform of a domain that is a subdomain of one
// (a blog on blogspot.com, say), so that not every referring domain is a root.
func (ds *dataset) platform(d int) (string, bool) {
	h := hash3(ds.seed, uint64(d), saltDomName)
	if unit(mix(h^9)) < 0.15 {
		return platforms[mix(h^11)%uint64(len(platforms))], true
	}
	return "", false
}

func (ds *dataset) domainHTTPS(d int) bool { return d >= ds.m()/10 }

// lpp is the number of links per referring page of domain d.
func (ds *dataset) lpp(d int) int {
	u := unit(hash3(ds.seed, uint64(d), saltDomLPP))
	return min(1+int(1/math.Pow(1-u, 1/1.6))-1, 12, len(ds.pages))
}

// pageURL is the url_from of page pg of domain d; page 0 is the home page.
func (ds *dataset) pageURL(d, pg int) string {
	scheme := "http://"
	if ds.domainHTTPS(d) {
		scheme = "https://"
	}
	if pg == 0 {
		return scheme + ds.domainName(d) + "/"
	}
	h := hash3(ds.seed, uint64(ds.domStart[d])+uint64(pg)<<32, saltPage)
	return scheme + ds.domainName(d) + "/" + pad(pg, 6) + "/" + words(slugWords, h, 2+int(h%3), "-")
}

// loc is a link's position in the structure.
type loc struct {
	i, d, o, pg, j, k, tp int // k: links on the page
}

func (ds *dataset) locate(i int) loc {
	d := ds.domainOf(i)
	return ds.locateIn(i, d)
}

func (ds *dataset) locateIn(i, d int) loc {
	o := i - int(ds.domStart[d])
	lpp := ds.lpp(d)
	l := loc{i: i, d: d, o: o, pg: o / lpp, j: o % lpp}
	l.k = min(lpp, ds.count(d)-l.pg*lpp)
	// The page's links point to k distinct target pages at increasing
	// positions s, s+g, s+2g…, so url_to is strictly increasing within a
	// url_from and (url_from, url_to) is unique.
	np := len(ds.pages)
	h := hash3(ds.seed, uint64(ds.domStart[d])+uint64(l.pg)<<32, saltTP)
	g := 1 + int(h%uint64(min(max((np-1)/l.k, 1), 7)))
	span := np - (l.k-1)*g
	s := int((h >> 20) % uint64(max(span, 1)))
	l.tp = s + l.j*g
	return l
}

func pad(n, width int) string {
	s := strconv.Itoa(n)
	if len(s) >= width {
		return s
	}
	return strings.Repeat("0", width-len(s)) + s
}

func words(list []string, h uint64, n int, sep string) string {
	var b strings.Builder
	for k := range n {
		if k > 0 {
			b.WriteString(sep)
		}
		h = mix(h + uint64(k))
		b.WriteString(list[h%uint64(len(list))])
	}
	return b.String()
}

// datasets is a bounded LRU of precomputed targets: big targets cost a few
// megabytes each, so only the recently used ones stay.
type datasets struct {
	// ord is how requests sort and compare, per the current configuration.
	ord   orderings
	mu    sync.Mutex
	cap   int
	ll    *list.List
	items map[string]*list.Element
}

type dsEntry struct {
	root string
	once sync.Once
	ds   *dataset
}

func newDatasets(capacity int) *datasets {
	return &datasets{cap: max(capacity, 1), ll: list.New(), items: map[string]*list.Element{}}
}

func (c *datasets) get(root string) *dataset {
	c.mu.Lock()
	el, ok := c.items[root]
	if ok {
		c.ll.MoveToFront(el)
	} else {
		el = c.ll.PushFront(&dsEntry{root: root})
		c.items[root] = el
		for c.ll.Len() > c.cap {
			old := c.ll.Back()
			c.ll.Remove(old)
			delete(c.items, old.Value.(*dsEntry).root)
		}
	}
	e := el.Value.(*dsEntry)
	c.mu.Unlock()
	// Build outside the lock so one big target does not stall the others.
	e.once.Do(func() { e.ds = buildDataset(root) })
	return e.ds
}

// urlHostPath strips the scheme of a URL.
func urlHostPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		return u[i+3:]
	}
	return u
}

func plainURL(u string) string {
	p, err := url.PathUnescape(urlHostPath(u))
	if err != nil {
		return urlHostPath(u)
	}
	return strings.TrimPrefix(p, "www.")
}

var (
	tlds       = []string{"com", "com", "com", "net", "org", "io", "de", "co.uk", "fr", "info", "edu", "gov", "ru", "es", "it", "nl"}
	platforms  = []string{"blogspot.com", "wordpress.com", "medium.com", "github.io", "tumblr.com", "substack.com"}
	nameWords  = []string{"alpha", "atlas", "bright", "cloud", "daily", "delta", "echo", "forge", "garden", "harbor", "insight", "journal", "kite", "lumen", "maple", "nova", "orbit", "pixel", "quest", "river", "summit", "tech", "urban", "vertex", "wave", "zen", "market", "review", "guide", "studio"}
	slugWords  = []string{"how", "to", "best", "seo", "tools", "guide", "review", "top", "links", "marketing", "content", "strategy", "2024", "tips", "growth", "data", "analysis", "ultimate", "list", "free", "news", "update", "case", "study", "api"}
	anchorTxt  = []string{"click here", "read more", "this article", "official site", "homepage", "great guide", "source", "here", "learn more", "documentation", "the best tools", "a review", "pricing", "blog post", "our partner", "download", "more info", "website", "study", "report"}
	languages  = []string{"en", "en", "en", "de", "fr", "es", "it", "pt", "nl", "ru", "ja", "pl"}
	poweredBy  = []string{"WordPress", "Nginx", "Apache", "Cloudflare", "React", "jQuery", "PHP", "Google Analytics", "Shopify", "Next.js", "Varnish", "Bootstrap"}
	authors    = []string{"Jane Doe", "John Smith", "Ana Silva", "Li Wei", "Maria Garcia", "Tom Müller", "Priya Patel", "Sam Lee"}
	encodings  = []string{"utf-8", "utf-8", "utf-8", "utf-8", "iso-8859-1", "windows-1252", "utf-16"}
	categories = []string{"/Business_and_Industrial/Advertising_and_Marketing/Marketing", "/Computers_and_Electronics/Software", "/News", "/Arts_and_Entertainment", "/Science", "/Shopping"}
	pageTypes  = []string{"/Article/How_to", "/Article/News", "/Product", "/Homepage", "/Forum", "/Listing"}
)
