package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/logsink"
	"github.com/linkgate/linkgate/upstream/ahrefssim"
)

// TestREADMECommands runs the README's shell commands as a reader would,
// in order, from the root of a checkout, with authentication off and then
// on: `make run` (with its variables) starts the server in process on free
// ports, which replace 8080, 9090 and 9102 in the commands; every other
// command runs in bash as written and must succeed (curl fails on an HTTP
// error, a stream on an error line). The start-up banner's commands run
// too. Commands that need what a test cannot have (the real Ahrefs API,
// Docker, Kubernetes, the whole test suite) are listed in the log.
func TestREADMECommands(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "python3", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: scripts/install-test-deps.sh installs it", tool)
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The commands' working directory: the repository's entries, linked,
	// so that the files the commands write stay out of the checkout.
	work := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if name := e.Name(); name != "data" && name != "bin" && !strings.HasPrefix(name, ".") {
			if err := os.Symlink(filepath.Join(root, name), filepath.Join(work, name)); err != nil {
				t.Fatal(err)
			}
		}
	}

	r := &readmeRun{t: t, work: work, env: os.Environ()}
	for _, block := range shellBlocks(string(readme)) {
		var script []string
		for _, c := range block {
			vars, rest := leadingVars(c)
			switch {
			case rest == "make run":
				r.run(script)
				script = nil
				if u := vars["LINKGATE_UPSTREAM_URL"]; u != "" && u != simulatorURL {
					t.Logf("not run (the real Ahrefs API): %s", c)
					continue
				}
				r.start(vars)
			case notRunnable.MatchString(rest):
				t.Logf("not run: %s", c)
			default:
				script = append(script, c)
			}
		}
		r.run(script)
	}
	if r.servers != 2 || r.ran < 15 {
		t.Errorf("ran %d commands against %d servers; the README has more: is its format still what shellBlocks reads?", r.ran, r.servers)
	}
}

// notRunnable are the commands no test can run: images, clusters, and the
// test suite itself.
var notRunnable = regexp.MustCompile(`^(make test|docker |kubectl )`)

// readmeRun is the state of the reader's session: the server running, and
// the environment their shell has exported so far.
type readmeRun struct {
	t       *testing.T
	work    string
	env     []string
	s       *server
	servers int
	ran     int
}

// start stops the running server, as the README asks, and starts one with
// vars as `make run` would, on free ports.
func (r *readmeRun) start(vars map[string]string) {
	t := r.t
	if r.s != nil {
		if err := r.s.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		r.s = nil
	}
	env := map[string]string{
		"LINKGATE_GRPC_ADDR": "127.0.0.1:0", "LINKGATE_HTTP_ADDR": "127.0.0.1:0", "LINKGATE_METRICS_ADDR": "127.0.0.1:0",
		"LINKGATE_DATA_DIR": filepath.Join(r.work, "data"), "LINKGATE_DRAIN_DELAY": "0s",
		// The key's rate would make the test wait, not fail.
		"LINKGATE_UPSTREAM_RPM": "100000",
	}
	for k, v := range vars {
		if strings.HasSuffix(k, "_FILE") && !filepath.IsAbs(v) {
			v = filepath.Join(r.work, v) // relative to the reader's directory
		}
		env[k] = v
	}
	cfg, err := loadConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("make run with %v: %v", vars, err)
	}
	logs := &logsink.Buffer{}
	s, err := start(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatalf("make run with %v: %v\n%s", vars, err, logs)
	}
	r.s = s
	r.servers++
	t.Cleanup(func() {
		if r.s == s {
			s.shutdown()
		}
	})

	r.run(bannerCommands(t, s))
}

// bannerCommands are the commands the start-up banner suggests, after
// setting KEY from caller.key where it asks for a key.
func bannerCommands(t *testing.T, s *server) []string {
	var banner []string
	for _, line := range strings.Split(s.welcome(), "\n") {
		if c := strings.TrimSpace(line); strings.HasPrefix(c, "curl ") || strings.HasPrefix(c, "scripts/grpcurl ") {
			banner = append(banner, c)
		}
	}
	if len(banner) < 5 {
		t.Fatalf("the banner has %d commands:\n%s", len(banner), s.welcome())
	}
	if s.cfg.TenantsFile != "" {
		banner = append([]string{"KEY=$(cat caller.key)"}, banner...)
	}
	return banner
}

