package eventgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/internal/tables"
)

// Per-key ordering on the consumer's side.
//
// An event with a key carries its sequence: its position among the events
// of its source, topic and key, in commit order (see Outbox.Publish). The
// group keeps, per such stream, the last sequence it applied. An event runs
// only in the transaction that moves its stream from the sequence before it
// to its own; that move locks the stream's row until the transaction ends,
// so the next event of the key, delivered meanwhile to another handler or
// replica, waits for the commit and then runs, or finds the stream behind
// (the handler failed and rolled back) and is stored as held. A held event
// takes no handler slot: once the event before it is applied (run, or
// skipped for want of a handler), the goroutine that applied it claims and
// runs it next, in the same slot (see runNext); after an operator's skip,
// the retrier does. An event whose sequence the stream has already passed
// arrived after the events behind it ran: it is recorded as failed, not
// run.
//
// A failed event blocks its key: it is kept (not cleaned up) until it is
// re-executed or skipped (Consumer.SkipNext), and the key's later events
// wait behind it. Other keys go on.

// deliverInOrder handles a delivered event with a sequence: in its turn,
// or held until its turn, or failed if its turn has passed. h is nil when
// the group has no handler for the event; it is then skipped in its turn,
// which moves the key on. It reports whether it applied the event, so that
// the held events after it may run (see runNext).
func (c *Consumer) deliverInOrder(ctx context.Context, msg *message.Message, row tables.InboxRow, headers map[string]string, h *handler) (applied bool) {
	span := trace.SpanFromContext(ctx)
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		c.redeliver(ctx, msg, row, "begin transaction", err)
		return false
	}
	pos, err := c.inbox.Advance(ctx, tx, row)
	if err != nil {
		_ = tx.Rollback()
		c.redeliver(ctx, msg, row, "take its key's turn", err)
		return false
	}
	o := c.finished(tables.StatusSucceeded, 1, "")
	switch {
	case !pos.Advanced:
		o = c.outOfTurn(row, pos)
	case h == nil:
		o = c.skipped(row)
	}
	inserted, err := c.inbox.Insert(ctx, tx, row, o)
	if err != nil {
		_ = tx.Rollback()
		c.redeliver(ctx, msg, row, "insert inbox row", err)
		return false
	}
	if !inserted {
		_ = tx.Rollback()
		msg.Ack()
		span.AddEvent("duplicate")
		c.hooks.onSettled(row.MessageID, outcomeDuplicate)
		return false
	}
	if pos.Advanced && h != nil {
		began := time.Now()
		herr := c.call(ctx, tx, h, row, metadataOf(row, headers, 1, c.opts.Group))
		c.metrics.ran(&row, began, herr)
		if herr != nil {
			c.deliveryFailed(ctx, tx, msg, row, herr)
			return false
		}
	}
	if err := tx.Commit(); err != nil {
		c.redeliver(ctx, msg, row, "commit", err)
		return false
	}
	c.dbErrors.Store(0)
	msg.Ack()
	if o.Status != tables.StatusSucceeded {
		spanOutcome(span, o, nil, o.Status)
		c.logOutcome(row, o)
	}
	c.metrics.outcome(&row, o.Status)
	c.hooks.onSettled(row.MessageID, o.Status)
	return pos.Advanced
}

// outOfTurn is the outcome of an event that is not its key's next one:
// held if events before it are still to come, failed if the key has
// already passed it.
func (c *Consumer) outOfTurn(row tables.InboxRow, pos tables.Position) tables.Outcome {
	if pos.Applied < row.Seq {
		return tables.Outcome{Status: tables.StatusHeld}
	}
	return c.finished(tables.StatusFailed, 0, fmt.Sprintf(
		"out of order: event %d of key %q arrived after the group had applied its key up to event %d; not run", row.Seq, row.Key, pos.Applied))
}

