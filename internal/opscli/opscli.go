// Package opscli implements the eventgen-ops command, eventgen's operations
// on a database: the DDL of the outbox and inbox tables, their counts by
// status, and the failed outbox events and inbox messages. main calls
// [Run]; tests call it too, with their own arguments and output buffers.
//
// The commands need only the database: they build a publish-only Outbox
// and a Consumer without a subscriber, and open no broker connection.
package opscli

import (
	"io"

	"github.com/eventgen/eventgen/internal/cli"
)

// program is the eventgen-ops command.
func program() *cli.Program {
	return &cli.Program{
		Name: "eventgen-ops",
		Intro: `eventgen-ops prints the DDL of eventgen's outbox and inbox tables, counts
the events and messages in them by status, lists and shows them, requeues,
re-executes and deletes them, and serves the web console that does the
same. The generator is the eventgen command.`,
		Commands: []*cli.Command{
			sqlCommand(),
			outboxCommand(),
			inboxCommand(),
			consoleCommand(),
			cli.VersionCommand(`Version prints the module version of eventgen that eventgen-ops was built
from.`, ""),
		},
		ExitStatus: `Exit status: 0 on success, 1 for a database error, 2 for a usage
error.`,
	}
}

// Run runs eventgen-ops with args (without the program name) and returns
// the exit code: [cli.ExitOK], [cli.ExitFailure] or [cli.ExitUsage].
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return program().Run(args, stdin, stdout, stderr)
}
