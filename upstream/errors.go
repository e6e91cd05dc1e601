package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// Sentinels for errors.Is. An *APIError matches the one of its status. They let the service map upstream
// failures to canonical codes without knowing HTTP.
var (
	// ErrBadRequest: the upstream rejected the parameters (400, or another
	// 4xx without a meaning of its own). Never retried.
	ErrBadRequest = errors.New("upstream: bad request")
	// ErrUnauthorized: the key is missing, wrong or expired (401). Never retried.
	ErrUnauthorized = errors.New("upstream: unauthorized")
	// ErrForbidden: the plan lacks the endpoint or the units ran out (403).
	// Never retried.
	ErrForbidden = errors.New("upstream: forbidden")
	// ErrNotFound: no data for the target or date (404). Never retried.
	ErrNotFound = errors.New("upstream: not found")
	// ErrRateLimited: the upstream answered 429 (after retries).
	ErrRateLimited = errors.New("upstream: rate limited")
	// ErrUpstreamUnavailable: a 5xx, a transport failure, a body cut short,
	// or a response that is not what the API documents.
	ErrUpstreamUnavailable = errors.New("upstream: unavailable")
)

// APIError is a failed exchange with the upstream: a non-2xx status, a
// transport failure (Status 0), or a 2xx body that could not be read.
// Its text never contains the API key.
type APIError struct {
	Status     int           // HTTP status; 0 when no response arrived
	Message    string        // the upstream's "error" text, or a short excerpt of a body that is not JSON
	RetryAfter time.Duration // from Retry-After, capped; 0 when absent
	Endpoint   string        // the URL path, e.g. /v3/site-explorer/refdomains (never the query string)

	cause     error // transport or read error; what Unwrap returns
	transient bool  // worth another attempt (429, 5xx, transport, truncated body)
	malformed bool  // a 2xx body that is not the documented shape
}

// Error says where and how the exchange failed, without the key or the query.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("ahrefs")
	if e.Endpoint != "" {
		b.WriteString(" ")
		b.WriteString(e.Endpoint)
	}
	switch {
	case e.malformed:
		b.WriteString(": malformed response")
	case e.Status == 0:
		b.WriteString(": transport error")
	default:
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Unwrap exposes the transport or read error, scrubbed, for errors.Is
// (e.g. syscall.ECONNREFUSED).
func (e *APIError) Unwrap() error { return e.cause }

// Is matches the sentinel of the error's status.
func (e *APIError) Is(target error) bool {
	return target == e.sentinel()
}

func (e *APIError) sentinel() error {
	switch {
	case e.malformed || e.Status == 0 || e.Status >= 500 || e.Status == http.StatusRequestTimeout:
		return ErrUpstreamUnavailable
	case e.Status == http.StatusBadRequest:
		return ErrBadRequest
	case e.Status == http.StatusUnauthorized:
		return ErrUnauthorized
	case e.Status == http.StatusForbidden:
		return ErrForbidden
	case e.Status == http.StatusNotFound:
		return ErrNotFound
	case e.Status == http.StatusTooManyRequests:
		return ErrRateLimited
	case e.Status >= 400:
		return ErrBadRequest
	}
	// 1xx/3xx that escaped the HTTP client: the upstream is not behaving.
	return ErrUpstreamUnavailable
}

// retryableStatus reports whether another attempt may succeed: rate limits
// and server-side failures. 4xx are the request's fault and would fail (and
// could cost) again.
func retryableStatus(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
}

// mayHaveCharged reports whether a failed call may still have been
// charged although its cost is unknown: a request left and no status came
// back (a broken connection, a body never read, the caller went away while
// it was in flight). An answered error, a refused connection and a call
// refused before sending charge nothing.
func mayHaveCharged(err error) bool {
	if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status == 0
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Unanswered reports whether a call that failed with err, its response's
// cost headers c, may have been charged a cost nobody knows: no headers
// came and the request may have left (mayHaveCharged).
func Unanswered(c Cost, err error) bool { return !c.Known && mayHaveCharged(err) }

// maxErrorBody bounds what is read of an error response: enough for any
// {"error": ...} the API sends, small enough that a CDN page cannot hurt.
const maxErrorBody = 64 << 10

// maxMessage bounds APIError.Message so that logs stay readable.
const maxMessage = 300

// errorMessage extracts the upstream's "error" text, or a whitespace-collapsed
// excerpt of a body that is not the documented JSON (an HTML page from a CDN).
func errorMessage(body []byte) string {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var s string
		if json.Unmarshal(e.Error, &s) == nil {
			return excerpt(s)
		}
		return excerpt(string(e.Error))
	}
	return excerpt(string(body))
}

// excerpt collapses whitespace, drops invalid UTF-8 and control characters,
// and cuts the text at maxMessage runes.
func excerpt(s string) string {
	s = strings.ToValidUTF8(s, "")
	var b strings.Builder
	space, n := false, 0
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if n == maxMessage {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// scrubber removes the key from any text that could reach a log or a caller.
// The key only ever travels in the Authorization header, so this is a second
// line of defence against an error that echoes a request (a proxy, a
// misbehaving RoundTripper, an upstream that quotes the header).
type scrubber string

func (k scrubber) scrub(s string) string {
	if k == "" {
		return s
	}
	return strings.ReplaceAll(s, string(k), "[REDACTED]")
}

// scrubbedError answers errors.Is for the chain of err (so
// context.DeadlineExceeded or syscall.ECONNREFUSED are still found) while its
// text is scrubbed. It deliberately has no Unwrap: the raw error could carry
// the key in its text (a RoundTripper that echoes the request).
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string        { return e.msg }
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }
