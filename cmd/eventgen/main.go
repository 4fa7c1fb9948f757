// Command eventgen generates a Go package of typed events, outbox publishers
// and handler interfaces from an events spec. Run "eventgen help" for usage.
//
// It links the generator only, so that go:generate and go tool build it
// quickly and add few modules; the commands that work on a database are
// in cmd/eventgen-ops.
package main

import (
	"os"

	"github.com/eventgen/eventgen/internal/gencli"
)

func main() { os.Exit(gencli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
