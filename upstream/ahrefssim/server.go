package ahrefssim

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/upstream"
)

// DefaultKey is the API key the simulator accepts when Config.Keys is empty.
const DefaultKey = "sim-key"

// DefaultCacheTTL is how long an identical request is answered from the
// upstream cache (x-api-cache: hit, 0 units) unless Config.CacheTTL says
// otherwise.
const DefaultCacheTTL = time.Minute

// RateLimitStyle selects what a 429 looks like, since the real API answers
// both ways and a client must cope with each.
type RateLimitStyle int

const (
	// RateLimitJSON answers {"error": …}, with a Retry-After header only
	// when Config.RetryAfter asks for one.
	RateLimitJSON RateLimitStyle = iota
	// RateLimitHTML answers an HTML page without Retry-After, as the CDN in
	// front of the API does on bursts.
	RateLimitHTML
	// RateLimitAlternate alternates the two, starting with JSON, per
	// rejected request: deterministic, so a test can expect each.
	RateLimitAlternate
)

// Config is the simulator's configuration. The zero value is usable: key
// "sim-key", no rate limit, no faults, a one-minute cache, no unit limits.
type Config struct {
	// Keys are the accepted API keys (Authorization: Bearer KEY).
	Keys []string
	// RequestsPerMinute limits requests per key over a sliding minute;
	// 0 means unlimited.
	RequestsPerMinute int
	// RateWindow replaces the minute of RequestsPerMinute, so that tests
	// check a rate in seconds (10 per second is 600 a minute); 0 means a
	// minute.
	RateWindow time.Duration
	// RateLimitStyle is the shape of a 429.
	RateLimitStyle RateLimitStyle
	// RetryAfter sends Retry-After (the seconds until the window admits the
	// key again) on a JSON 429. Off by default: Ahrefs is reported to send
	// none, so a client must pace itself without it.
	RetryAfter bool
	// Latency is added to every data response (list and stats).
	Latency time.Duration
	// ErrorRate is the fraction of data requests answered with a 500,
	// chosen deterministically from Seed and the request's sequence number.
	ErrorRate float64
	// TruncateRate is the fraction of list responses whose body is cut
	// mid-row after the headers were sent.
	TruncateRate float64
	// Seed drives ErrorRate and TruncateRate.
	Seed uint64
	// CacheTTL is the lifetime of the upstream cache: 0 means
	// DefaultCacheTTL, negative disables the cache (x-api-cache: no_cache).
	CacheTTL time.Duration
	// CacheEntries bounds the cache; 0 means 256.
	CacheEntries int
	// UnitsLimitAPIKey is each key's monthly unit cap (nil: unlimited).
	// A key that reached it is answered 403.
	UnitsLimitAPIKey *int64
	// UnitsLimitWorkspace is the workspace's cap (nil: unlimited).
	UnitsLimitWorkspace *int64
	// Subscription is the plan name limits-and-usage reports.
	Subscription string
	// MaxLimit rejects a larger limit with 400; 0 means no maximum.
	MaxLimit int
	// RowCap is the rows per request a key's plan allows: a larger limit is
	// silently served with RowCap rows, as plans below Enterprise cap rows
	// per request (100, 250, 500). 0 means no cap.
	RowCap int
	// Datasets bounds how many targets' precomputations are kept; 0 means 8.
	Datasets int
	// Clock tells the time for rate limiting, caching and usage dates;
	// nil means clock.System.
	Clock clock.Clock
	// Logger receives one line per request; nil means slog.Default().
	Logger *slog.Logger
	// Collation is how text is sorted by order_by and compared by where;
	// "" is Bytes. WhereCollation, when set, makes where compare another
	// way than order_by sorts: an upstream whose order is inconsistent.
	Collation, WhereCollation Collation
	// Float32 keeps numbers as 32-bit floats while the JSON shows the
	// decimal they were made from: sorting and where see 97.30000305 where
	// the row shows 97.3.
	Float32 bool
}