// TestBannerOverTLS: with TLS on, the banner's commands trust the
// listeners' CA and send the caller's key, and they work as printed.
func TestBannerOverTLS(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed: scripts/install-test-deps.sh installs it")
	}
	ca := newCA(t, "server CA")
	cfg := testConfig(t, simulator(t, ahrefssim.Config{}))
	dir := t.TempDir()
	cert := ca.issue(t, "linkgate", true)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	writePEM(t, cfg.TLSCertFile, "CERTIFICATE", cert.Certificate[0])
	writePEM(t, cfg.TLSKeyFile, "PRIVATE KEY", keyDER)
	writePEM(t, cfg.TLSCAFile, "CERTIFICATE", ca.cert.Raw)
	s, _ := startTest(t, cfg)

	work := t.TempDir()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	for _, name := range []string{"go.mod", "go.sum", "scripts", "tools"} {
		if err := os.Symlink(filepath.Join(root, name), filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "caller.key"), []byte(keyB), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &readmeRun{t: t, work: work, env: os.Environ(), s: s}
	r.run(bannerCommands(t, s))
	if !strings.Contains(s.welcome(), "https://") {
		t.Errorf("the banner does not say https:\n%s", s.welcome())
	}
}

// run runs commands in one bash, as lines typed into the reader's shell
// (what it exports is kept for the next commands), against the server
// running.
func (r *readmeRun) run(commands []string) {
	t := r.t
	if len(commands) == 0 {
		return
	}
	if r.s == nil {
		t.Fatalf("commands before any make run: %q", commands)
	}
	script := []string{
		"set -euo pipefail -x",
		// curl's exit status says nothing of the HTTP status unless asked.
		`curl() { command curl --fail-with-body --silent --show-error "$@"; }`,
	}
	metrics := r.s.metricsAddr
	if metrics == "" {
		metrics = r.s.httpAddr
	}
	for _, c := range commands {
		c = strings.NewReplacer("127.0.0.1:8080", r.s.httpAddr, "127.0.0.1:9090", r.s.grpcAddr, "127.0.0.1:9102", metrics).Replace(c)
		script = append(script, c)
	}
	envFile := filepath.Join(t.TempDir(), "env")
	script = append(script, "env -0 > "+envFile)
	cmd := exec.Command("bash", "-c", strings.Join(script, "\n"))
	cmd.Dir, cmd.Env = r.work, r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		// The end says which command failed and how.
		t.Fatalf("%v:\n…%s", err, out[max(0, len(out)-4000):])
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(`{"error":`)) {
			t.Errorf("a stream ended with an error:\n%s", out)
		}
	}
	if b, err := os.ReadFile(envFile); err == nil {
		r.env = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	}
	r.ran += len(commands)
}

// shellBlocks returns the commands of every ```sh block of a Markdown
// text: a command per line, continued lines joined, comments and blank
// lines left out.
func shellBlocks(md string) [][]string {
	var blocks [][]string
	var cur []string
	in := false
	pending := ""
	for _, line := range strings.Split(md, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			if c, ok := strings.CutSuffix(line, "\\"); ok {
				pending += c
				continue
			}
			line = pending + line
			pending = ""
			if i := strings.Index(line, "   # "); i >= 0 {
				line = line[:i] // a trailing comment, aligned as the README writes them
			}
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				cur = append(cur, line)
			}
		}
	}
	return blocks
}

// leadingVars splits "A=1 B=2 make run" into its variables and the rest.
func leadingVars(c string) (map[string]string, string) {
	vars := map[string]string{}
	fields := strings.Fields(c)
	for len(fields) > 0 {
		k, v, ok := strings.Cut(fields[0], "=")
		if !ok || k == "" || strings.ContainsAny(k, "'\"$(") {
			break
		}
		vars[k] = v
		fields = fields[1:]
	}
	return vars, strings.Join(fields, " ")
}
