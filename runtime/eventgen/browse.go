package eventgen

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
)

// This file holds what operators' tools (package console, eventgen-ops)
// need to browse an outbox or a group's inbox and act on chosen rows. It
// needs no publisher or subscriber.

// StoredRow is one row of an outbox table, or of a group's inbox, as an
// operator sees it. Times are on the database's clock; a zero time means
// the column is empty.
type StoredRow struct {
	// ID is the row's id: the key of [Outbox.Row], [Consumer.Row] and
	// of the actions.
	ID int64
	// MessageID is the message id consumers see.
	MessageID string
	Name      string
	Version   int
	Topic     string
	Key       string
	Source    string
	// Sequence is the event's position among the events of its source,
	// topic and key (see [Metadata.Sequence]); 0 for an event without a
	// key.
	Sequence int64
	// EventTime is the producer's time of a received message; zero in the
	// outbox.
	EventTime time.Time
	// Status is the row's status: scheduled, pending, processing,
	// published or failed in the outbox; held, pending, processing,
	// succeeded, skipped or failed in an inbox. A held message waits for
	// the event before it of its key (see [Consumer.BlockedKeys]).
	Status string
	// Attempts counts the publishes or runs tried so far.
	Attempts int
	// CreatedAt is when the row was written.
	CreatedAt time.Time
	// NextAttemptAt is when a waiting row is due, or when a processing
	// row's lease ends.
	NextAttemptAt time.Time
	// FinishedAt is when the event was published, or the message handled
	// or failed.
	FinishedAt time.Time
	// ExpiresAt is when cleanup may delete a finished row.
	ExpiresAt  time.Time
	LeaseUntil time.Time
	// LockOwner names the process that holds or last held the row.
	LockOwner string
	// LastError is the last error, with the stack for a panic.
	LastError string
	// Payload and Headers are filled by Row only.
	Payload []byte
	Headers map[string]string
}

// RowFilter selects and pages the rows that [Outbox.Rows] and
// [Consumer.Rows] list. Empty fields select everything.
type RowFilter struct {
	// Status, Name, Key and MessageID select rows with exactly this
	// status, event name, key and message id.
	Status, Name, Key, MessageID string
	// Since and Until bound the time rows were written:
	// Since <= CreatedAt < Until.
	Since, Until time.Time
	// Before lists the rows with ids below it, After those with ids above
	// it: the cursors of [RowPage]. At most one may be set; with neither,
	// the newest rows are listed.
	Before, After int64
	// Limit is the page size; 0 means 50, and it is at most 1000.
	Limit int
}

// RowPage is one page of rows, newest (highest id) first. Pages are cut
// by id (keyset paging), so a page costs the same however deep it is, and
// rows written meanwhile never shift the pages below them.
type RowPage struct {
	Rows []StoredRow
	// Newer is the After cursor of the page above, and Older the Before
	// cursor of the page below; 0 when there is none.
	Newer, Older int64
}

// RowAction is an operator's action on chosen rows.
type RowAction string

// The actions, and the rows each changes.
const (
	// ActionRequeue returns failed outbox events to the relay
	// ([Outbox.Requeue]).
	ActionRequeue RowAction = "requeue"
	// ActionReexecute makes a group's failed messages due again
	// ([Consumer.ReexecuteRows]).
	ActionReexecute RowAction = "reexecute"
	// ActionDelete deletes failed, scheduled and pending outbox events,
	// which are then never published, or a group's failed messages
	// ([Outbox.Delete], [Consumer.Delete]).
	ActionDelete RowAction = "delete"
	// ActionPublishNow makes scheduled outbox events due at once
	// ([Outbox.PublishNow]).
	ActionPublishNow RowAction = "publish-now"
)

// A blocked key's next event is skipped by key, not by row id:
// [Consumer.SkipNext].

// actionStatuses returns the statuses of the rows action changes in the
// outbox, or in an inbox, and whether it is an action there.
func actionStatuses(action RowAction, inbox bool) ([]string, bool) {
	switch {
	case action == ActionDelete && inbox, action == ActionRequeue && !inbox, action == ActionReexecute && inbox:
		return []string{tables.StatusFailed}, true
	case action == ActionDelete:
		return []string{tables.StatusFailed, tables.StatusScheduled, tables.StatusPending}, true
	case action == ActionPublishNow && !inbox:
		return []string{tables.StatusScheduled}, true
	}
	return nil, false
}