// Server is the simulated Ahrefs API v3. It is an http.Handler; its knobs can
// be changed while it serves.
type Server struct {
	mux   *http.ServeMux
	dss   *datasets
	log   *slog.Logger
	seq   atomic.Uint64
	reqs  atomic.Int64 // requests received, any endpoint, any answer
	mu    sync.Mutex   // guards everything below
	cfg   Config
	keys  map[string]bool
	hits  map[string][]time.Time // accepted request times per key, last minute
	rl    int                    // 429s answered, for RateLimitAlternate
	fail  int                    // forced 500s still to answer
	trunc int                    // forced truncations still to answer
	usage map[string]int64
	total int64
	cache *respCache
	start time.Time
}

// New returns a simulator configured by cfg.
func New(cfg Config) *Server {
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Subscription == "" {
		cfg.Subscription = "Enterprise"
	}
	if len(cfg.Keys) == 0 {
		cfg.Keys = []string{DefaultKey}
	}
	s := &Server{
		mux: http.NewServeMux(), dss: newDatasets(cmp0(cfg.Datasets, 8)), log: cfg.Logger,
		hits: map[string][]time.Time{}, usage: map[string]int64{},
		cache: newRespCache(cmp0(cfg.CacheEntries, 256)), start: cfg.Clock.Now(),
	}
	s.setConfig(cfg)
	for _, ep := range upstream.Endpoints() {
		s.mux.HandleFunc("GET "+ep.Path(), s.list(ep))
	}
	s.mux.HandleFunc("GET "+upstream.BacklinksStatsPath, s.backlinksStats)
	s.mux.HandleFunc("GET "+upstream.LimitsAndUsagePath, s.limitsAndUsage)
	s.mux.HandleFunc("POST "+upstream.BatchAnalysisPath, s.batchAnalysis)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found: "+r.URL.Path)
	})
	return s
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Server) setConfig(cfg Config) {
	s.cfg = cfg
	s.dss.ord.p.Store(orderingOf(cfg))
	s.keys = map[string]bool{}
	for _, k := range cfg.Keys {
		s.keys[k] = true
	}
}

// Config returns the current configuration.
func (s *Server) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Update changes the configuration while serving: f edits a copy which then
// replaces the current one. Usage, cache and rate-limit history are kept.
func (s *Server) Update(f func(*Config)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg
	f(&cfg)
	cfg.Clock = clock.Or(cfg.Clock)
	s.setConfig(cfg)
}

// SetRequestsPerMinute sets the rate limit (0: none).
func (s *Server) SetRequestsPerMinute(n int) { s.Update(func(c *Config) { c.RequestsPerMinute = n }) }

// SetRateLimitStyle sets the shape of 429 answers.
func (s *Server) SetRateLimitStyle(st RateLimitStyle) {
	s.Update(func(c *Config) { c.RateLimitStyle = st })
}

// SetLatency sets the delay added to every data response.
func (s *Server) SetLatency(d time.Duration) { s.Update(func(c *Config) { c.Latency = d }) }

// SetErrorRate sets the fraction of data requests answered with 500.
func (s *Server) SetErrorRate(r float64) { s.Update(func(c *Config) { c.ErrorRate = r }) }

// SetTruncateRate sets the fraction of list bodies cut short.
func (s *Server) SetTruncateRate(r float64) { s.Update(func(c *Config) { c.TruncateRate = r }) }

// SetCacheTTL sets the cache lifetime (negative disables it).
func (s *Server) SetCacheTTL(d time.Duration) { s.Update(func(c *Config) { c.CacheTTL = d }) }

// SetUnitsLimitAPIKey sets the per-key unit cap (nil: unlimited).
func (s *Server) SetUnitsLimitAPIKey(n *int64) { s.Update(func(c *Config) { c.UnitsLimitAPIKey = n }) }

// SetPlan changes the key's plan while serving, as an upgrade or a
// downgrade does: the name limits-and-usage reports and the rows per
// request it allows (0: no cap).
func (s *Server) SetPlan(subscription string, rowCap int) {
	s.Update(func(c *Config) { c.Subscription, c.RowCap = subscription, rowCap })
}

