package opscli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// side is the outbox or one group's inbox, as the row commands see it.
type side struct {
	what  string // "events", "messages of group billing"
	table string
	group string
	inbox bool
	rows  func(context.Context, eventgen.RowFilter) (eventgen.RowPage, error)
	row   func(context.Context, int64) (eventgen.StoredRow, bool, error)
	// eligible and apply act on row ids; failed counts the failed rows,
	// which -all acts on.
	eligible func(context.Context, eventgen.RowAction, []int64) ([]int64, error)
	apply    func(context.Context, eventgen.RowAction, []int64) (int, error)
	failed   func(context.Context) (int64, error)
	// requeueAll requeues or re-executes every failed row.
	requeueAll func(context.Context) (int, error)
}

func outboxSide(ob *eventgen.Outbox) *side {
	return &side{
		what: "events", table: ob.Table(), rows: ob.Rows, row: ob.Row, eligible: ob.Eligible, apply: ob.Apply,
		failed: func(ctx context.Context) (int64, error) {
			st, err := ob.Stats(ctx)
			return st.Failed, err
		},
		requeueAll: ob.RequeueFailed,
	}
}

func inboxSide(c *eventgen.Consumer) *side {
	return &side{
		what: "messages of group " + c.Group(), table: c.Table(), group: c.Group(), inbox: true,
		rows: c.Rows, row: c.Row, eligible: c.Eligible, apply: c.Apply,
		failed: func(ctx context.Context) (int64, error) {
			st, err := c.Stats(ctx)
			return st.Failed, err
		},
		requeueAll: c.ReexecuteFailed,
	}
}

// sideFlags are the database flags of the outbox's commands, or of the
// inbox's (with -group).
type sideFlags struct {
	inbox bool
	f     inboxFlags
}

func (s *sideFlags) define(fs *flag.FlagSet) {
	if s.inbox {
		s.f.define(fs)
		return
	}
	s.f.dbFlags.define(fs, "outbox", eventgen.DefaultOutboxTable)
}

// run runs fn on the side the flags name.
func (s *sideFlags) run(e *cli.Env, name string, fn func(context.Context, *side) int) int {
	if s.inbox {
		return withConsumer(e, name, &s.f, func(ctx context.Context, c *eventgen.Consumer) int { return fn(ctx, inboxSide(c)) })
	}
	return withOutbox(e, name, &s.f.dbFlags, func(ctx context.Context, ob *eventgen.Outbox) int { return fn(ctx, outboxSide(ob)) })
}

func kindOf(inbox bool) string {
	if inbox {
		return "inbox"
	}
	return "outbox"
}

