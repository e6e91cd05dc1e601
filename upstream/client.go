package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/linkgate/linkgate/internal/clock"
)

// Defaults of Config.
const (
	DefaultBaseURL               = "https://api.ahrefs.com"
	DefaultMaxAttempts           = 3
	DefaultBackoffBase           = 500 * time.Millisecond
	DefaultBackoffMax            = 8 * time.Second
	DefaultMaxRetryAfter         = 60 * time.Second
	DefaultResponseHeaderTimeout = 90 * time.Second
	DefaultMaxIdleConnsPerHost   = 16
)

// Config configures a Client. The zero value of every field but Key means its
// default.
type Config struct {
	// BaseURL of the API, without the /v3 path. Default DefaultBaseURL; the
	// simulator's address in tests and the embedded default.
	BaseURL string
	// Key is the Ahrefs API key. It is sent only in the Authorization header,
	// never in a URL, and is redacted from String, LogValue and every error.
	Key string

	// Gate is the key's rate: Wait is called before every HTTP attempt,
	// retries included, and Throttled after a 429, so that one limiter for
	// the key (the scheduler's, shared by every replica) sees every request.
	// Nil means no limit of linkgate's own.
	Gate Gate
	// KeepBody is the largest response body List keeps in Result.Body for a
	// page cache; a larger one is streamed without being kept, so that a
	// huge page is still never held whole. 0 keeps none.
	KeepBody int

	// MaxAttempts bounds the attempts of one call, the first included.
	// Default 3 (the official SDK's max_retries=2).
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff with full
	// jitter between attempts. Defaults 500ms and 8s, as in the official SDK.
	BackoffBase, BackoffMax time.Duration
	// MaxRetryAfter caps the upstream's Retry-After. Default 60s.
	MaxRetryAfter time.Duration

	// ResponseHeaderTimeout bounds the wait for the status line of one
	// attempt; large pages take the upstream a while. Default 90s. The
	// caller's context bounds the whole call.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost of the tuned transport. Default 16.
	MaxIdleConnsPerHost int
	// WrapTransport, if set, wraps the tuned *http.Transport, e.g. with
	// otelhttp.NewTransport for client spans.
	WrapTransport func(http.RoundTripper) http.RoundTripper

	// Observer receives retries, rate-limit waits and responses for metrics.
	// Nil means none.
	Observer Observer

	// Clock tells the time and waits out backoffs; nil means
	// clock.System. Jitter draws a backoff's share of d; nil means a
	// uniform draw in [0, d). Both are injected so that tests never sleep.
	Clock  clock.Clock
	Jitter func(d time.Duration) time.Duration
}

// Gate admits HTTP attempts at the key's rate.
type Gate interface {
	// Wait returns when the attempt may be sent, or an error (the caller's
	// deadline would pass first) that ends the call without sending.
	Wait(ctx context.Context) error
	// Throttled reports a 429; retryAfter is the upstream's Retry-After (0
	// when it sent none). Every caller of the key should slow down.
	Throttled(ctx context.Context, retryAfter time.Duration)
}

// Observer is told what the client does, for metrics and logs. Methods are
// called synchronously on the calling goroutine and must be cheap.
type Observer interface {
	// Retry: attempt failed with err and the next one starts after wait.
	Retry(ctx context.Context, attempt int, wait time.Duration, err error)
	// Response: one attempt ended; status 0 when no response arrived. cost
	// is what that attempt was charged (Known false when not known).
	Response(ctx context.Context, endpoint string, status int, cost Cost, elapsed time.Duration)
}

// String describes the configuration with the key redacted.
func (c Config) String() string {
	return fmt.Sprintf("upstream.Config{BaseURL:%q Key:%s MaxAttempts:%d BackoffBase:%s BackoffMax:%s MaxRetryAfter:%s}",
		c.BaseURL, redacted(c.Key), c.MaxAttempts, c.BackoffBase, c.BackoffMax, c.MaxRetryAfter)
}

// GoString keeps %#v from printing the key.
func (c Config) GoString() string { return c.String() }

// LogValue is the slog form of the configuration, with the key redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", c.BaseURL),
		slog.String("key", redacted(c.Key)),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("backoff_base", c.BackoffBase),
		slog.Duration("backoff_max", c.BackoffMax),
		slog.Duration("max_retry_after", c.MaxRetryAfter),
	)
}