// FailNext answers the next n authorised data requests with 500,
// regardless of ErrorRate.
func (s *Server) FailNext(n int) { s.mu.Lock(); s.fail = n; s.mu.Unlock() }

// TruncateNext cuts the body of the next n successful list responses.
func (s *Server) TruncateNext(n int) { s.mu.Lock(); s.trunc = n; s.mu.Unlock() }

// Requests is the number of requests received so far, on every endpoint,
// whatever their answer.
func (s *Server) Requests() int64 { return s.reqs.Load() }

// RateLimited is the number of requests answered 429 so far.
func (s *Server) RateLimited() int { s.mu.Lock(); defer s.mu.Unlock(); return s.rl }

// Usage is the number of units charged so far, over all keys.
func (s *Server) Usage() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.total }

// KeyUsage is the number of units charged to one key.
func (s *Server) KeyUsage(key string) int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.usage[key] }

// AddUsage charges units to a key as another consumer of the same
// workspace would, so tests can create drift the service must notice.
func (s *Server) AddUsage(key string, units int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage[key] += units
	s.total += units
}

// ResetUsage zeroes the usage, as a new billing month does.
func (s *Server) ResetUsage() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage, s.total = map[string]int64{}, 0
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Start serves on addr (host:port; port 0 picks one) until ctx ends, then
// shuts down gracefully. It returns the address it listens on and a channel
// that yields the serving error (nil after a clean shutdown).
func (s *Server) Start(ctx context.Context, addr string) (string, <-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	return ln.Addr().String(), done, nil
}

// admit runs the checks every request goes through before any data is
// computed: authentication, then the rate limit, then injected faults.
// It returns the key, or false after answering.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, data bool) (string, bool) {
	s.reqs.Add(1)
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || !s.keys[strings.TrimSpace(key)] {
		writeError(w, http.StatusUnauthorized, "Unauthorized: missing or invalid API key")
		return "", false
	}
	key = strings.TrimSpace(key)
	now := s.cfg.Clock.Now()
	if rpm := s.cfg.RequestsPerMinute; rpm > 0 {
		window := s.cfg.RateWindow
		if window <= 0 {
			window = time.Minute
		}
		h := s.hits[key]
		cut := 0
		for cut < len(h) && !h[cut].After(now.Add(-window)) {
			cut++
		}
		h = h[cut:]
		if len(h) >= rpm {
			s.hits[key] = h
			retry := int(h[0].Add(window).Sub(now).Seconds()) + 1
			html := s.cfg.RateLimitStyle == RateLimitHTML || (s.cfg.RateLimitStyle == RateLimitAlternate && s.rl%2 == 1)
			s.rl++
			if html {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(http.StatusTooManyRequests)
				fmt.Fprint(w, "<html><head><title>429 Too Many Requests</title></head><body><h1>429 Too Many Requests</h1></body></html>")
			} else {
				if s.cfg.RetryAfter {
					w.Header().Set("Retry-After", strconv.Itoa(retry))
				}
				writeError(w, http.StatusTooManyRequests, "Too many requests: rate limit exceeded")
			}
			return "", false
		}
		s.hits[key] = append(h, now)
	}
	if data {
		n := s.seq.Add(1)
		if s.fail > 0 || (s.cfg.ErrorRate > 0 && unit(hash3(s.cfg.Seed, n, 0xe1)) < s.cfg.ErrorRate) {
			s.fail = max(s.fail-1, 0)
			writeError(w, http.StatusInternalServerError, "Internal server error")
			return "", false
		}
	}
	return key, true
}

// overLimit reports whether the key or the workspace has no units left.
func (s *Server) overLimit(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.cfg.UnitsLimitAPIKey; l != nil && s.usage[key] >= *l {
		return true
	}
	if l := s.cfg.UnitsLimitWorkspace; l != nil && s.total >= *l {
		return true
	}
	return false
}

func (s *Server) charge(key string, units int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage[key] += units
	s.total += units
}

func (s *Server) cacheTTL() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ttl := s.cfg.CacheTTL; {
	case ttl == 0:
		return DefaultCacheTTL
	default:
		return ttl
	}
}

