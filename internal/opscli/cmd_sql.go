package opscli

import (
	"flag"
	"fmt"
	"strings"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

func sqlCommand() *cli.Command {
	return &cli.Command{
		Name:     "sql",
		Synopsis: "-dialect postgres|mysql|sqlite [-outbox-table T] [-inbox-table T]",
		Summary:  "print the DDL of the outbox and inbox tables",
		Help: `Sql prints the statements that create the outbox and inbox tables on the
given database, for teams that apply schema changes with their own migration
tool instead of Outbox.Migrate and Consumer.Migrate. Apply them once, in
order: the last ones record the schema version, so that Migrate later finds
nothing to do. Table names may be schema-qualified (schema.table).`,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var dialect, outbox, inbox string
			fs.StringVar(&dialect, "dialect", "", "the `database`: postgres, mysql or sqlite (required)")
			fs.StringVar(&outbox, "outbox-table", eventgen.DefaultOutboxTable, "the outbox `table`")
			fs.StringVar(&inbox, "inbox-table", eventgen.DefaultInboxTable, "the inbox `table`")
			return func(e *cli.Env) int {
				if dialect == "" {
					fmt.Fprintln(e.Stderr, "eventgen-ops sql: -dialect is required: postgres, mysql or sqlite")
					return cli.ExitUsage
				}
				out, err := eventgen.OutboxSchema(dialect, outbox)
				if err != nil {
					fmt.Fprintf(e.Stderr, "eventgen-ops sql: %v\n", err)
					return cli.ExitUsage
				}
				in, err := eventgen.InboxSchema(dialect, inbox)
				if err != nil {
					fmt.Fprintf(e.Stderr, "eventgen-ops sql: %v\n", err)
					return cli.ExitUsage
				}
				var b strings.Builder
				printed := make(map[string]bool) // both tables create the migrations table
				for _, part := range []struct {
					what, table string
					stmts       []string
				}{{"outbox", outbox, out}, {"inbox", inbox, in}} {
					if part.what != "outbox" {
						b.WriteString("\n")
					}
					fmt.Fprintf(&b, "-- The eventgen %s table %s (%s).\n", part.what, part.table, dialect)
					for _, s := range part.stmts {
						if !printed[s] {
							printed[s] = true
							b.WriteString(s + ";\n")
						}
					}
				}
				fmt.Fprint(e.Stdout, b.String())
				return cli.ExitOK
			}
		},
	}
}