// listCommand is "outbox list" or "inbox list".
func listCommand(inbox bool) *cli.Command {
	kind := kindOf(inbox)
	synopsis := "[-status S] [-name N] [-key K] [-message-id M] [-since T] [-until T] [-before ID] [-limit N] [-json]"
	statuses := eventgen.OutboxStatuses()
	if inbox {
		synopsis = "-group G " + synopsis
		statuses = eventgen.InboxStatuses()
	}
	return &cli.Command{
		Name:     "list",
		Synopsis: synopsis,
		Summary:  "list rows by status, event, key or time, newest first",
		Help: `List lists the ` + kind + `'s rows that the filters select, newest first, a page
at a time: the next page is -before the last id printed, as the line after
the list says. Pages are cut by id, so a deep page costs what the first
does. Statuses: ` + strings.Join(statuses, ", ") + `. Times are RFC 3339
or 2006-01-02T15:04 (UTC), and bound when a row was written. -json prints
one JSON object with the rows and the cursor.` + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			s := &sideFlags{inbox: inbox}
			s.define(fs)
			var f eventgen.RowFilter
			var since, until string
			fs.StringVar(&f.Status, "status", "", "only rows of this `status`")
			fs.StringVar(&f.Name, "name", "", "only events of this `name`")
			fs.StringVar(&f.Key, "key", "", "only events with this `key`")
			fs.StringVar(&f.MessageID, "message-id", "", "only the rows of this message `id`")
			fs.StringVar(&since, "since", "", "only rows written at or after `time`")
			fs.StringVar(&until, "until", "", "only rows written before `time`")
			fs.Int64Var(&f.Before, "before", 0, "only rows with ids below `id`: the next page")
			fs.IntVar(&f.Limit, "limit", 50, "list at most `N` rows (at most 1000)")
			asJSON := fs.Bool("json", false, "print one JSON object")
			return func(e *cli.Env) int {
				name := kind + " list"
				if f.Status != "" && !slices.Contains(statuses, f.Status) {
					return usage(e, name, "-status %q is not one of %s", f.Status, strings.Join(statuses, ", "))
				}
				var err error
				if f.Since, err = parseTime(since); err != nil {
					return usage(e, name, "-since: %v", err)
				}
				if f.Until, err = parseTime(until); err != nil {
					return usage(e, name, "-until: %v", err)
				}
				if f.Limit <= 0 || f.Limit > 1000 || f.Before < 0 {
					return usage(e, name, "-limit must be between 1 and 1000, and -before positive")
				}
				return s.run(e, name, func(ctx context.Context, sd *side) int {
					p, err := sd.rows(ctx, f)
					if err != nil {
						return fail(e, name, err)
					}
					if *asJSON {
						out := listJSON{Table: sd.table, Group: sd.group, Rows: []rowJSON{}, Older: p.Older}
						for _, r := range p.Rows {
							out.Rows = append(out.Rows, toJSON(r))
						}
						return printJSON(e, name, out)
					}
					if len(p.Rows) == 0 {
						fmt.Fprintf(e.Stderr, "no %s in %s match\n", sd.what, sd.table)
						return cli.ExitOK
					}
					t := newTable("ID", "MESSAGE ID", "NAME", "KEY", "STATUS", "ATTEMPTS", "CREATED", "LAST ERROR")
					for _, r := range p.Rows {
						t.add(strconv.FormatInt(r.ID, 10), r.MessageID, r.Name, r.Key, r.Status, strconv.Itoa(r.Attempts), formatTime(r.CreatedAt), r.LastError)
					}
					t.write(e.Stdout)
					if p.Older != 0 {
						fmt.Fprintf(e.Stderr, "more: add -before %d for the next page\n", p.Older)
					}
					return cli.ExitOK
				})
			}
		},
	}
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 or 2006-01-02T15:04 (UTC)", s)
}

// usage prints a usage error of command name.
func usage(e *cli.Env, name, format string, args ...any) int {
	fmt.Fprintf(e.Stderr, "%s %s: %s\n", e.Program, name, fmt.Sprintf(format, args...))
	return cli.ExitUsage
}

// showCommand is "outbox show" or "inbox show".
func showCommand(inbox bool) *cli.Command {
	kind := kindOf(inbox)
	synopsis := "-id ID [-json]"
	if inbox {
		synopsis = "-group G -id ID [-json]"
	}
	return &cli.Command{
		Name:     "show",
		Synopsis: synopsis,
		Summary:  "show one row with its payload, headers and whole last error",
		Help: `Show prints one row of the ` + kind + ` by its id (as list prints it): its
columns, its payload (JSON indented; other text as it is, with control
characters replaced; binary as a hex dump), its headers and its whole last
error, with the stack of a panic. -json prints one JSON object, the payload
as JSON when it is JSON and in base64 (payload_base64) when it is not.` + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			s := &sideFlags{inbox: inbox}
			s.define(fs)
			id := fs.Int64("id", 0, "the row `id` (required)")
			asJSON := fs.Bool("json", false, "print one JSON object")
			return func(e *cli.Env) int {
				name := kind + " show"
				if *id <= 0 {
					return usage(e, name, "-id (a positive row id) is required")
				}
				return s.run(e, name, func(ctx context.Context, sd *side) int {
					r, ok, err := sd.row(ctx, *id)
					if err != nil {
						return fail(e, name, err)
					}
					if !ok {
						fmt.Fprintf(e.Stderr, "%s %s: no row %d among the %s in %s\n", e.Program, name, *id, sd.what, sd.table)
						return cli.ExitFailure
					}
					if *asJSON {
						return printJSON(e, name, toJSON(r))
					}
					printRow(e, r, sd.inbox)
					return cli.ExitOK
				})
			}
		},
	}
}

