// Command eventgen generates a Go package of typed events, outbox publishers
// and handler interfaces from an events spec. Run "eventgen help" for usage.
package main

import (
	"os"

	"github.com/eventgen/eventgen/internal/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
