package opscli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/internal/dbopen"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

func outboxCommand() *cli.Command {
	return &cli.Command{
		Name:    "outbox",
		Summary: "count, list, show, requeue and delete outbox events",
		Help: `Outbox works on the outbox table of a database: it counts the events by
status, and lists the events that used up their publish retries and
returns them to the relay.`,
		Subcommands: []*cli.Command{
			outboxStatsCommand(),
			{
				Name:     "failed",
				Synopsis: "[-table T] [-limit N] [-v] [-json]",
				Summary:  "list failed events, oldest first",
				Help: `Failed lists the events that the relay gave up on after MaxRetries
attempts, oldest first, with the last publish error.` + dbHelp,
				Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
					var f dbFlags
					f.define(fs, "outbox", eventgen.DefaultOutboxTable)
					limit, verbose := listFlags(fs)
					asJSON := fs.Bool("json", false, "print the events as a JSON array")
					return func(e *cli.Env) int {
						return withOutbox(e, "outbox failed", &f, func(ctx context.Context, ob *eventgen.Outbox) int {
							rows, err := ob.Failed(ctx, *limit)
							if err != nil {
								return fail(e, "outbox failed", err)
							}
							if *asJSON {
								out := make([]rowJSON, len(rows))
								for i, r := range rows {
									out[i] = rowJSON{ID: r.ID, MessageID: r.MessageID, Name: r.Name, Version: r.Version, Topic: r.Topic,
										Key: r.Key, Source: r.Source, Status: "failed", Attempts: r.Attempts, CreatedAt: &r.CreatedAt, LastError: r.LastError}
								}
								return printJSON(e, "outbox failed", out)
							}
							t := newTable("ID", "MESSAGE ID", "NAME", "VERSION", "TOPIC", "KEY", "ATTEMPTS", "CREATED", "LAST ERROR")
							for _, r := range rows {
								t.add(strconv.FormatInt(r.ID, 10), r.MessageID, r.Name, strconv.Itoa(r.Version), r.Topic, r.Key,
									strconv.Itoa(r.Attempts), formatTime(r.CreatedAt), r.LastError)
							}
							printFailed(e, t, "events", f.table, *limit, *verbose)
							return cli.ExitOK
						})
					}
				},
			},
			actionCommand(false, "requeue", "return failed events to the relay", `Requeue returns failed events to pending with a fresh retry budget, so that
a running relay publishes them again. Name them with -id (repeatable) or
take every failed event with -all. Asking for an id that is not a failed
event is an error, after the others are requeued.`, actionText{
				action: eventgen.ActionRequeue, applies: "failed", done: "made due again; the relay publishes them again",
				unchanged: "unknown, or already made due", all: "requeue every failed event",
			}),
			actionCommand(false, "delete", "delete failed, scheduled or pending events", `Delete deletes events that are failed, scheduled (published with a delay) or
pending, so that they are never published: name them with -id, or take
every failed event with -all. Events being published or published are
left alone; asking for one is an error, after the others are deleted.`, actionText{
				action: eventgen.ActionDelete, applies: "failed, scheduled or pending", done: "deleted; they are never published",
				unchanged: "unknown, or being published or published", all: "delete every failed event",
			}),
			actionCommand(false, "publish-now", "make scheduled events due now", `Publish-now makes scheduled events (published with WithDelay or
WithDeliverAt) due at once, so that a running relay publishes them.`, actionText{
				action: eventgen.ActionPublishNow, applies: "scheduled", done: "made due now; the relay publishes them",
				unchanged: "unknown, or not scheduled",
			}),
			listCommand(false),
			showCommand(false),
		},
	}
}

// dbHelp ends the help of the commands that take a database.
const dbHelp = `

The database DSN is read from the environment variable ` + EnvDSN + `, or
from the first line of the file -db-file names, or from -db (which puts
it, and its password, in ps output and shell history). It is
postgres://user:pass@host:5432/db, mysql://user:pass@host:3306/db,
user:pass@tcp(host:3306)/db, or the path of a SQLite file (which must
exist). A DSN of no known form is refused. Passwords are never printed.`

// EnvDSN is the environment variable the database DSN is read from.
const EnvDSN = "EVENTGEN_DSN"

// dbFlags are the flags of the commands that work on a table.
type dbFlags struct {
	dsn, dsnFile string
	table        string
}

func (f *dbFlags) define(fs *flag.FlagSet, what, table string) {
	fs.StringVar(&f.dsn, "db", "", "the database `DSN`; prefer $"+EnvDSN+" or -db-file, which keep the password out of ps")
	fs.StringVar(&f.dsnFile, "db-file", "", "read the database DSN from the first line of `file`")
	fs.StringVar(&f.table, "table", table, "the "+what+" `table`")
}