// OutboxStatuses returns the statuses of outbox rows, in life-cycle order.
func OutboxStatuses() []string {
	return []string{tables.StatusScheduled, tables.StatusPending, tables.StatusProcessing, tables.StatusPublished, tables.StatusFailed}
}

// InboxStatuses returns the statuses of inbox rows, in life-cycle order.
func InboxStatuses() []string {
	return []string{tables.StatusHeld, tables.StatusPending, tables.StatusProcessing, tables.StatusSucceeded, tables.StatusSkipped, tables.StatusFailed}
}

// maxRowLimit bounds RowFilter.Limit.
const maxRowLimit = 1000

// Throughput is how many rows finished in each minute of the last hour,
// by status, from [Outbox.Throughput] or [Consumer.Throughput].
type Throughput struct {
	// Start is the start of the first minute, on the database's clock.
	Start time.Time
	// Counts holds, for each status that finished rows in the window
	// (published, or succeeded, skipped and failed), 60 counts, one per
	// minute from Start.
	Counts map[string][]int64
}

// throughputWindow is the window Throughput covers.
const throughputWindow = time.Hour

// Table returns the name of the outbox table.
func (o *Outbox) Table() string { return o.opts.Table }

// Rows lists the outbox's events that f selects, a page at a time, newest
// first, without their payloads.
func (o *Outbox) Rows(ctx context.Context, f RowFilter) (RowPage, error) {
	p, err := listRows(ctx, o.browser(), o.db, f)
	if err != nil {
		return RowPage{}, fmt.Errorf("outbox: list rows: %w", err)
	}
	return p, nil
}

// Row returns the outbox event with row id id, with its payload and
// headers, and whether there is one.
func (o *Outbox) Row(ctx context.Context, id int64) (StoredRow, bool, error) {
	r, ok, err := o.browser().Row(ctx, o.db, id)
	if err != nil {
		return StoredRow{}, false, fmt.Errorf("outbox: read row %d: %w", id, err)
	}
	return storedRow(r), ok, nil
}

// Throughput counts the events published in each minute of the last hour.
// It reads the expiry index from an hour ago plus PublishedRetention, so
// rows published under a shorter retention than today's are not counted.
func (o *Outbox) Throughput(ctx context.Context) (Throughput, error) {
	t, err := throughput(ctx, o.browser(), o.db, min(o.opts.PublishedRetention, o.opts.FailedRetention))
	if err != nil {
		return Throughput{}, fmt.Errorf("outbox: throughput: %w", err)
	}
	return t, nil
}

// Eligible returns, in ascending order, those of ids that action would
// change: a dry run. The actions of the outbox are ActionRequeue,
// ActionDelete and ActionPublishNow.
func (o *Outbox) Eligible(ctx context.Context, action RowAction, ids []int64) ([]int64, error) {
	statuses, ok := actionStatuses(action, false)
	if !ok {
		return nil, fmt.Errorf("outbox: %q is not an action on outbox events", action)
	}
	out, err := o.browser().Eligible(ctx, o.db, ids, statuses)
	if err != nil {
		return nil, fmt.Errorf("outbox: %s dry run: %w", action, err)
	}
	return out, nil
}

// Apply runs action on the outbox events among ids that it applies to:
// [Outbox.Requeue], [Outbox.PublishNow] or [Outbox.Delete]. It reports how
// many rows changed.
func (o *Outbox) Apply(ctx context.Context, action RowAction, ids []int64) (int, error) {
	switch action {
	case ActionRequeue:
		return o.Requeue(ctx, ids...)
	case ActionPublishNow:
		return o.PublishNow(ctx, ids...)
	case ActionDelete:
		return o.Delete(ctx, ids...)
	}
	return 0, fmt.Errorf("outbox: %q is not an action on outbox events", action)
}