func printRow(e *cli.Env, r eventgen.StoredRow, inbox bool) {
	tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0)
	lines := [][2]string{
		{"id", strconv.FormatInt(r.ID, 10)}, {"message id", r.MessageID}, {"name", r.Name}, {"version", strconv.Itoa(r.Version)},
		{"topic", r.Topic}, {"key", r.Key}, {"sequence", strconv.FormatInt(r.Sequence, 10)}, {"source", r.Source}, {"status", r.Status}, {"attempts", strconv.Itoa(r.Attempts)},
	}
	if inbox {
		lines = append(lines, [2]string{"event time", formatTime(r.EventTime)})
	}
	lines = append(lines, [][2]string{
		{"created", formatTime(r.CreatedAt)}, {"next attempt", formatTime(r.NextAttemptAt)}, {"finished", formatTime(r.FinishedAt)},
		{"expires", formatTime(r.ExpiresAt)}, {"lock owner", r.LockOwner},
	}...)
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\t%s\n", l[0], cell(l[1]))
	}
	tw.Flush()
	keys := make([]string, 0, len(r.Headers))
	for k := range r.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(e.Stdout, "\nheaders:\n")
	for _, k := range keys {
		fmt.Fprintf(e.Stdout, "\t%s: %s\n", printable(k), printable(r.Headers[k]))
	}
	fmt.Fprintf(e.Stdout, "\npayload (%d bytes):\n", len(r.Payload))
	for line := range strings.SplitSeq(prettyPayload(r.Payload), "\n") {
		fmt.Fprintf(e.Stdout, "\t%s\n", printable(line))
	}
	if r.LastError != "" {
		fmt.Fprintf(e.Stdout, "\nlast error:\n")
		for line := range strings.SplitSeq(r.LastError, "\n") {
			fmt.Fprintf(e.Stdout, "\t%s\n", printable(line))
		}
	}
}

// prettyPayload returns a payload as text: JSON indented, other UTF-8 as it
// is, anything else as a hex dump.
func prettyPayload(p []byte) string {
	var b bytes.Buffer
	switch {
	case json.Valid(p) && json.Indent(&b, p, "", "  ") == nil:
		return b.String()
	case utf8.Valid(p):
		return string(p)
	}
	return strings.TrimSuffix(hex.Dump(p), "\n")
}