func (s *Server) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Clock.Now()
}

func (s *Server) pause(r *http.Request) {
	s.mu.Lock()
	d := s.cfg.Latency
	s.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// response is a computed answer, kept in the cache as it was sent.
type response struct {
	body    []byte
	rows    int
	perRow  int
	units   int64
	free    bool  // a free target's: charged nothing (upstream.IsFree)
	rowEnds []int // offsets just after each row, for truncation
}

// serve answers a data request: from the cache when an identical request
// (same key and parameters) was answered within the TTL, at no cost.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, key string, list bool, compute func() (*response, error)) {
	ttl := s.cacheTTL()
	ckey := key + "\x00" + r.URL.Path + "?" + canonical(r)
	cacheState := "no_cache"
	var resp *response
	if ttl > 0 {
		cacheState = "miss"
		if hit := s.cache.get(ckey, s.now()); hit != nil {
			resp, cacheState = hit, "hit"
		}
	}
	if resp == nil {
		if s.overLimit(key) {
			writeError(w, http.StatusForbidden, "Insufficient plan: the API units limit is reached")
			return
		}
		var err error
		resp, err = compute()
		if err != nil {
			var inv *upstream.InvalidError
			switch {
			case errors.As(err, &inv):
				writeError(w, http.StatusBadRequest, err.Error())
			case errors.Is(err, errNotFound):
				writeError(w, http.StatusNotFound, err.Error())
			default:
				writeError(w, http.StatusBadRequest, err.Error())
			}
			return
		}
		if !resp.free {
			s.charge(key, resp.units)
		}
		if ttl > 0 {
			s.cache.put(ckey, resp, s.now().Add(ttl))
		}
	}
	s.pause(r)
	actual := resp.units
	if cacheState == "hit" || resp.free {
		actual = 0
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-api-rows", strconv.Itoa(resp.rows))
	h.Set("x-api-units-cost-row", strconv.Itoa(resp.perRow))
	h.Set("x-api-units-cost-total", strconv.FormatInt(resp.units, 10))
	h.Set("x-api-units-cost-total-actual", strconv.FormatInt(actual, 10))
	h.Set("x-api-cache", cacheState)
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	body := resp.body
	if list && s.truncate() {
		// Declare the full length but send part of it, cut inside a row:
		// the server then drops the connection and the client reads an
		// unexpected EOF, as with a real upstream dying mid-body.
		cut := len(body) / 2
		if n := len(resp.rowEnds); n > 0 {
			cut = resp.rowEnds[n/2] - 7
		}
		body = body[:max(cut, 1)]
	}
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	s.log.Debug("ahrefssim", "path", r.URL.Path, "rows", resp.rows, "units", actual, "cache", cacheState, "truncated", len(body) < len(resp.body))
}

func (s *Server) truncate() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trunc > 0 {
		s.trunc--
		return true
	}
	return s.cfg.TruncateRate > 0 && unit(hash3(s.cfg.Seed, s.seq.Load(), 0x7c)) < s.cfg.TruncateRate
}

// canonical is the request's parameters in a stable order, the cache key.
func canonical(r *http.Request) string {
	v := r.URL.Query()
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, x := range v[k] {
			b.WriteString(k + "=" + x + "&")
		}
	}
	return b.String()
}

func (s *Server) list(ep upstream.Endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := s.admit(w, r, true)
		if !ok {
			return
		}
		s.serve(w, r, key, true, func() (*response, error) {
			q, err := upstream.ParseQuery(ep, r.URL.Query())
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			maxLimit, rowCap := s.cfg.MaxLimit, s.cfg.RowCap
			s.mu.Unlock()
			if maxLimit > 0 && q.Limit > maxLimit {
				return nil, &upstream.InvalidError{Param: "limit", Problem: fmt.Sprintf("must be at most %d", maxLimit)}
			}
			if rowCap > 0 && (q.Limit == 0 || q.Limit > rowCap) {
				q.Limit = rowCap
			}
			free := upstream.IsFree(q.Target)
			if free && (q.Limit == 0 || q.Limit > upstream.FreeRows) {
				q.Limit = upstream.FreeRows
			}
			resp, err := s.answer(q)
			if resp != nil {
				resp.free = free
			}
			return resp, err
		})
	}
}