// retryInOrder takes a claimed row with a sequence through its key's turn
// in tx, the retrier's transaction that owns it. It reports whether the row
// may run; if not, it has parked the row (held again) or failed it (its
// turn has passed), and committed tx.
func (c *Consumer) retryInOrder(ctx context.Context, tx bun.Tx, row tables.InboxRow) (bool, error) {
	pos, err := c.inbox.Advance(ctx, tx, row)
	if err != nil || pos.Advanced {
		return pos.Advanced, err
	}
	o := c.outOfTurn(row, pos)
	if o.Status == tables.StatusHeld {
		err = c.inbox.Park(ctx, tx, c.owner, row.ID)
	} else {
		err = c.inbox.Finish(ctx, tx, c.owner, row.ID, o.Status, row.Attempts-1, o.Retention, o.LastError)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return false, err
	}
	c.logOutcome(row, o)
	c.hooks.onSettled(row.MessageID, o.Status)
	return false, nil
}

// runNext runs, in this goroutine and its handler slot, the held events
// that follow row in its key, one after another while each is applied:
// an event held for its turn runs as soon as its turn comes, without
// waiting for the retrier. Each is claimed with a lease, as the retrier
// would; if that fails, the retrier's scan of held events finds it.
func (c *Consumer) runNext(ctx context.Context, row tables.InboxRow) {
	// The next events' spans are not children of this one's.
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	for ctx.Err() == nil {
		next, ok, err := c.inbox.TakeNext(ctx, c.db, c.owner, row, c.opts.LeaseDuration)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("consumer: take the next event of a key failed; the retrier's scan will", "key", row.Key, "sequence", row.Seq+1, "error", err)
			}
			return
		}
		if !ok || !c.retry(ctx, next) {
			return
		}
		row = next
	}
}

// pokeRetrier makes the retrier look for due rows now.
func (c *Consumer) pokeRetrier() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// heldScanInterval is how often the retrier looks at the held events: for
// a wake that was lost (the process ended between a commit and its wake),
// and for keys that wait longer than GapTimeout.
func (c *Consumer) heldScanInterval() time.Duration {
	return min(5*time.Second, max(c.opts.GapTimeout/2, c.opts.PollInterval))
}

// maxHeldScan bounds the keys one scan of held events looks at.
const maxHeldScan = 1000

// scanHeld wakes held events whose turn has come, moves keys the group
// never saw the start of past their gap once GapTimeout has passed, and
// logs, once, keys that wait longer than that for an event they have not
// received.
func (c *Consumer) scanHeld(ctx context.Context) {
	streams, err := c.inbox.HeldStreams(ctx, c.db, c.opts.GapTimeout, maxHeldScan)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("consumer: scan held events failed", "error", err)
		}
		return
	}
	for _, s := range streams {
		switch {
		case s.Applied >= s.FirstHeld-1:
			if woke, err := c.inbox.WakeSeq(ctx, c.db, s.Stream, s.FirstHeld); err == nil && woke {
				c.pokeRetrier()
			}
		case s.Overdue && s.Applied == 0:
			at, _, err := c.inbox.Skip(ctx, c.db, s.Stream, "", 0, true)
			if err != nil {
				if !errors.Is(err, tables.ErrNotMissing) && ctx.Err() == nil {
					c.log.Warn("consumer: move a key past events it never received failed", "key", s.Key, "error", err)
				}
				continue
			}
			c.log.Warn("consumer: the group has no record of a key's first events (never received, or applied before it forgot the key); it applies the key's events from the first it holds",
				"source", s.Source, "topic", s.Topic, "key", s.Key, "missing", fmt.Sprintf("1..%d", at), "waited", c.opts.GapTimeout)
			if woke, err := c.inbox.WakeSeq(ctx, c.db, s.Stream, at+1); err == nil && woke {
				c.pokeRetrier()
			}
		case s.Overdue:
			c.warnOnce(s.ID(), "consumer: a key waits for an event the group has not received; its later events are held (see BlockedKeys)",
				"source", s.Source, "topic", s.Topic, "key", s.Key, "waiting_for", s.Applied+1, "held", s.Held,
				"since", time.UnixMicro(s.Since).UTC())
		}
	}
}

// warned remembers the keys warnOnce logged, up to maxWarned of them.
type warned struct {
	mu   sync.Mutex
	seen map[string]bool
}

const maxWarned = 10_000