// rowJSON is a row as -json prints it.
type rowJSON struct {
	ID            int64      `json:"id,omitempty"`
	MessageID     string     `json:"message_id"`
	Name          string     `json:"name"`
	Version       int        `json:"version"`
	Topic         string     `json:"topic"`
	Key           string     `json:"key"`
	Sequence      int64      `json:"sequence,omitempty"`
	Source        string     `json:"source"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	EventTime     *time.Time `json:"event_time,omitempty"`
	CreatedAt     *time.Time `json:"created_at,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	LockOwner     string     `json:"lock_owner,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	// Waiting counts, for a failed message its key is blocked on, the
	// events held behind it (inbox failed only).
	Waiting       int               `json:"waiting,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	PayloadBase64 []byte            `json:"payload_base64,omitempty"`
}

type listJSON struct {
	Table string    `json:"table"`
	Group string    `json:"group,omitempty"`
	Rows  []rowJSON `json:"rows"`
	// Older is the -before of the next page; 0 when there is none.
	Older int64 `json:"older"`
}

func toJSON(r eventgen.StoredRow) rowJSON {
	t := func(v time.Time) *time.Time {
		if v.IsZero() {
			return nil
		}
		return &v
	}
	j := rowJSON{
		ID: r.ID, MessageID: r.MessageID, Name: r.Name, Version: r.Version, Topic: r.Topic, Key: r.Key, Sequence: r.Sequence, Source: r.Source,
		Status: r.Status, Attempts: r.Attempts, EventTime: t(r.EventTime), CreatedAt: t(r.CreatedAt),
		NextAttemptAt: t(r.NextAttemptAt), FinishedAt: t(r.FinishedAt), ExpiresAt: t(r.ExpiresAt),
		LockOwner: r.LockOwner, LastError: r.LastError, Headers: r.Headers,
	}
	if len(r.Payload) > 0 {
		if json.Valid(r.Payload) {
			j.Payload = r.Payload
		} else {
			j.PayloadBase64 = r.Payload
		}
	}
	return j
}

func printJSON(e *cli.Env, name string, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fail(e, name, err)
	}
	fmt.Fprintf(e.Stdout, "%s\n", b)
	return cli.ExitOK
}

// actionText is how the commands speak of an action.
type actionText struct {
	action eventgen.RowAction
	// applies names the rows it changes: "failed".
	applies string
	// done ends the line that reports it: "made due again; ...".
	done string
	// unchanged explains, in parentheses, ids it did not change.
	unchanged string
	// all says what -all does, or "" when -all is not offered.
	all string
}

// actionCommand is an action on rows named by id, or on every failed row
// with -all: requeue, reexecute, delete, publish-now.
func actionCommand(inbox bool, name, summary, help string, at actionText) *cli.Command {
	kind := kindOf(inbox)
	ids := "-id ID ..."
	if inbox {
		ids = "-group G (-id MESSAGE_ID ... | -row ID ...)"
	}
	all := ""
	if at.all != "" {
		all = " | -all"
		if !inbox {
			ids = "(" + ids + all + ")"
		} else {
			ids = strings.TrimSuffix(ids, ")") + all + ")"
		}
	}
	return &cli.Command{
		Name:     name,
		Synopsis: ids + " [-dry-run] [-yes]",
		Summary:  summary,
		Help: help + `

-dry-run says how many rows it would change, and which, and changes none.
-all asks for confirmation on the terminal (type yes) unless -yes is given.
Each action prints an audit line on stderr: who (the login name), what,
the ids and how many rows changed.` + dbHelp,
		Setup: func(fs *flag.FlagSet) func(*cli.Env) int {
			s := &sideFlags{inbox: inbox}
			s.define(fs)
			var rowIDs int64List
			var msgIDs stringList
			if inbox {
				fs.Var(&msgIDs, "id", "the message `id` of a message, as failed and list print it (repeatable)")
				fs.Var(&rowIDs, "row", "the row `id` of a message, as list prints it (repeatable)")
			} else {
				fs.Var(&rowIDs, "id", "the row `id` of an event, as failed and list print it (repeatable)")
			}
			var everyFailed *bool
			if at.all != "" {
				everyFailed = fs.Bool("all", false, at.all)
			}
			dryRun := fs.Bool("dry-run", false, "say what would change, and change nothing")
			yes := fs.Bool("yes", false, "do not ask for confirmation")
			return func(e *cli.Env) int {
				cmd := kind + " " + name
				allSet := everyFailed != nil && *everyFailed
				named := len(rowIDs)+len(msgIDs) > 0
				if named == allSet {
					want := "-id (one or more)"
					if inbox {
						want = "-id or -row (one or more)"
					}
					if at.all != "" {
						want += " or -all"
					}
					return usage(e, cmd, "give %s", want)
				}
				return s.run(e, cmd, func(ctx context.Context, sd *side) int {
					if allSet {
						return actOnAll(ctx, e, cmd, sd, at, *dryRun, *yes)
					}
					ids, err := rowsOf(ctx, sd, rowIDs, msgIDs)
					if err != nil {
						return fail(e, cmd, err)
					}
					return actOnIDs(ctx, e, cmd, sd, at, ids, len(rowIDs)+len(msgIDs), *dryRun)
				})
			}
		},
	}
}

// rowsOf returns the row ids of rowIDs and of the rows of msgIDs.
func rowsOf(ctx context.Context, sd *side, rowIDs []int64, msgIDs []string) ([]int64, error) {
	ids := slices.Clone(rowIDs)
	for _, m := range msgIDs {
		p, err := sd.rows(ctx, eventgen.RowFilter{MessageID: m})
		if err != nil {
			return nil, err
		}
		for _, r := range p.Rows {
			if !slices.Contains(ids, r.ID) {
				ids = append(ids, r.ID)
			}
		}
	}
	return ids, nil
}

func actOnIDs(ctx context.Context, e *cli.Env, cmd string, sd *side, at actionText, ids []int64, asked int, dryRun bool) int {
	if dryRun {
		eligible, err := sd.eligible(ctx, at.action, ids)
		if err != nil {
			return fail(e, cmd, err)
		}
		fmt.Fprintf(e.Stdout, "dry run: %s would change %d %s %s in %s%s; nothing changed\n",
			at.action, len(eligible), at.applies, sd.what, sd.table, idList(eligible))
		return cli.ExitOK
	}
	n := 0
	var err error
	if len(ids) > 0 {
		n, err = sd.apply(ctx, at.action, ids)
	}
	audit(e, cmd, sd, at.action, ids, n, err)
	if err != nil {
		if n > 0 {
			fmt.Fprintf(e.Stdout, "%d %s %s in %s %s before the error\n", n, at.applies, sd.what, sd.table, at.done)
		}
		return fail(e, cmd, err)
	}
	fmt.Fprintf(e.Stdout, "%d %s %s in %s %s\n", n, at.applies, sd.what, sd.table, at.done)
	if n < asked {
		fmt.Fprintf(e.Stderr, "%s %s: %d of the %d ids given are not %s %s in %s (%s)\n", e.Program, cmd, asked-n, asked, at.applies, sd.what, sd.table, at.unchanged)
		return cli.ExitFailure
	}
	return cli.ExitOK
}

func actOnAll(ctx context.Context, e *cli.Env, cmd string, sd *side, at actionText, dryRun, yes bool) int {
	count, err := sd.failed(ctx)
	if err != nil {
		return fail(e, cmd, err)
	}
	if dryRun {
		fmt.Fprintf(e.Stdout, "dry run: %s -all would change the %d failed %s in %s; nothing changed\n", at.action, count, sd.what, sd.table)
		return cli.ExitOK
	}
	if count == 0 {
		fmt.Fprintf(e.Stdout, "0 failed %s in %s; nothing to do\n", sd.what, sd.table)
		return cli.ExitOK
	}
	if !yes && !confirm(e, fmt.Sprintf("%s every failed %s in %s (%d now)?", at.action, strings.TrimSuffix(sd.what, "s"), sd.table, count)) {
		fmt.Fprintf(e.Stderr, "%s %s: not confirmed; nothing changed (-yes skips the question)\n", e.Program, cmd)
		return cli.ExitFailure
	}
	var n int
	if at.action == eventgen.ActionDelete {
		n, err = deleteFailed(ctx, sd)
	} else {
		n, err = sd.requeueAll(ctx)
	}
	audit(e, cmd, sd, at.action, nil, n, err)
	if err != nil {
		if n > 0 {
			fmt.Fprintf(e.Stdout, "%d failed %s in %s %s before the error\n", n, sd.what, sd.table, at.done)
		}
		return fail(e, cmd, err)
	}
	fmt.Fprintf(e.Stdout, "%d failed %s in %s %s\n", n, sd.what, sd.table, at.done)
	return cli.ExitOK
}

// deleteFailed deletes every failed row, a page of ids at a time.
func deleteFailed(ctx context.Context, sd *side) (int, error) {
	total := 0
	for {
		p, err := sd.rows(ctx, eventgen.RowFilter{Status: "failed", Limit: 1000})
		if err != nil || len(p.Rows) == 0 {
			return total, err
		}
		ids := make([]int64, len(p.Rows))
		for i, r := range p.Rows {
			ids[i] = r.ID
		}
		n, err := sd.apply(ctx, eventgen.ActionDelete, ids)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// confirm asks question on stderr and reads the answer from stdin: true
// only for "yes".
func confirm(e *cli.Env, question string) bool {
	fmt.Fprintf(e.Stderr, "%s Type yes to go on: ", question)
	line, _ := bufio.NewReader(e.Stdin).ReadString('\n')
	ok := strings.TrimSpace(line) == "yes"
	if line == "" || !strings.HasSuffix(line, "\n") {
		fmt.Fprintln(e.Stderr)
	}
	return ok
}

// audit prints the audit line of an action on stderr: who, what, which
// ids (none for -all) and how many rows changed.
func audit(e *cli.Env, cmd string, sd *side, action eventgen.RowAction, ids []int64, n int, err error) {
	var what any = ids
	if ids == nil {
		what = "all failed"
	}
	auditLine(e, cmd, string(action), sd.table, sd.group, n, err, "ids", what)
}

// auditLine prints the audit line of an action on stderr: who, what, on
// which table (and group), what it named (attrs), how many rows changed.
func auditLine(e *cli.Env, cmd, action, table, group string, n int, err error, attrs ...any) {
	log := slog.New(slog.NewTextHandler(e.Stderr, nil))
	all := []any{"user", operator(), "action", action, "table", table}
	if group != "" {
		all = append(all, "group", group)
	}
	all = append(append(all, attrs...), "count", n, "ok", err == nil)
	log.Info(e.Program+" "+cmd+": audit", all...)
}

// operator names who runs the command: the login name.
func operator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// idList formats ids for a dry run: ": ids 1, 2, 3", at most 20 of them.
func idList(ids []int64) string {
	if len(ids) == 0 {
		return ""
	}
	s := make([]string, 0, min(len(ids), 20))
	for _, id := range ids[:min(len(ids), 20)] {
		s = append(s, strconv.FormatInt(id, 10))
	}
	more := ""
	if len(ids) > 20 {
		more = fmt.Sprintf(" and %d more", len(ids)-20)
	}
	return ": ids " + strings.Join(s, ", ") + more
}
