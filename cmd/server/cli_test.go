package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestCommandLine: -h lists every flag with its type (none as "value"),
// -hash-key among them, and exits 0; a stray argument or an unknown flag
// is refused with status 2 before anything starts.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		stdin        string
		code         int
		stdout, errs []string // what each must contain
	}{
		{args: []string{"-h"}, code: 0, stdout: []string{"-hash-key\n", "-grpc-addr string\n", "-upstream-rpm number\n",
			"-lease duration\n", "-memory-limit size\n", "-budget-units int\n", "-page-cache-shared true|false\n",
			"($LINKGATE_GRPC_ADDR) (default \"127.0.0.1:9090\")", "-log-level string\n"}},
		{args: []string{"--help"}, code: 0, stdout: []string{"Usage:"}},
		{args: []string{"stray"}, code: 2, errs: []string{`unexpected argument "stray"`, "linkgate -h"}},
		{args: []string{"-grpc-addr", "127.0.0.1:0", "extra"}, code: 2, errs: []string{`unexpected argument "extra"`}},
		{args: []string{"-nope"}, code: 2, errs: []string{"flag provided but not defined: -nope"}},
		{args: []string{"-upstream-rpm", "lots"}, code: 2, errs: []string{`invalid value "lots" for flag -upstream-rpm`}},
		{args: []string{"-hash-key"}, stdin: "k3y\n", code: 0, stdout: []string{sum("k3y") + "\n"}},
		{args: []string{"-hash-key", "k3y"}, code: 2, errs: []string{"-hash-key takes no other argument"}},
		{args: []string{"-hash-key"}, code: 1, errs: []string{"no key on standard input"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := command(t.Context(), tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			for _, want := range tc.errs {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if strings.Contains(stdout.String(), " value\n") {
				t.Errorf("a flag's type shows as value:\n%s", stdout.String())
			}
		})
	}
}

// TestStartLogNamesTheMetricsListener: with authentication off /metrics is
// on the REST listener, and the start-up log says so rather than naming
// LINKGATE_METRICS_ADDR, where nothing listens.
func TestStartLogNamesTheMetricsListener(t *testing.T) {
	s, logs := startServer(t, nil)
	var logged string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"starting linkgate"`) {
			logged, _ = field(t, line, "config", "security", "metrics").(string)
		}
	}
	if logged != "the REST listener" {
		t.Errorf("the start-up log names /metrics at %q, want the REST listener:\n%s", logged, logs)
	}
	if code, body, _ := restCall(t, nil, http.MethodGet, "http://"+s.httpAddr+"/metrics", "", ""); code != http.StatusOK ||
		!strings.Contains(body, "linkgate_") {
		t.Errorf("GET /metrics on the REST listener: %d %.200s", code, body)
	}
	if !strings.Contains(s.welcome(), "metrics  http://"+s.httpAddr+"/metrics") {
		t.Errorf("the banner does not say where /metrics is:\n%s", s.welcome())
	}
}