// answer runs a list query and renders its body.
func (s *Server) answer(q *upstream.Query) (*response, error) {
	x, err := newPlan(s.dss, q)
	if err != nil {
		return nil, err
	}
	limit := q.Limit
	if limit == 0 {
		limit = 1000
	}
	rows := x.run(limit)
	schema := upstream.MustSchema(q.Endpoint)
	resp := &response{rows: len(rows), perRow: q.PerRowCost(), rowEnds: make([]int, 0, len(rows))}
	resp.units = upstream.Units(resp.perRow, len(rows))
	b := make([]byte, 0, 64+len(rows)*len(x.sel)*32)
	b = append(b, `{"`...)
	b = append(b, schema.ResponseKey...)
	b = append(b, `":[`...)
	for k := range rows {
		if k > 0 {
			b = append(b, ',')
		}
		b = x.appendRow(b, &rows[k])
		resp.rowEnds = append(resp.rowEnds, len(b))
	}
	b = append(b, "]}\n"...)
	resp.body = b
	return resp, nil
}

func (x *plan) appendRow(b []byte, r *row) []byte {
	b = append(b, '{')
	for k, f := range x.sel {
		if k > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f.name)
		b = append(b, ':')
		b = appendVal(b, f.g(r))
	}
	return append(b, '}')
}

// All computes the complete ordered answer of a list query, ignoring its
// limit, as maps from the selected field names to values (string, int64,
// float64, bool, nil, []string, []int64; dates as the JSON strings). It
// charges nothing; property tests compare paged answers with it.
func (s *Server) All(q *upstream.Query) ([]map[string]any, error) {
	x, err := newPlan(s.dss, q)
	if err != nil {
		return nil, err
	}
	rows := x.run(-1)
	out := make([]map[string]any, len(rows))
	for k := range rows {
		m := make(map[string]any, len(x.sel))
		for _, f := range x.sel {
			m[f.name] = f.g(&rows[k]).toAny()
		}
		out[k] = m
	}
	return out, nil
}

// Size is the number of backlinks of a target (all_time history,
// subdomains mode), the N of sized-N.example.
func (s *Server) Size(target string) int { return s.dss.get(parseTarget(target).root).n }

// statsCost is the per-row cost of backlinks-stats: live and all_time cost 1
// each, the two refdomains counts 5 each; the stats are one row.
const statsCost = 1 + 1 + 5 + 5

func (s *Server) backlinksStats(w http.ResponseWriter, r *http.Request) {
	key, ok := s.admit(w, r, true)
	if !ok {
		return
	}
	s.serve(w, r, key, false, func() (*response, error) {
		v := r.URL.Query()
		if err := checkParams(v, "target", "mode", "protocol", "date", "output"); err != nil {
			return nil, err
		}
		q := &upstream.Query{Endpoint: upstream.AllBacklinks, Target: v.Get("target"), Mode: upstream.Mode(v.Get("mode")),
			Protocol: upstream.Protocol(v.Get("protocol")), Select: []string{"url_from"}}
		ds := v.Get("date")
		if ds == "" {
			return nil, &upstream.InvalidError{Param: "date", Problem: "is required"}
		}
		date, err := time.Parse(time.DateOnly, ds)
		if err != nil {
			return nil, &upstream.InvalidError{Param: "date", Problem: fmt.Sprintf("must be YYYY-MM-DD, not %q", ds)}
		}
		x, err := newPlan(s.dss, q)
		if err != nil {
			return nil, err
		}
		live, all, liveD, allD := x.stats(date)
		body, _ := json.Marshal(map[string]any{"metrics": map[string]int{
			"live": live, "all_time": all, "live_refdomains": liveD, "all_time_refdomains": allD}})
		return &response{body: append(body, '\n'), rows: 1, perRow: statsCost, units: upstream.Units(statsCost, 1), free: upstream.IsFree(q.Target)}, nil
	})
}