func redacted(key string) string {
	if key == "" {
		return "(unset)"
	}
	return "[REDACTED]"
}

// Client calls the Ahrefs API v3 with one key. It is safe for concurrent
// use; all calls pass the key's Gate.
type Client struct {
	cfg  Config
	base string // BaseURL without a trailing slash
	http *http.Client
	keys scrubber
	obs  Observer
}

// New validates cfg, fills its defaults and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(cfg.BaseURL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("upstream: BaseURL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, fmt.Errorf("upstream: BaseURL %q must be an absolute http or https URL", cfg.BaseURL)
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		// Credentials or parameters in the URL would end up in logs and traces.
		return nil, errors.New("upstream: BaseURL must not carry user info, a query or a fragment")
	}
	if cfg.Key == "" {
		return nil, errors.New("upstream: Key is required")
	}
	if strings.IndexFunc(cfg.Key, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		// A space or control character would break (or inject into) the header.
		return nil, errors.New("upstream: Key contains whitespace or control characters")
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.MaxRetryAfter == 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.ResponseHeaderTimeout == 0 {
		cfg.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if cfg.MaxIdleConnsPerHost == 0 {
		cfg.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	switch {
	case cfg.MaxAttempts < 0:
		return nil, errors.New("upstream: MaxAttempts must be positive")
	case cfg.BackoffBase < 0, cfg.BackoffMax < cfg.BackoffBase:
		return nil, errors.New("upstream: need 0 < BackoffBase <= BackoffMax")
	case cfg.MaxRetryAfter < 0, cfg.ResponseHeaderTimeout < 0, cfg.MaxIdleConnsPerHost < 0:
		return nil, errors.New("upstream: MaxRetryAfter, ResponseHeaderTimeout and MaxIdleConnsPerHost must be positive")
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Jitter == nil {
		cfg.Jitter = uniformJitter
	}

	var rt http.RoundTripper = &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
	}
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(rt)
	}
	obs := cfg.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	return &Client{
		cfg:  cfg,
		base: strings.TrimRight(cfg.BaseURL, "/"),
		http: &http.Client{
			Transport: rt,
			// The key must not follow a redirect to another host; the API
			// does not redirect, so any redirect is an anomaly to surface.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		keys: scrubber(cfg.Key),
		obs:  obs,
	}, nil
}

// Config returns the configuration with its defaults filled in.
func (c *Client) Config() Config { return c.cfg }

type nopObserver struct{}

func (nopObserver) Retry(context.Context, int, time.Duration, error)           {}
func (nopObserver) Response(context.Context, string, int, Cost, time.Duration) {}

// Cost is what one response says it cost, from its headers.
type Cost struct {
	Rows   int    // x-api-rows: rows returned
	PerRow int    // x-api-units-cost-row
	Total  int64  // x-api-units-cost-total: what the request should cost
	Actual int64  // x-api-units-cost-total-actual: what it was charged (0 on a cache hit)
	Cache  string // x-api-cache: hit, miss or no_cache; "" when absent
	// Known is true when a response's headers arrived, so the units above are
	// what the upstream charged (or the fallback estimate of it) and must be
	// settled, even if the call then failed.
	Known bool
	// Estimated is true when a header was missing and the fallback filled it:
	// PerRow from the query's catalog price, Rows from the rows decoded, and
	// Total = Actual = Units(PerRow, Rows), which never under-counts.
	Estimated bool
}

// CacheHit reports whether the upstream served the answer from its cache,
// free.
func (c Cost) CacheHit() bool { return c.Cache == "hit" }

// Result is the outcome of a list call (ListPage).
type Result struct {
	Rows int  // rows handed to fn
	Cost Cost // of the last attempt whose headers arrived
	// Spent is the units charged across every attempt of the call: what the
	// caller must settle. It differs from Cost.Actual only when an attempt
	// was charged and then failed (a body cut short) and was retried.
	Spent    int64
	Attempts int // requests sent
	// Unanswered: the call failed after a request left without an answer
	// (no status came back: a broken connection, the caller went away), so
	// the upstream may have charged it and the cost is not known.
	Unanswered bool
	// Body is the raw body of the response the rows came from, for a cache
	// to keep and DecodePage to read again; nil when the call failed.
	Body []byte
}

// keeping runs a list call whose decoder reads the body while, up to
// KeepBody bytes, it is kept in Result.Body for the page cache, unless ctx
// says no cache will take it (WithoutBody).
func (c *Client) keeping(ctx context.Context, ep Endpoint, perRow int, v url.Values, decode decodeFunc) (Result, error) {
	if c.cfg.KeepBody <= 0 || ctx.Value(noBodyKey{}) != nil {
		return c.call(ctx, ep.Path(), v, perRow, decode)
	}
	var raw *keptBody
	res, err := c.call(ctx, ep.Path(), v, perRow, func(body io.Reader) (int, error) {
		raw = &keptBody{limit: c.cfg.KeepBody}
		return decode(io.TeeReader(body, raw))
	})
	if err == nil && raw != nil && !raw.over {
		res.Body = raw.buf.Bytes()
	}
	return res, err
}

type noBodyKey struct{}

// WithoutBody marks a list call whose response no cache will keep, such as
// a follow-on page of a long stream: its body is decoded as it arrives and
// not copied, so the page holds its rows only.
func WithoutBody(ctx context.Context) context.Context {
	return context.WithValue(ctx, noBodyKey{}, true)
}

// keptBody keeps what is written to it up to limit bytes, and then nothing.
type keptBody struct {
	buf   bytes.Buffer
	limit int
	over  bool
}

func (k *keptBody) Write(p []byte) (int, error) {
	if !k.over {
		if k.buf.Len()+len(p) > k.limit {
			k.over = true
			k.buf = bytes.Buffer{}
		} else {
			k.buf.Write(p)
		}
	}
	return len(p), nil
}

// decodeFunc reads a 2xx body and returns the rows it handed on.
type decodeFunc func(body io.Reader) (rows int, err error)

// call runs one API call with rate limiting and retries. perRow is the
// catalog price for the cost fallback.
func (c *Client) call(ctx context.Context, path string, v url.Values, perRow int, decode decodeFunc) (Result, error) {
	return c.send(ctx, path, v, nil, perRow, decode)
}

// send is call with an optional JSON body, which makes the request a POST
// (batch-analysis takes its targets in the body).
func (c *Client) send(ctx context.Context, path string, v url.Values, body []byte, perRow int, decode decodeFunc) (Result, error) {
	var res Result
	u := c.base + path
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	for attempt := 1; ; attempt++ {
		if c.cfg.Gate != nil {
			if err := c.cfg.Gate.Wait(ctx); err != nil {
				return res, err
			}
		}
		res.Attempts++
		cost, rows, err := c.attempt(ctx, path, u, body, perRow, decode)
		res.Rows += rows
		if cost.Known {
			res.Cost = cost
			res.Spent += cost.Actual
		}
		if err == nil {
			res.Unanswered = false
			return res, nil
		}
		var apiErr *APIError
		isAPI := errors.As(err, &apiErr)
		res.Unanswered = Unanswered(cost, err)
		if isAPI && apiErr.Status == http.StatusTooManyRequests && c.cfg.Gate != nil {
			c.cfg.Gate.Throttled(ctx, apiErr.RetryAfter)
		}
		if !isAPI || !apiErr.transient || rows > 0 || attempt >= c.cfg.MaxAttempts {
			return res, err
		}
		if ctx.Err() != nil {
			return res, err
		}
		wait := c.backoff(attempt, apiErr)
		if pastDeadline(ctx, c.cfg.Clock.Now(), wait) {
			return res, err
		}
		c.obs.Retry(ctx, attempt, wait, err)
		trace.SpanFromContext(ctx).AddEvent("ahrefs.retry", trace.WithAttributes(
			attribute.Int("attempt", attempt),
			attribute.Int64("wait_ms", wait.Milliseconds()),
			attribute.Int("http.status", apiErr.Status),
			attribute.String("error", err.Error()),
		))
		if serr := c.cfg.Clock.Sleep(ctx, wait); serr != nil {
			return res, fmt.Errorf("%w (gave up retrying: %w)", err, serr)
		}
	}
}

// attempt sends one request and decodes its body. It returns the cost when
// the headers said (or implied) one, and the rows handed on.
func (c *Client) attempt(ctx context.Context, path, u string, body []byte, perRow int, decode decodeFunc) (cost Cost, rows int, err error) {
	start := c.cfg.Clock.Now()
	status := 0
	defer func() {
		c.obs.Response(ctx, path, status, cost, c.cfg.Clock.Now().Sub(start))
	}()
	method, reqBody := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, reqBody = http.MethodPost, bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, reqBody)
	if err != nil {
		return cost, 0, &APIError{Endpoint: path, Message: c.keys.scrub(err.Error())}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "linkgate")
	resp, err := c.http.Do(req)
	if err != nil {
		return cost, 0, c.transportError(ctx, path, 0, err)
	}
	defer resp.Body.Close()
	status = resp.StatusCode

	if status < 200 || status > 299 {
		cost = readCost(resp.Header, perRow, 0, false)
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		e := &APIError{
			Status:    status,
			Endpoint:  path,
			Message:   c.keys.scrub(errorMessage(body)),
			transient: retryableStatus(status),
		}
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.cfg.Clock.Now(), c.cfg.MaxRetryAfter)
		}
		return cost, 0, e
	}

	rows, err = decode(resp.Body)
	cost = readCost(resp.Header, perRow, rows, true)
	if err == nil {
		return cost, rows, nil
	}
	var cb *callbackError
	if errors.As(err, &cb) {
		return cost, rows, cb.err
	}
	var mal *malformedError
	if errors.As(err, &mal) {
		return cost, rows, &APIError{Status: status, Endpoint: path, Message: c.keys.scrub(mal.msg), malformed: true}
	}
	return cost, rows, c.transportError(ctx, path, status, err)
}