// listFlags defines the flags of the commands that list failed rows.
func listFlags(fs *flag.FlagSet) (limit *int, verbose *bool) {
	limit = fs.Int("limit", 100, "list at most `N` rows")
	verbose = fs.Bool("v", false, "print each row's whole last error after the list")
	return limit, verbose
}

// open opens the database of f. It prints what went wrong and returns a
// nonzero exit code if it cannot.
func open(ctx context.Context, e *cli.Env, name string, f *dbFlags) (*bun.DB, int) {
	dsn, err := f.resolve()
	if err != nil {
		fmt.Fprintf(e.Stderr, "%s %s: %v\n", e.Program, name, err)
		return nil, cli.ExitUsage
	}
	db, err := dbopen.OpenExisting(ctx, dsn)
	if err != nil {
		return nil, fail(e, name, err)
	}
	return db, cli.ExitOK
}

// withOutbox runs fn with a publish-only Outbox on the table of f: it
// reaches its table and no broker.
func withOutbox(e *cli.Env, name string, f *dbFlags, fn func(context.Context, *eventgen.Outbox) int) int {
	ctx := context.Background()
	db, code := open(ctx, e, name, f)
	if db == nil {
		return code
	}
	defer db.Close()
	ob, err := eventgen.NewOutbox(db, nil, eventgen.OutboxOptions{Table: f.table, Logger: logger(e)})
	if err != nil {
		fmt.Fprintf(e.Stderr, "%s %s: %v\n", e.Program, name, err)
		return cli.ExitUsage
	}
	return fn(ctx, ob)
}

// logger returns the logger of the runtime objects the commands build.
func logger(e *cli.Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// fail prints err for command name and returns cli.ExitFailure.
func fail(e *cli.Env, name string, err error) int {
	fmt.Fprintf(e.Stderr, "%s %s: %v\n", e.Program, name, err)
	return cli.ExitFailure
}

// printFailed prints a list of failed rows, or says there are none.
func printFailed(e *cli.Env, t *table, what, tableName string, limit int, verbose bool) {
	if len(t.rows) == 0 {
		fmt.Fprintf(e.Stderr, "no failed %s in %s\n", what, tableName)
		return
	}
	t.write(e.Stdout)
	if len(t.rows) == limit {
		fmt.Fprintf(e.Stderr, "showing the oldest %d failed %s; raise -limit for more\n", limit, what)
	}
	if verbose {
		t.writeErrors(e.Stdout)
	}
}

// writeErrors writes each row's whole last error, under its first cell.
func (t *table) writeErrors(w io.Writer) {
	for _, r := range t.rows {
		fmt.Fprintf(w, "\n%s %s:\n", t.header[0], printable(r.cells[0]))
		for line := range strings.SplitSeq(r.lastError, "\n") {
			fmt.Fprintf(w, "\t%s\n", printable(line))
		}
	}
}

// table is a list of rows whose last column is an error, printed aligned,
// with the error cut to its first line.
type table struct {
	header []string
	rows   []row
}

type row struct {
	cells     []string
	lastError string
}

func newTable(header ...string) *table { return &table{header: header} }

// add appends a row: its cells, the last being the row's error.
func (t *table) add(cells ...string) {
	last := len(cells) - 1
	t.rows = append(t.rows, row{cells: cells[:last], lastError: cells[last]})
}

// maxErrorWidth bounds the error column, in characters.
const maxErrorWidth = 100

func (t *table) write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		cells := make([]string, 0, len(r.cells)+1)
		for _, c := range r.cells {
			cells = append(cells, cell(c))
		}
		first, _, more := strings.Cut(r.lastError, "\n")
		first = printable(first)
		if rs := []rune(first); len(rs) > maxErrorWidth {
			first, more = string(rs[:maxErrorWidth]), true
		}
		if more {
			first += " …"
		}
		fmt.Fprintln(tw, strings.Join(append(cells, first), "\t"))
	}
	tw.Flush()
}

// cell returns s for a table cell: printable, and "-" when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(printable(s), "\t", " ")
}

// printable replaces control characters, which could rewrite the terminal,
// with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\t' || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
}

// formatTime formats t in UTC to the second, or "-" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// int64List is a repeatable flag of row ids.
type int64List []int64

func (l *int64List) String() string { return fmt.Sprint([]int64(*l)) }

func (l *int64List) Set(s string) error {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return errors.New("not a row id (a positive integer)")
	}
	if !slices.Contains(*l, id) {
		*l = append(*l, id)
	}
	return nil
}

// stringList is a repeatable flag of message ids.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	if s == "" {
		return errors.New("empty id")
	}
	if !slices.Contains(*l, s) {
		*l = append(*l, s)
	}
	return nil
}