// batchFields are the fields batch-analysis may select, with their unit
// price per target as the spec annotates it (unannotated fields cost 1).
var batchFields = map[string]int{
	"ahrefs_rank": 1, "backlinks": 1, "backlinks_dofollow": 1, "backlinks_internal": 1, "backlinks_nofollow": 1,
	"backlinks_redirect": 1, "domain_rating": 1, "index": 1, "ip": 1, "linked_domains": 1, "linked_domains_dofollow": 1,
	"mode": 1, "org_cost": 10, "org_keywords": 1, "org_keywords_11_20": 1, "org_keywords_1_3": 1, "org_keywords_21_50": 1,
	"org_keywords_4_10": 1, "org_keywords_51_plus": 1, "org_traffic": 10, "org_traffic_top_by_country": 10,
	"outgoing_links": 1, "outgoing_links_dofollow": 1, "paid_ads": 1, "paid_cost": 10, "paid_keywords": 1,
	"paid_traffic": 10, "protocol": 1, "refdomains": 5, "refdomains_dofollow": 5, "refdomains_nofollow": 5,
	"refips": 1, "refips_subnets": 1, "url": 1, "url_rating": 1,
}

// batchRequest is the JSON body of batch-analysis. Fields the simulator
// does not use (order_by, country, volume_mode) are accepted and ignored.
type batchRequest struct {
	Select  []string      `json:"select"`
	Targets []batchTarget `json:"targets"`
	Output  string        `json:"output"`
}

type batchTarget struct {
	URL      string `json:"url"`
	Mode     string `json:"mode"`
	Protocol string `json:"protocol"`
}

// batchAnalysis answers POST batch-analysis: a JSON body of select and 1 to
// upstream.MaxBatchTargets targets, no query string, one row per target.
// refips, refips_subnets, backlinks and refdomains are computed from the
// target's data; the other metrics (traffic, keywords, ranks) have no
// counterpart in the simulated data and are derived from the target's name.
func (s *Server) batchAnalysis(w http.ResponseWriter, r *http.Request) {
	key, ok := s.admit(w, r, true)
	if !ok {
		return
	}
	if err := checkParams(r.URL.Query()); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req batchRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the body must be a JSON object with select and targets: "+err.Error())
		return
	}
	if err := req.check(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	perRow := 0
	for _, f := range req.Select {
		perRow += batchFields[f]
	}
	// The cache is keyed by the query string: give it the body's content.
	b, _ := json.Marshal(req)
	r.URL.RawQuery = url.Values{"body": {string(b)}}.Encode()
	s.serve(w, r, key, false, func() (*response, error) {
		var out []map[string]any
		for k, t := range req.Targets {
			x, err := newPlan(s.dss, &upstream.Query{Endpoint: upstream.AllBacklinks, Target: t.URL, Mode: upstream.Mode(t.Mode),
				Protocol: upstream.Protocol(t.Protocol), Select: []string{"url_from"}})
			if err != nil {
				return nil, err
			}
			// Every row names its target, whatever select says.
			row := map[string]any{"index": k, "url": t.URL, "mode": t.Mode, "protocol": t.Protocol}
			for _, f := range req.Select {
				row[f] = batchValue(x, s.now().UTC(), k, t, f)
			}
			out = append(out, row)
		}
		body, _ := json.Marshal(map[string]any{"targets": out})
		n := len(req.Targets)
		return &response{body: append(body, '\n'), rows: n, perRow: perRow, units: upstream.Units(perRow, n)}, nil
	})
}