// transportError wraps a failure to get or read a response. The caller's own
// cancellation is returned as such, not as an upstream outage.
func (c *Client) transportError(ctx context.Context, path string, status int, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("ahrefs %s: %w", path, ctxErr)
	}
	msg := c.keys.scrub(err.Error())
	var uerr *url.Error
	if errors.As(err, &uerr) {
		// url.Error repeats the URL; keep only the path (the query names the
		// target, which belongs to traces, not to error texts).
		msg = c.keys.scrub(uerr.Err.Error())
	}
	if status != 0 {
		msg = "response body cut short: " + msg
	}
	return &APIError{
		Status:    status,
		Endpoint:  path,
		Message:   msg,
		cause:     &scrubbedError{msg: msg, err: err},
		transient: true,
	}
}

// readCost reads the five cost headers. For a 2xx response (ok) a missing
// header falls back to the catalog price: PerRow = perRow, Rows = rows
// decoded, Total = Units(PerRow, Rows) (0 for a free endpoint, PerRow 0),
// Actual = Total, which never under-counts. For other statuses the cost is Known only if the upstream
// sent the headers.
func readCost(h http.Header, perRow, rows int, ok bool) Cost {
	c := Cost{Cache: h.Get("x-api-cache")}
	rowsH, rowsOK := headerInt(h, "x-api-rows")
	perRowH, perRowOK := headerInt(h, "x-api-units-cost-row")
	total, totalOK := headerInt(h, "x-api-units-cost-total")
	actual, actualOK := headerInt(h, "x-api-units-cost-total-actual")
	if !ok && !rowsOK && !perRowOK && !totalOK && !actualOK {
		return c
	}
	c.Known = true
	c.Rows, c.PerRow, c.Total, c.Actual = int(rowsH), int(perRowH), total, actual
	if !rowsOK {
		c.Rows, c.Estimated = rows, true
	}
	if !perRowOK {
		c.PerRow, c.Estimated = perRow, true
	}
	if !totalOK {
		// A per-row price of 0 is a free endpoint (limits-and-usage): no floor.
		c.Estimated = true
		if c.PerRow > 0 {
			c.Total = Units(c.PerRow, c.Rows)
		}
	}
	if !actualOK {
		c.Actual, c.Estimated = c.Total, true
	}
	return c
}

func headerInt(h http.Header, name string) (int64, bool) {
	v := strings.TrimSpace(h.Get(name))
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
