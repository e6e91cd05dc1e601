// Command server runs linkgate: the gRPC API, its REST gateway, and on its
// embedded default a simulator of the upstream and a local bolt ledger.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) == 2 && (os.Args[1] == "-hash-key" || os.Args[1] == "--hash-key") {
		// Prints the SHA-256 of the API key on stdin, for the tenants file.
		if err := hashKey(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "linkgate:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "linkgate:", err)
		os.Exit(1)
	}
}