func (c *Consumer) warnOnce(id, msg string, args ...any) {
	c.warned.mu.Lock()
	if c.warned.seen == nil || len(c.warned.seen) >= maxWarned {
		c.warned.seen = make(map[string]bool)
	}
	seen := c.warned.seen[id]
	c.warned.seen[id] = true
	c.warned.mu.Unlock()
	if !seen {
		c.log.Warn(msg, args...)
	}
}

// BlockedKey is a key whose events wait in one consumer group: its next
// event failed, or is being retried, or never arrived.
type BlockedKey struct {
	// Source, Topic and Key name the key's events.
	Source, Topic, Key string
	// Applied is the sequence of the last event applied (or skipped).
	Applied int64
	// Next is the event that must be applied next, with Sequence
	// Applied+1. Its ID is empty when it is missing.
	Next FailedMessage
	// NextStatus is that event's status: failed (re-execute or skip it),
	// pending (its handler is being retried), processing, or missing.
	NextStatus string
	// Waiting counts the events held behind it, the oldest since Since.
	Waiting int
	Since   time.Time
}

// StatusMissing is a BlockedKey's NextStatus when the group never received
// the key's next event, or applied it before it forgot the key (see
// ConsumerOptions.KeyRetention) and the key started again.
const StatusMissing = "missing"

// BlockedKeys returns up to limit keys whose events wait in this group,
// those waiting longest first, and then keys whose next event failed with
// nothing behind it yet.
func (c *Consumer) BlockedKeys(ctx context.Context, limit int) ([]BlockedKey, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("consumer: blocked keys: limit %d is not positive", limit)
	}
	streams, err := c.inbox.BlockedStreams(ctx, c.db, limit)
	if err != nil {
		return nil, fmt.Errorf("consumer: blocked keys: %w", err)
	}
	out := make([]BlockedKey, 0, len(streams))
	for _, s := range streams {
		b, err := c.blockedKey(ctx, s.Stream, s.Applied, s.Held, s.Since)
		if err != nil {
			return nil, fmt.Errorf("consumer: blocked keys: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

// blockedKey returns stream s as BlockedKeys lists it, from where it stands
// (applied) and its held rows (the oldest written at since, in µs), with
// its next event read from the inbox.
func (c *Consumer) blockedKey(ctx context.Context, s tables.Stream, applied int64, held int, since int64) (BlockedKey, error) {
	b := BlockedKey{Source: s.Source, Topic: s.Topic, Key: s.Key, Applied: applied, Waiting: held, NextStatus: StatusMissing}
	if held > 0 {
		b.Since = time.UnixMicro(since).UTC()
	}
	b.Next.Source, b.Next.Topic, b.Next.Key, b.Next.Sequence, b.Next.Group = s.Source, s.Topic, s.Key, applied+1, c.opts.Group
	r, ok, err := c.inbox.Next(ctx, c.db, s, applied+1)
	if err != nil {
		return b, err
	}
	if ok {
		b.Next, b.NextStatus = c.failedMessage(r), r.Status
	}
	return b, nil
}

// SkipNext moves a blocked key past its next event, deliberately: that
// event, if the group has it and it is failed or waiting for a retry, is
// marked skipped (its handler does not run), and the key's next events
// run. If the group never received it, the key moves on to the first event
// it holds. It returns the skipped event's message id, empty when it
// skipped events that never arrived. It is an operator's action, logged;
// see [Consumer.BlockedKeys].
func (c *Consumer) SkipNext(ctx context.Context, source, topic, key string) (string, error) {
	s := tables.Stream{Source: source, Topic: topic, Key: key}
	at, skipped, err := c.inbox.Skip(ctx, c.db, s, "skipped by an operator", c.opts.SucceededRetention, false)
	if err != nil {
		return "", fmt.Errorf("consumer: skip the next event of key %q: %w", key, err)
	}
	id := ""
	if skipped != nil {
		id = skipped.MessageID
	}
	c.log.Warn("consumer: skipped the next event of a key", "source", source, "topic", topic, "key", key,
		"sequence", at, "message_id", id)
	if woke, err := c.inbox.WakeSeq(ctx, c.db, s, at+1); err != nil {
		c.log.Warn("consumer: wake the event after a skip failed; the retrier's scan will", "key", key, "error", err)
	} else if woke {
		c.pokeRetrier()
	}
	return id, nil
}
