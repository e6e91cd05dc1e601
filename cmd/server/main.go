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