// check refuses what the spec refuses: a missing select or targets, more
// than upstream.MaxBatchTargets targets, unknown fields, targets without
// url, mode or protocol, an output other than json or php.
func (req *batchRequest) check() error {
	if len(req.Select) == 0 {
		return errors.New("select: is required")
	}
	for _, f := range req.Select {
		if _, ok := batchFields[f]; !ok {
			return fmt.Errorf("select: unknown field %q", f)
		}
	}
	if n := len(req.Targets); n == 0 || n > upstream.MaxBatchTargets {
		return fmt.Errorf("targets: 1 to %d targets are required, got %d", upstream.MaxBatchTargets, n)
	}
	for k, t := range req.Targets {
		if t.URL == "" {
			return fmt.Errorf("targets[%d].url: is required", k)
		}
		switch upstream.Mode(t.Mode) {
		case upstream.ModeExact, upstream.ModePrefix, upstream.ModeDomain, upstream.ModeSubdomains:
		default:
			return fmt.Errorf("targets[%d].mode: must be exact, prefix, domain or subdomains, not %q", k, t.Mode)
		}
		switch upstream.Protocol(t.Protocol) {
		case upstream.ProtocolBoth, upstream.ProtocolHTTP, upstream.ProtocolHTTPS:
		default:
			return fmt.Errorf("targets[%d].protocol: must be both, http or https, not %q", k, t.Protocol)
		}
	}
	if req.Output != "" && req.Output != "json" {
		return fmt.Errorf("output: only json is supported, not %q", req.Output)
	}
	return nil
}

func batchValue(x *plan, now time.Time, index int, t batchTarget, field string) any {
	switch field {
	case "index":
		return index
	case "url":
		return t.URL
	case "mode":
		return t.Mode
	case "protocol":
		return t.Protocol
	case "refips", "refips_subnets":
		ips, nets := x.refIPs()
		if field == "refips" {
			return ips
		}
		return nets
	case "backlinks", "refdomains":
		live, _, liveDoms, _ := x.stats(now)
		if field == "backlinks" {
			return live
		}
		return liveDoms
	case "ip":
		return nil
	case "org_traffic_top_by_country":
		return [][]any{}
	}
	h := hash3(seedOf(t.URL), seedOf(field), 0xba)
	if field == "domain_rating" || field == "url_rating" {
		return math.Round(unit(h)*1000) / 10
	}
	return int(h % 100000)
}

func (s *Server) limitsAndUsage(w http.ResponseWriter, r *http.Request) {
	key, ok := s.admit(w, r, false)
	if !ok {
		return
	}
	if err := checkParams(r.URL.Query(), "output"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	now := s.cfg.Clock.Now().UTC()
	reset := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	body := map[string]any{"limits_and_usage": map[string]any{
		"subscription": s.cfg.Subscription,
		// A date-time, as real answers write it (the spec says date).
		"usage_reset_date":        reset.Format(time.RFC3339),
		"units_limit_workspace":   s.cfg.UnitsLimitWorkspace,
		"units_usage_workspace":   s.total,
		"units_limit_api_key":     s.cfg.UnitsLimitAPIKey,
		"units_usage_api_key":     s.usage[key],
		"api_key_expiration_date": s.start.UTC().AddDate(1, 0, 0).Truncate(time.Second).Format(time.RFC3339),
	}}
	s.mu.Unlock()
	// The free endpoint's cost headers, as real answers carry them.
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-api-rows", "1")
	h.Set("x-api-units-cost-total-actual", "0")
	h.Set("x-api-cache", "no_cache")
	json.NewEncoder(w).Encode(body)
}

// checkParams refuses a query parameter the operation does not define, as
// the API does; allowed are the ones the spec gives it.
func checkParams(v url.Values, allowed ...string) error {
	for name := range v {
		if !slices.Contains(allowed, name) {
			return &upstream.InvalidError{Param: name, Problem: "unknown parameter"}
		}
	}
	return nil
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Write(append(b, '\n'))
}

// respCache is the upstream cache: a bounded LRU of whole responses.
type respCache struct {
	mu    sync.Mutex
	cap   int
	ll    *list.List
	items map[string]*list.Element
}

type cacheEntry struct {
	key     string
	resp    *response
	expires time.Time
}

func newRespCache(capacity int) *respCache {
	return &respCache{cap: capacity, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *respCache) get(key string, now time.Time) *response {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, key)
		return nil
	}
	c.ll.MoveToFront(el)
	return e.resp
}

func (c *respCache) put(key string, resp *response, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, resp: resp, expires: expires})
	for c.ll.Len() > c.cap {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}
