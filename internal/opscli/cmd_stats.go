package opscli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// statsHelp ends the help of the stats commands, before dbHelp.
func statsHelp() string {
	return fmt.Sprintf(`

The counts of rows that wait, run or failed are exact. Finished rows are
the table's history, kept for a retention, and are counted only among the
newest %d: a count shown with a + (or "history_capped": true with -json)
means there may be more. The oldest pending age is how long the row due
the longest has waited to be claimed, on the database's clock; 0s when
none is due. -json prints one JSON object with the same figures, the age
in seconds.

As a health check: -max-lag, -max-failed (and, for a group,
-max-blocked-keys) set limits; the figures are printed as usual, each
limit exceeded is named on stderr, and the exit status is 1 if any was.`, eventgen.StatsHistoryLimit)
}

// limits are the stats commands' health-check thresholds; a negative
// count or a zero lag checks nothing.
type limits struct {
	lag             time.Duration
	failed, blocked int64
}

func (l *limits) define(fs *flag.FlagSet, keys bool) {
	fs.DurationVar(&l.lag, "max-lag", 0, "fail (exit 1) if the oldest pending age is over this (0: no limit)")
	fs.Int64Var(&l.failed, "max-failed", -1, "fail (exit 1) if more rows than this are failed (-1: no limit)")
	l.blocked = -1
	if keys {
		fs.Int64Var(&l.blocked, "max-blocked-keys", -1, "fail (exit 1) if more keys than this are blocked (-1: no limit)")
	}
}

// invalid describes a limit that cannot be meant, or returns "".
func (l *limits) invalid() string {
	switch {
	case l.lag < 0:
		return fmt.Sprintf("-max-lag %s is negative", l.lag)
	case l.failed < -1:
		return fmt.Sprintf("-max-failed %d: want a count, or -1 for no limit", l.failed)
	case l.blocked < -1:
		return fmt.Sprintf("-max-blocked-keys %d: want a count, or -1 for no limit", l.blocked)
	}
	return ""
}

// exceeded names each limit the figures are over.
func (l *limits) exceeded(lag time.Duration, failed, blocked int64) []string {
	var out []string
	if l.lag > 0 && lag > l.lag {
		out = append(out, fmt.Sprintf("oldest pending %s is over -max-lag %s", age(lag), l.lag))
	}
	if l.failed >= 0 && failed > l.failed {
		out = append(out, fmt.Sprintf("%d failed is over -max-failed %d", failed, l.failed))
	}
	if l.blocked >= 0 && blocked > l.blocked {
		out = append(out, fmt.Sprintf("%d blocked keys is over -max-blocked-keys %d", blocked, l.blocked))
	}
	return out
}

// check prints each limit exceeded to stderr and returns the exit status:
// code when none was (or code is already a failure), else ExitFailure.
func (l *limits) check(e *cli.Env, name string, code int, lag time.Duration, failed, blocked int64) int {
	over := l.exceeded(lag, failed, blocked)
	if code != cli.ExitOK || len(over) == 0 {
		return code
	}
	for _, o := range over {
		fmt.Fprintf(e.Stderr, "%s %s: unhealthy: %s\n", e.Program, name, o)
	}
	return cli.ExitFailure
}

func outboxStatsCommand() *cli.Command {
	return &cli.Command{
		Name:     "stats",
		Synopsis: "[-table T] [-json] [-max-lag D] [-max-failed N]",
		Summary:  "count events by status, and the oldest pending age",
		Help: `Stats counts the outbox's events by status (scheduled, pending, of which
retrying, processing, failed, published) and says how long the event due
the longest has waited for the relay: the relay's lag. It reads indexes
only, and is cheap enough for a health check.` + statsHelp() + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f dbFlags
			f.define(fs, "outbox", eventgen.DefaultOutboxTable)
			asJSON := jsonFlag(fs)
			var lim limits
			lim.define(fs, false)
			return func(e *cli.Env) int {
				if msg := lim.invalid(); msg != "" {
					return usage(e, "outbox stats", "%s", msg)
				}
				return withOutbox(e, "outbox stats", &f, func(ctx context.Context, ob *eventgen.Outbox) int {
					st, err := ob.Stats(ctx)
					if err != nil {
						return fail(e, "outbox stats", err)
					}
					code := printStats(e, "outbox stats", *asJSON, outboxStatsJSON{
						Table: f.table, Scheduled: st.Scheduled, Pending: st.Pending, Retrying: st.Retrying,
						Processing: st.Processing, Failed: st.Failed, Published: st.Published,
						HistoryCapped: st.HistoryCapped, OldestPendingSeconds: st.OldestPending.Seconds(),
					}, [][2]string{
						{"table", f.table},
						{"scheduled", count(st.Scheduled)},
						{"pending", count(st.Pending)},
						{"  retrying", count(st.Retrying)},
						{"processing", count(st.Processing)},
						{"failed", count(st.Failed)},
						{"published", history(st.Published, st.HistoryCapped)},
						{"oldest pending", age(st.OldestPending)},
					})
					return lim.check(e, "outbox stats", code, st.OldestPending, st.Failed, 0)
				})
			}
		},
	}
}