// Delete deletes the outbox events among ids that are failed, scheduled
// or pending, so that they are never published, and reports how many it
// deleted. Events being published (processing) or published are left.
func (o *Outbox) Delete(ctx context.Context, ids ...int64) (int, error) {
	n, err := o.browser().Delete(ctx, o.db, ids, mustStatuses(ActionDelete, false))
	if err != nil {
		return int(n), fmt.Errorf("outbox: delete %d rows: %w", len(ids), err)
	}
	return int(n), nil
}

// PublishNow makes the scheduled events among ids (published WithDelay or
// WithDeliverAt) due at once, and reports how many it changed.
func (o *Outbox) PublishNow(ctx context.Context, ids ...int64) (int, error) {
	n, err := o.browser().PublishNow(ctx, o.db, ids)
	if n > 0 {
		o.notify()
	}
	if err != nil {
		return int(n), fmt.Errorf("outbox: publish %d scheduled rows now: %w", len(ids), err)
	}
	return int(n), nil
}

// mustStatuses is actionStatuses for an action known to apply.
func mustStatuses(action RowAction, inbox bool) []string {
	s, _ := actionStatuses(action, inbox)
	return s
}

func (o *Outbox) browser() *tables.Browser { return tables.NewOutboxBrowser(o.dialect, o.opts.Table) }

// Table returns the name of the group's inbox table.
func (c *Consumer) Table() string { return c.opts.Table }

// Rows lists the group's messages that f selects, a page at a time, newest
// first, without their payloads.
func (c *Consumer) Rows(ctx context.Context, f RowFilter) (RowPage, error) {
	p, err := listRows(ctx, c.browser(), c.db, f)
	if err != nil {
		return RowPage{}, fmt.Errorf("consumer: list rows: %w", err)
	}
	return p, nil
}

// Row returns the group's message with row id id, with its payload and
// headers, and whether there is one.
func (c *Consumer) Row(ctx context.Context, id int64) (StoredRow, bool, error) {
	r, ok, err := c.browser().Row(ctx, c.db, id)
	if err != nil {
		return StoredRow{}, false, fmt.Errorf("consumer: read row %d: %w", id, err)
	}
	return storedRow(r), ok, nil
}

// Throughput counts the group's messages handled (succeeded, skipped) and
// failed in each minute of the last hour. Like [Outbox.Throughput], it
// reads the expiry index from an hour ago plus the shorter of
// SucceededRetention and FailedRetention.
func (c *Consumer) Throughput(ctx context.Context) (Throughput, error) {
	t, err := throughput(ctx, c.browser(), c.db, min(c.opts.SucceededRetention, c.opts.FailedRetention))
	if err != nil {
		return Throughput{}, fmt.Errorf("consumer: throughput: %w", err)
	}
	return t, nil
}

// Eligible returns, in ascending order, those of ids that action would
// change: a dry run. The actions of an inbox are ActionReexecute and
// ActionDelete.
func (c *Consumer) Eligible(ctx context.Context, action RowAction, ids []int64) ([]int64, error) {
	statuses, ok := actionStatuses(action, true)
	if !ok {
		return nil, fmt.Errorf("consumer: %q is not an action on inbox messages", action)
	}
	out, err := c.browser().Eligible(ctx, c.db, ids, statuses)
	if err != nil {
		return nil, fmt.Errorf("consumer: %s dry run: %w", action, err)
	}
	return out, nil
}

// Apply runs action on the group's messages among ids that it applies
// to: [Consumer.ReexecuteRows] or [Consumer.Delete]. It reports how many
// rows changed.
func (c *Consumer) Apply(ctx context.Context, action RowAction, ids []int64) (int, error) {
	switch action {
	case ActionReexecute:
		return c.ReexecuteRows(ctx, ids...)
	case ActionDelete:
		return c.Delete(ctx, ids...)
	}
	return 0, fmt.Errorf("consumer: %q is not an action on inbox messages", action)
}

// ReexecuteRows does what [Consumer.Reexecute] does, for the failed
// messages among the row ids ids.
func (c *Consumer) ReexecuteRows(ctx context.Context, ids ...int64) (int, error) {
	n, err := c.inbox.Requeue(ctx, c.db, ids, c.opts.DeleteBatch)
	if err != nil {
		return int(n), fmt.Errorf("consumer: reexecute %d rows: %w", len(ids), err)
	}
	return int(n), nil
}

