package opscli

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// Per-key ordering: "inbox blocked" lists a group's blocked keys and
// "inbox skip" moves one past its next event.

func inboxBlockedCommand() *cli.Command {
	return &cli.Command{
		Name:     "blocked",
		Synopsis: "-group G [-table T] [-limit N] [-v] [-json]",
		Summary:  "list a group's blocked keys: those whose next event failed, waits or never arrived",
		Help: `Blocked lists the keys whose events wait in the group, those waiting longest
first. A group applies the events of each key in sequence, so a key is
blocked while its next event failed for good, waits for a retry, runs, or
never arrived; the key's later events are held behind it, and other keys go
on. For each key it prints the last sequence applied, the next event's
sequence, status (failed, pending, processing or missing) and message id,
how many events are held behind it and since when, and the next event's
last error.

Unblock a key by re-executing its next event (inbox reexecute -id
MESSAGE_ID) once its handler can succeed, or by skipping it (inbox skip).
-json prints a JSON array.` + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f inboxFlags
			f.define(fs)
			limit, verbose := listFlags(fs)
			asJSON := fs.Bool("json", false, "print the keys as a JSON array")
			return func(e *cli.Env) int {
				const name = "inbox blocked"
				if *limit <= 0 {
					return usage(e, name, "-limit must be positive")
				}
				return withConsumer(e, name, &f, func(ctx context.Context, c *eventgen.Consumer) int {
					keys, err := c.BlockedKeys(ctx, *limit)
					if err != nil {
						return fail(e, name, err)
					}
					if *asJSON {
						out := make([]blockedJSON, len(keys))
						for i, b := range keys {
							out[i] = toBlockedJSON(b)
						}
						return printJSON(e, name, out)
					}
					if len(keys) == 0 {
						fmt.Fprintf(e.Stderr, "no blocked keys of group %s in %s\n", c.Group(), c.Table())
						return cli.ExitOK
					}
					t := newTable("KEY", "TOPIC", "SOURCE", "APPLIED", "NEXT", "STATUS", "MESSAGE ID", "WAITING", "SINCE", "LAST ERROR")
					for _, b := range keys {
						t.add(b.Key, b.Topic, b.Source, strconv.FormatInt(b.Applied, 10), strconv.FormatInt(b.Next.Sequence, 10),
							b.NextStatus, b.Next.ID, strconv.Itoa(b.Waiting), formatTime(b.Since), b.Next.Error)
					}
					t.write(e.Stdout)
					if *verbose {
						t.writeErrors(e.Stdout)
					}
					if len(keys) == *limit {
						fmt.Fprintf(e.Stderr, "showing %d blocked keys; raise -limit for more\n", *limit)
					}
					return cli.ExitOK
				})
			}
		},
	}
}

// maxBlockedScan bounds the blocked keys inbox failed looks at.
const maxBlockedScan = 1000

// blockedBehind returns, by message id, how many events are held behind
// each failed event its key is blocked on.
func blockedBehind(ctx context.Context, c *eventgen.Consumer) (map[string]int, error) {
	keys, err := c.BlockedKeys(ctx, maxBlockedScan)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(keys))
	for _, b := range keys {
		if b.NextStatus == "failed" && b.Next.ID != "" {
			out[b.Next.ID] = b.Waiting
		}
	}
	return out, nil
}