func inboxStatsCommand() *cli.Command {
	return &cli.Command{
		Name:     "stats",
		Synopsis: "-group G [-table T] [-json] [-max-lag D] [-max-failed N] [-max-blocked-keys N]",
		Summary:  "count a group's messages by status, and the oldest pending age",
		Help: `Stats counts the group's messages by status (held behind the event
before them of their key, pending, which are all waiting for a retry,
processing, failed, succeeded, skipped), says how long the message due the
longest has waited for a retry, and counts the keys whose events wait, and
those of them whose next event failed for good (see "inbox blocked"). It
reads indexes only, and is cheap enough for a health check.` + statsHelp() + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			var f inboxFlags
			f.define(fs)
			asJSON := jsonFlag(fs)
			var lim limits
			lim.define(fs, true)
			return func(e *cli.Env) int {
				if msg := lim.invalid(); msg != "" {
					return usage(e, "inbox stats", "%s", msg)
				}
				return withConsumer(e, "inbox stats", &f, func(ctx context.Context, c *eventgen.Consumer) int {
					st, err := c.Stats(ctx)
					if err != nil {
						return fail(e, "inbox stats", err)
					}
					code := printStats(e, "inbox stats", *asJSON, inboxStatsJSON{
						Table: f.table, Group: f.group, Held: st.Held, Pending: st.Pending, Processing: st.Processing,
						Failed: st.Failed, Succeeded: st.Succeeded, Skipped: st.Skipped,
						HistoryCapped: st.HistoryCapped, OldestPendingSeconds: st.OldestPending.Seconds(),
						BlockedKeys: st.BlockedKeys, FailedKeys: st.FailedKeys,
					}, [][2]string{
						{"table", f.table},
						{"group", f.group},
						{"held", count(st.Held)},
						{"pending", count(st.Pending)},
						{"processing", count(st.Processing)},
						{"failed", count(st.Failed)},
						{"succeeded", history(st.Succeeded, st.HistoryCapped)},
						{"skipped", history(st.Skipped, st.HistoryCapped)},
						{"oldest pending", age(st.OldestPending)},
						{"blocked keys", count(st.BlockedKeys)},
						{"  failed", count(st.FailedKeys)},
					})
					return lim.check(e, "inbox stats", code, st.OldestPending, st.Failed, st.BlockedKeys)
				})
			}
		},
	}
}

// outboxStatsJSON is what outbox stats -json prints.
type outboxStatsJSON struct {
	Table                string  `json:"table"`
	Scheduled            int64   `json:"scheduled"`
	Pending              int64   `json:"pending"`
	Retrying             int64   `json:"retrying"`
	Processing           int64   `json:"processing"`
	Failed               int64   `json:"failed"`
	Published            int64   `json:"published"`
	HistoryCapped        bool    `json:"history_capped"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
}

// inboxStatsJSON is what inbox stats -json prints.
type inboxStatsJSON struct {
	Table                string  `json:"table"`
	Group                string  `json:"group"`
	Held                 int64   `json:"held"`
	Pending              int64   `json:"pending"`
	Processing           int64   `json:"processing"`
	Failed               int64   `json:"failed"`
	Succeeded            int64   `json:"succeeded"`
	Skipped              int64   `json:"skipped"`
	HistoryCapped        bool    `json:"history_capped"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
	BlockedKeys          int64   `json:"blocked_keys"`
	FailedKeys           int64   `json:"failed_keys"`
}

func jsonFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("json", false, "print the figures as one JSON object")
}

// printStats prints the figures of a stats command: v as indented JSON
// with -json, else lines of name and value, aligned.
func printStats(e *cli.Env, name string, asJSON bool, v any, lines [][2]string) int {
	if asJSON {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fail(e, name, err)
		}
		fmt.Fprintf(e.Stdout, "%s\n", b)
		return cli.ExitOK
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\t%s\n", l[0], cell(l[1]))
	}
	tw.Flush()
	return cli.ExitOK
}

func count(n int64) string { return strconv.FormatInt(n, 10) }

// history formats a count of finished rows, with a + when there may be more.
func history(n int64, capped bool) string {
	if capped {
		return count(n) + "+"
	}
	return count(n)
}

// age formats the oldest pending age to the millisecond.
func age(d time.Duration) string { return d.Round(time.Millisecond).String() }