// Delete deletes the group's failed messages among the row ids ids, and
// reports how many it deleted. A message that the broker delivers again
// after its row is gone is handled as a new one. Deleting the failed event
// a key is blocked on does not unblock the key: its later events stay
// held, waiting for the deleted one (now missing), until the broker
// delivers it again or an operator skips it ([Consumer.SkipNext]).
func (c *Consumer) Delete(ctx context.Context, ids ...int64) (int, error) {
	n, err := c.browser().Delete(ctx, c.db, ids, mustStatuses(ActionDelete, true))
	if err != nil {
		return int(n), fmt.Errorf("consumer: delete %d rows: %w", len(ids), err)
	}
	return int(n), nil
}

// Behind returns up to limit of the group's messages held behind the
// event of source, topic and key with sequence seq, in sequence order:
// those that run after it, without their payloads.
func (c *Consumer) Behind(ctx context.Context, source, topic, key string, seq int64, limit int) ([]StoredRow, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("consumer: held rows: limit %d is not positive", limit)
	}
	rows, err := c.browser().Held(ctx, c.db, tables.Stream{Source: source, Topic: topic, Key: key}, seq, min(limit, maxRowLimit))
	if err != nil {
		return nil, fmt.Errorf("consumer: held rows of key %q: %w", key, err)
	}
	out := make([]StoredRow, len(rows))
	for i, r := range rows {
		out[i] = storedRow(r)
	}
	return out, nil
}

// BlockedKey returns the key of source, topic and key as
// [Consumer.BlockedKeys] would list it, and whether it is stuck (see
// [BlockedKey.Stuck]). It is what an operator's tool checks before
// [Consumer.SkipNext].
func (c *Consumer) BlockedKey(ctx context.Context, source, topic, key string) (BlockedKey, bool, error) {
	s := tables.Stream{Source: source, Topic: topic, Key: key}
	st, err := c.browser().KeyState(ctx, c.db, s)
	if err != nil {
		return BlockedKey{}, false, fmt.Errorf("consumer: read key %q: %w", key, err)
	}
	b, err := c.blockedKey(ctx, s, st.Applied, st.Held, st.Since)
	if err != nil {
		return BlockedKey{}, false, fmt.Errorf("consumer: read key %q: %w", key, err)
	}
	return b, b.Stuck(), nil
}

// Stuck reports whether the key waits for more than its turn: its next
// event failed, is being retried after failing, runs, or never arrived
// while later events are held. A key whose next event is merely due (woken
// once the event before it was applied or skipped, and not yet tried)
// is not stuck: a running consumer of the group runs it next.
func (b BlockedKey) Stuck() bool {
	switch b.NextStatus {
	case tables.StatusFailed, tables.StatusProcessing:
		return true
	case tables.StatusPending:
		return b.Next.Attempt > 0
	case StatusMissing:
		return b.Waiting > 0
	}
	return false
}

// RowIDs returns the row ids of the group's messages among messageIDs, by
// message id; message ids the group has no row of are left out.
func (c *Consumer) RowIDs(ctx context.Context, messageIDs ...string) (map[string]int64, error) {
	out, err := c.browser().RowIDs(ctx, c.db, messageIDs)
	if err != nil {
		return nil, fmt.Errorf("consumer: row ids of %d messages: %w", len(messageIDs), err)
	}
	return out, nil
}

func (c *Consumer) browser() *tables.Browser {
	return tables.NewInboxBrowser(c.inbox.D, c.opts.Table, c.opts.Group)
}

// ConsumerGroups returns the consumer groups that have messages in the
// inbox table named table (DefaultInboxTable if empty), sorted. It reads
// the whole table's group column, and is meant for tools at start-up.
func ConsumerGroups(ctx context.Context, db *bun.DB, table string) ([]string, error) {
	if table == "" {
		table = DefaultInboxTable
	}
	if err := sqlstore.ValidateTableName(table); err != nil {
		return nil, fmt.Errorf("consumer groups: %w", err)
	}
	d, err := sqlstore.DialectOf(db)
	if err != nil {
		return nil, fmt.Errorf("consumer groups: %w", err)
	}
	groups, err := tables.InboxGroups(ctx, db, d, table)
	if err != nil {
		return nil, fmt.Errorf("consumer groups: %w", err)
	}
	return groups, nil
}

