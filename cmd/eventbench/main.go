// Command eventbench measures what eventgen's outbox and inbox cost on a
// database and broker of your choice, side by side with the raw limits of
// both and with Watermill's forwarder, the way pgbench sizes a database.
//
//	go run ./cmd/eventbench                                   # SQLite + in-process broker
//	go run ./cmd/eventbench -db 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//	    -broker amqp://guest:guest@127.0.0.1:5672/ -json bench.json
//
// Run it with -h for every flag.
package main

import (
	"os"

	"github.com/eventgen/eventgen/internal/bench"
)

func main() { os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr)) }
