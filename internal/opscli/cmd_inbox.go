package opscli

import (
	"context"
	"flag"
	"fmt"
	"strconv"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

func inboxCommand() *cli.Command {
	return &cli.Command{
		Name:    "inbox",
		Summary: "count, list, re-execute, skip, delete a group's messages",
		Help: `Inbox works on the inbox table of a consumer group: it counts the
group's messages by status, and lists the messages whose handler failed
for good, or that could not be decoded, and makes them due again. For
per-key ordering, it lists the keys blocked behind an event and skips a
key's next event.`,
		Subcommands: []*cli.Command{
			inboxStatsCommand(),
			{
				Name:     "failed",
				Synopsis: "-group G [-table T] [-limit N] [-v] [-json]",
				Summary:  "list a group's failed messages, oldest first",
				Help: `Failed lists the group's messages that failed for good, oldest first: their
handler failed MaxRetries times, or they could not be decoded. The last
error holds a panic's stack; -v prints it whole. BLOCKS (waiting in -json)
is set on a failed event its key is blocked on (per-key ordering): how many
of the key's events are held behind it (see inbox blocked).` + dbHelp,
				Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
					var f inboxFlags
					f.define(fs)
					limit, verbose := listFlags(fs)
					asJSON := fs.Bool("json", false, "print the messages as a JSON array")
					return func(e *cli.Env) int {
						return withConsumer(e, "inbox failed", &f, func(ctx context.Context, c *eventgen.Consumer) int {
							rows, err := c.Failed(ctx, *limit)
							if err != nil {
								return fail(e, "inbox failed", err)
							}
							waiting, err := blockedBehind(ctx, c)
							if err != nil {
								return fail(e, "inbox failed", err)
							}
							if *asJSON {
								out := make([]rowJSON, len(rows))
								for i, r := range rows {
									out[i] = toJSON(eventgen.StoredRow{MessageID: r.ID, Name: r.Name, Version: r.Version, Topic: r.Topic, Key: r.Key,
										Sequence: r.Sequence, Source: r.Source, Status: "failed", Attempts: r.Attempt, EventTime: r.Time, FinishedAt: r.FailedAt,
										LastError: r.Error, Headers: r.Headers, Payload: r.Payload})
									out[i].Waiting = waiting[r.ID]
								}
								return printJSON(e, "inbox failed", out)
							}
							t := newTable("MESSAGE ID", "NAME", "VERSION", "TOPIC", "KEY", "SOURCE", "ATTEMPTS", "SENT", "FAILED", "BLOCKS", "LAST ERROR")
							for _, r := range rows {
								blocks := ""
								if n, ok := waiting[r.ID]; ok {
									blocks = strconv.Itoa(n)
								}
								t.add(r.ID, r.Name, strconv.Itoa(r.Version), r.Topic, r.Key, r.Source,
									strconv.Itoa(r.Attempt), formatTime(r.Time), formatTime(r.FailedAt), blocks, r.Error)
							}
							printFailed(e, t, "messages of group "+f.group, f.table, *limit, *verbose)
							return cli.ExitOK
						})
					}
				},
			},
			actionCommand(true, "reexecute", "make a group's failed messages due again", `Reexecute makes the group's failed messages due again with a fresh budget of
attempts, so that a running consumer of the group handles them. Name them
by message id with -id or by row id with -row (both repeatable), or take
every failed message with -all. Asking for an id that is not a failed
message is an error, after the others are made due.`, actionText{
				action: eventgen.ActionReexecute, applies: "failed", done: "made due again; a running consumer of the group handles them again",
				unchanged: "unknown, or already made due", all: "re-execute every failed message of the group",
			}),
			actionCommand(true, "delete", "discard a group's failed messages", `Delete discards the group's failed messages: their rows are deleted. Name
them by message id with -id or by row id with -row, or take every failed
message with -all. A message the broker delivers again after its row is
gone is handled as a new one.`, actionText{
				action: eventgen.ActionDelete, applies: "failed", done: "deleted",
				unchanged: "unknown, or not failed", all: "delete every failed message of the group",
			}),
			listCommand(true),
			showCommand(true),
			inboxBlockedCommand(),
			inboxSkipCommand(),
		},
	}
}

// inboxFlags are the flags of the inbox commands.
type inboxFlags struct {
	dbFlags
	group string
}

func (f *inboxFlags) define(fs *flag.FlagSet) {
	f.dbFlags.define(fs, "inbox", eventgen.DefaultInboxTable)
	fs.StringVar(&f.group, "group", "", "the consumer `group` (required)")
}

// withConsumer runs fn with a Consumer of the group of f made without a
// subscriber: it reaches its table and no broker.
func withConsumer(e *cli.Env, name string, f *inboxFlags, fn func(context.Context, *eventgen.Consumer) int) int {
	if f.group == "" {
		fmt.Fprintf(e.Stderr, "%s %s: -group is required\n", e.Program, name)
		return cli.ExitUsage
	}
	ctx := context.Background()
	db, code := open(ctx, e, name, &f.dbFlags)
	if db == nil {
		return code
	}
	defer db.Close()
	c, err := eventgen.NewConsumer(db, nil, eventgen.ConsumerOptions{Group: f.group, Table: f.table, Logger: logger(e)})
	if err != nil {
		fmt.Fprintf(e.Stderr, "%s %s: %v\n", e.Program, name, err)
		return cli.ExitUsage
	}
	return fn(ctx, c)
}
