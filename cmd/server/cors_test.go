package main

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

func TestCORSHeaders(t *testing.T) {
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.CORSOrigins = "http://allowed.test:3000, https://app.example"
	s, _ := startTest(t, cfg)
	url := "http://" + s.httpAddr + "/v1/quota"
	do := func(method, origin string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Origin", origin)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	preflight := map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization, content-type"}

	t.Run("preflight of an allowed origin", func(t *testing.T) {
		r := do("OPTIONS", "http://allowed.test:3000", preflight)
		h := r.Header
		if r.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "http://allowed.test:3000" ||
			h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "content-type") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "GET") ||
			h.Get("Access-Control-Max-Age") == "" || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("%d %v", r.StatusCode, h)
		}
	})
	t.Run("preflight of another origin", func(t *testing.T) {
		r := do("OPTIONS", "http://evil.test", preflight)
		if r.StatusCode != 403 || r.Header.Get("Access-Control-Allow-Origin") != "" || r.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%d %v", r.StatusCode, r.Header)
		}
	})
	t.Run("preflight asking an unlisted header", func(t *testing.T) {
		r := do("OPTIONS", "http://allowed.test:3000", map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-evil"})
		if r.StatusCode != 403 {
			t.Errorf("%d", r.StatusCode)
		}
	})
	t.Run("request of an allowed origin", func(t *testing.T) {
		r := do("GET", "https://app.example", map[string]string{"Authorization": "Bearer " + keyA})
		h := r.Header
		if r.StatusCode != 200 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			!strings.Contains(h.Get("Access-Control-Expose-Headers"), "Retry-After") || !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("%d %v", r.StatusCode, h)
		}
	})
	t.Run("request of another origin gets no CORS headers", func(t *testing.T) {
		r := do("GET", "http://evil.test", map[string]string{"Authorization": "Bearer " + keyA})
		if r.Header.Get("Access-Control-Allow-Origin") != "" || r.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%v", r.Header)
		}
	})
	t.Run("a wildcard is refused at configuration", func(t *testing.T) {
		env := map[string]string{"LINKGATE_CORS_ORIGINS": "*"}
		if _, err := loadConfig(nil, func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "LINKGATE_CORS_ORIGINS") {
			t.Errorf("%v", err)
		}
	})
}

// chromium finds a headless browser, or skips unless CI requires one.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("LINKGATE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("LINKGATE_REQUIRE_CHROMIUM=1 but no chromium on PATH: apt-get install -y chromium")
	}
	t.Skip("chromium is not installed (apt-get install -y chromium); set LINKGATE_REQUIRE_CHROMIUM=1 to make this a failure")
	return ""
}

// page is a tiny web page whose script calls the REST API with a key and
// writes the outcome into its title.
const page = `<!doctype html><html><head><title>pending</title></head><body><script>
fetch(%q, {headers: {"Authorization": "Bearer %s"}, credentials: "include"})
  .then(r => r.json().then(j => { document.title = "status " + r.status + " tenant " + (j.tenant && j.tenant.tenant); }))
  .catch(e => { document.title = "blocked " + e.name; });
</script></body></html>`

// TestCORSInChromium loads a page from an allowed origin and one from
// another origin in headless Chromium; both fetch the REST API with an
// Authorization header, which needs a preflight.
func TestCORSInChromium(t *testing.T) {
	bin := chromium(t)
	// The page servers listen first, so the allowed origin is known when
	// linkgate starts, and serve once linkgate's address is known.
	allowed, other := httptest.NewUnstartedServer(nil), httptest.NewUnstartedServer(nil)
	defer allowed.Close()
	defer other.Close()

	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	cfg.CORSOrigins = "http://" + allowed.Listener.Addr().String()
	s, _ := startTest(t, cfg)
	api := "http://" + s.httpAddr + "/v1/quota"
	for _, srv := range []*httptest.Server{allowed, other} {
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, page, api, keyA)
		})
		srv.Start()
	}

	title := func(url string) string {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
			"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url).Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		m := regexp.MustCompile(`<title>(.*?)</title>`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no title in %s", out)
		}
		return html.UnescapeString(string(m[1]))
	}
	if got := title(allowed.URL); got != "status 200 tenant a" {
		t.Errorf("page on the allowed origin: %q", got)
	}
	if got := title(other.URL); !strings.HasPrefix(got, "blocked") {
		t.Errorf("page on another origin: %q, want blocked", got)
	}
}
