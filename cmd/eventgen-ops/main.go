// Command eventgen-ops is eventgen's operations command: it prints the DDL
// of the outbox and inbox tables, counts outbox events and inbox messages
// by status, and lists and requeues the failed ones in a database. Run
// "eventgen-ops help" for usage.
package main

import (
	"os"

	"github.com/eventgen/eventgen/internal/opscli"
)

func main() { os.Exit(opscli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