// listRows reads one page of the rows f selects.
func listRows(ctx context.Context, b *tables.Browser, db bun.IDB, f RowFilter) (RowPage, error) {
	if f.Before != 0 && f.After != 0 {
		return RowPage{}, fmt.Errorf("give Before or After, not both")
	}
	if f.Limit < 0 {
		return RowPage{}, fmt.Errorf("limit %d is negative", f.Limit)
	}
	limit := f.Limit
	if limit == 0 {
		limit = 50
	}
	limit = min(limit, maxRowLimit)
	bf := tables.BrowseFilter{Status: f.Status, Name: f.Name, Key: f.Key, MessageID: f.MessageID, Before: f.Before, After: f.After, Limit: limit + 1}
	if !f.Since.IsZero() {
		bf.Since = f.Since.UnixMicro()
	}
	if !f.Until.IsZero() {
		bf.Until = f.Until.UnixMicro()
	}
	rows, err := b.List(ctx, db, bf)
	if err != nil {
		return RowPage{}, err
	}
	more := len(rows) > limit
	rows = rows[:min(len(rows), limit)]
	if f.After != 0 {
		slices.Reverse(rows)
	}
	var p RowPage
	p.Rows = make([]StoredRow, len(rows))
	for i, r := range rows {
		p.Rows[i] = storedRow(r)
	}
	if len(rows) == 0 {
		// Past either end: offer the way back.
		switch {
		case f.Before != 0:
			p.Newer = f.Before - 1
		case f.After != 0:
			p.Older = f.After + 1
		}
		return p, nil
	}
	first, last := rows[0].ID, rows[len(rows)-1].ID
	if f.After != 0 {
		if more {
			p.Newer = first
		}
		p.Older = last
	} else {
		if more {
			p.Older = last
		}
		if f.Before != 0 {
			p.Newer = first
		}
	}
	return p, nil
}

func throughput(ctx context.Context, b *tables.Browser, db bun.IDB, retention time.Duration) (Throughput, error) {
	buckets, start, err := b.Throughput(ctx, db, throughputWindow.Microseconds(), retention.Microseconds())
	if err != nil {
		return Throughput{}, err
	}
	minutes := int(throughputWindow / time.Minute)
	t := Throughput{Start: time.UnixMicro(start).UTC(), Counts: map[string][]int64{}}
	for _, bk := range buckets {
		if bk.Minute < 0 || bk.Minute >= minutes {
			continue // finished in the instant between the clock and the query
		}
		c := t.Counts[bk.Status]
		if c == nil {
			c = make([]int64, minutes)
			t.Counts[bk.Status] = c
		}
		c[bk.Minute] += bk.N
	}
	return t, nil
}

func storedRow(r tables.BrowseRow) StoredRow {
	s := StoredRow{
		ID: r.ID, MessageID: r.MessageID, Name: r.Name, Version: r.Version, Topic: r.Topic, Key: r.Key, Source: r.Source, Sequence: r.Seq,
		EventTime: microTime(r.EventTime), Status: r.Status, Attempts: r.Attempts,
		CreatedAt: microTime(r.CreatedAt), NextAttemptAt: microTime(r.NextAttempt), FinishedAt: microTime(r.DoneAt),
		ExpiresAt: microTime(r.ExpiresAt), LeaseUntil: microTime(r.LeaseUntil), LockOwner: r.LockOwner, LastError: r.LastError,
		Payload: r.Payload,
	}
	if r.Headers != "" {
		// Written by Publish or by the consumer as a JSON object of
		// strings; a row written otherwise shows no headers.
		s.Headers, _ = decodeHeaders(r.Headers)
	}
	return s
}

// microTime returns µs since the epoch as a UTC time, and 0 as the zero
// time.
func microTime(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