// blockedJSON is a blocked key as -json prints it.
type blockedJSON struct {
	Source  string `json:"source"`
	Topic   string `json:"topic"`
	Key     string `json:"key"`
	Applied int64  `json:"applied"`
	// Next is the sequence of the event the key waits for.
	Next          int64      `json:"next"`
	NextStatus    string     `json:"next_status"`
	NextMessageID string     `json:"next_message_id,omitempty"`
	NextAttempts  int        `json:"next_attempts,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	Waiting       int        `json:"waiting"`
	Since         *time.Time `json:"since,omitempty"`
}

func toBlockedJSON(b eventgen.BlockedKey) blockedJSON {
	j := blockedJSON{
		Source: b.Source, Topic: b.Topic, Key: b.Key, Applied: b.Applied, Next: b.Next.Sequence, NextStatus: b.NextStatus,
		NextMessageID: b.Next.ID, NextAttempts: b.Next.Attempt, LastError: b.Next.Error, Waiting: b.Waiting,
	}
	if !b.Since.IsZero() {
		j.Since = &b.Since
	}
	return j
}

func inboxSkipCommand() *cli.Command {
	return &cli.Command{
		Name:     "skip",
		Synopsis: "-group G -topic T -key K [-source S] [-dry-run] [-yes]",
		Summary:  "skip the next event of a blocked key, so that the events after it run",
		Help: `Skip moves a blocked key of the group past its next event, deliberately: that
event is marked skipped and its handler never runs; the events held behind
it then run in their order. If the group never received the next event, the
key moves on to the first event it holds. Name the key by its topic, key and
source as inbox blocked prints them (-source may be empty only for events
published without one).

It says which event it will skip and asks for confirmation on the terminal
(type yes) unless -yes is given; -dry-run says it and changes nothing. A key
that is not blocked is an error, and nothing changes. It prints an audit
line on stderr: who (the login name), the key, the sequence and message id
skipped.

To run the event again instead, re-execute it: inbox reexecute -id
MESSAGE_ID.` + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f inboxFlags
			f.define(fs)
			var source, topic, key string
			fs.StringVar(&source, "source", "", "the `source` of the key's events, as blocked prints it")
			fs.StringVar(&topic, "topic", "", "the `topic` of the key's events (required)")
			fs.StringVar(&key, "key", "", "the `key` (required)")
			dryRun := fs.Bool("dry-run", false, "say what would be skipped, and change nothing")
			yes := fs.Bool("yes", false, "do not ask for confirmation")
			return func(e *cli.Env) int {
				const name = "inbox skip"
				if topic == "" || key == "" {
					return usage(e, name, "-topic and -key are required")
				}
				return withConsumer(e, name, &f, func(ctx context.Context, c *eventgen.Consumer) int {
					return skipNext(ctx, e, name, c, source, topic, key, *dryRun, *yes)
				})
			}
		},
	}
}

func skipNext(ctx context.Context, e *cli.Env, name string, c *eventgen.Consumer, source, topic, key string, dryRun, yes bool) int {
	b, blocked, err := c.BlockedKey(ctx, source, topic, key)
	if err != nil {
		return fail(e, name, err)
	}
	what := fmt.Sprintf("key %q (topic %q, source %q) of group %s in %s", key, topic, source, c.Group(), c.Table())
	if !blocked {
		fmt.Fprintf(e.Stderr, "%s %s: %s is not blocked (last applied %d, its next event is %s); nothing to skip\n",
			e.Program, name, printable(what), b.Applied, b.NextStatus)
		return cli.ExitFailure
	}
	next := fmt.Sprintf("event %d (%s", b.Next.Sequence, b.NextStatus)
	if b.Next.ID != "" {
		next += ", message id " + b.Next.ID
	}
	next += ")"
	if dryRun {
		fmt.Fprintf(e.Stdout, "dry run: skip would mark %s of %s as skipped, and the %d events held behind it would run; nothing changed\n",
			next, printable(what), b.Waiting)
		return cli.ExitOK
	}
	if !yes && !confirm(e, printable(fmt.Sprintf("Skip %s of %s, without running its handler (%d events wait behind it)?", next, what, b.Waiting))) {
		fmt.Fprintf(e.Stderr, "%s %s: not confirmed; nothing changed (-yes skips the question)\n", e.Program, name)
		return cli.ExitFailure
	}
	id, err := c.SkipNext(ctx, source, topic, key)
	n := 0
	if err == nil {
		n = 1
	}
	auditLine(e, name, "skip-next", c.Table(), c.Group(), n, err,
		"source", source, "topic", topic, "key", key, "sequence", b.Next.Sequence, "message_id", id)
	if err != nil {
		return fail(e, name, err)
	}
	fmt.Fprintf(e.Stdout, "skipped %s of %s; the events held behind it run next\n", next, printable(what))
	return cli.ExitOK
}
