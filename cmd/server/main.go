// Command server runs linkgate: the gRPC API, its REST gateway, and on its
// embedded default a simulator of the upstream and a local bolt ledger.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(command(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// command runs the command line and returns the exit status: 0, 1 when
// linkgate failed, 2 when the command line is wrong.
func command(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if slices.Contains(args, "-hash-key") || slices.Contains(args, "--hash-key") {
		if len(args) != 1 {
			fmt.Fprintln(stderr, "linkgate: -hash-key takes no other argument: it reads the key on standard input")
			return 2
		}
		if err := hashKey(stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "linkgate:", err)
			return 1
		}
		return 0
	}
	err := run(ctx, args, os.Getenv, stdout)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case !errors.As(err, &ue):
		fmt.Fprintln(stderr, "linkgate:", err)
		return 1
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout, ue.fs)
		return 0
	default:
		fmt.Fprintf(stderr, "linkgate: %v\nRun linkgate -h for the flags.\n", ue.err)
		return 2
	}
}

// usageError is a command line that could not be parsed, with the flag
// set it was parsed against (for -h).
type usageError struct {
	fs  *flag.FlagSet
	err error
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// printUsage is -h: how to run linkgate and every flag with its type, its
// variable and its value when not set on the command line.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage:
  linkgate [flags]      serve; every flag is also the LINKGATE_* variable named in its text
  linkgate -hash-key    read an API key on standard input, print its SHA-256 for the tenants file

Flags:
`)
	type entry struct{ name, typ, usage, def string }
	entries := []entry{{"hash-key", "", "read an API key on standard input, print its SHA-256 for the tenants file (LINKGATE_TENANTS_FILE) and exit", ""},
		{"h", "", "print this help and exit", ""}}
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if v, ok := f.Value.(flagValue); ok {
			typ = v.typeName()
		}
		entries = append(entries, entry{f.Name, typ, usage, f.DefValue})
	})
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	for _, e := range entries {
		head := "  -" + e.name
		if e.typ != "" {
			head += " " + e.typ
		}
		text := strings.ReplaceAll(e.usage, "\n", "\n        ")
		switch e.def {
		case "", "0", "0s", "false":
		default:
			if e.typ == "string" {
				text += fmt.Sprintf(" (default %q)", e.def)
			} else {
				text += " (default " + e.def + ")"
			}
		}
		fmt.Fprintf(w, "%s\n        %s\n", head, text)
	}
}

// typeName is what a flag's value is, for -h.
func (f flagValue) typeName() string {
	switch f.ptr.(type) {
	case *string, *secret:
		return "string"
	case *int, *int64:
		return "int"
	case *float64:
		return "number"
	case *bool:
		return "true|false"
	case *time.Duration:
		return "duration"
	case *byteSize:
		return "size"
	}
	return "value"
}

// welcome is printed when the upstream is the built-in simulator: where
// linkgate listens and first requests to try, each as it must be written
// here (with the caller's key when authentication is on, over TLS when
// that is on).
func (s *server) welcome() string {
	var b strings.Builder
	what := "on its embedded default: the upstream is a built-in simulator"
	auth := "authentication is off (loopback only)"
	if s.cfg.TenantsFile != "" {
		what = "with the built-in simulator as its upstream"
		auth = "callers authenticate with the keys of " + s.cfg.TenantsFile
	}
	fmt.Fprintf(&b, "\nlinkgate is running %s,\nthe ledger is %s, %s.\n\n",
		what, filepath.Join(s.cfg.DataDir, "ledger.db"), auth)

	// Over TLS the clients trust the gateway's CA file, or the certificate
	// itself (self-signed) without one.
	scheme, curl, grpcurl := "http", "curl", "scripts/grpcurl -plaintext"
	if s.cfg.TLSCertFile != "" {
		ca := s.cfg.TLSCAFile
		if ca == "" {
			ca = s.cfg.TLSCertFile
		}
		scheme, curl, grpcurl = "https", "curl --cacert "+ca, "scripts/grpcurl -cacert "+ca
	}
	rest := scheme + "://" + s.httpAddr
	metrics := rest + "/metrics"
	if s.cfg.TenantsFile != "" {
		metrics = "http://" + s.metricsAddr + "/metrics"
		if s.metricsAddr == "" {
			metrics = "off"
		}
	}
	fmt.Fprintf(&b, "  REST     %s    (OpenAPI: %s/openapi.json)\n  gRPC     %s\n  metrics  %s\n\n", rest, rest, s.grpcAddr, metrics)

	if s.cfg.TenantsFile != "" {
		b.WriteString("Set KEY to a caller's API key (whose SHA-256 is in the tenants file), then try:\n")
		curl += ` -H "Authorization: Bearer $KEY"`
		grpcurl += ` -H "authorization: Bearer $KEY"`
	} else {
		b.WriteString("Try:\n")
	}
	fmt.Fprintf(&b, `  %[1]s '%[3]s/v1/backlinks?target=example.com&page_size=3'
  %[1]s -N '%[3]s/v1/backlinks:stream?target=sized-2500.example&page_size=1000'
  %[1]s '%[3]s/v1/quota'
  %[2]s -d '{"target":"example.com","page_size":3}' %[4]s linkgate.v1.BacklinksService/ListBacklinks
  %[2]s %[4]s list

`, curl, grpcurl, rest, s.grpcAddr)
	return b.String()
}
