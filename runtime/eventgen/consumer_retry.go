package eventgen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/tables"
)

// retryLoop runs the persistent retrier every PollInterval, and at once when
// a held event is woken, until ctx is done; and scans the held events every
// heldScanInterval.
func (c *Consumer) retryLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	scan := time.NewTicker(c.heldScanInterval())
	defer scan.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.poke:
		case <-scan.C:
			c.scanHeld(ctx)
			continue
		}
		n := c.retryDue(ctx, wg)
		c.hooks.onRetryPass(n)
	}
}

// retryDue claims due rows, no more than there are free handler slots, and
// runs each in its own goroutine. It claims again while batches come back
// full, and returns how many rows it claimed.
func (c *Consumer) retryDue(ctx context.Context, wg *sync.WaitGroup) int {
	total := 0
	for {
		n := c.acquireUpTo(ctx, c.opts.RetryBatch)
		if n == 0 {
			return total
		}
		rows, err := c.inbox.Claim(ctx, c.db, leased.Claim{Owner: c.owner, Limit: n, Lease: c.opts.LeaseDuration})
		if err != nil {
			c.release(n)
			if ctx.Err() == nil {
				c.log.Warn("consumer: claim due rows failed", "error", err)
			}
			return total
		}
		c.release(n - len(rows))
		for _, r := range rows {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.release(1)
				if c.retry(ctx, r) {
					c.runNext(ctx, r)
				}
			}()
		}
		total += len(rows)
		if len(rows) < n {
			return total
		}
	}
}

// acquireUpTo waits for one handler slot and takes up to max-1 more that are
// free. It returns how many it took: 0 once ctx is done.
func (c *Consumer) acquireUpTo(ctx context.Context, max int) int {
	if !c.acquire(ctx) {
		return 0
	}
	n := 1
	for n < max {
		select {
		case c.sem <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

// retry runs one claimed row: in a transaction that first checks the lease
// is still held, the handler, then the succeeded mark. A failure sends the
// row back to pending or ends it as failed. It reports whether it applied
// a row with a sequence (ran or skipped it in its turn), so that the next
// event of its key may run.
//
// Each run is a CONSUMER span, parented to the trace context stored with
// the row from the message that first brought it.
func (c *Consumer) retry(ctx context.Context, row tables.InboxRow) (applied bool) {
	headers := rowHeaders(row)
	ctx, span := c.tracing.startProcess(ctx, headers, &row, c.opts.Group, row.Attempts)
	defer span.End()
	if row.Attempts > c.opts.MaxRetries {
		// Only a run that never finished (its lease expired) gets here.
		o := c.failed(row, row.Attempts,
			fmt.Sprintf("gave up after %d attempts; the last did not finish within its lease (did the process crash?); previous error: %s",
				row.Attempts-1, row.LastError.String))
		spanOutcome(span, o, nil, "")
		c.finish(ctx, row, o)
		return false
	}
	h := c.handlers[row.Name]
	if h == nil && row.Seq == 0 {
		// Re-executed, or recorded by a replica with other handlers.
		o := c.skipped(row)
		o.Attempts = row.Attempts - 1
		spanOutcome(span, o, nil, "skipped")
		c.finish(ctx, row, o)
		return false
	}
	if reason := wrongTopic(h, row.Topic); reason != "" {
		// Re-executed after it was rejected: it stays rejected.
		o := c.finished(tables.StatusFailed, row.Attempts-1, reason)
		spanOutcome(span, o, nil, "rejected")
		c.finish(ctx, row, o)
		return false
	}
	if ctx.Err() != nil {
		c.releaseRow(ctx, row) // claimed as shutdown began
		return false
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		c.retryError(ctx, row, "begin transaction", err)
		return false
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	owned, err := c.inbox.Own(ctx, tx, c.owner, row.ID, c.opts.LeaseDuration)
	if err != nil {
		c.retryError(ctx, row, "check lease", err)
		return false
	}
	if !owned {
		span.AddEvent("lease lost")
		c.log.Info("consumer: lease lost before the run; another replica has the row", "message_id", row.MessageID)
		c.hooks.onSettled(row.MessageID, outcomeLostLease)
		return false
	}
	if row.Seq > 0 {
		ok, err := c.retryInOrder(ctx, tx, row)
		if err != nil {
			c.retryError(ctx, row, "take its key's turn", err)
			return false
		}
		if !ok {
			return false
		}
		if h == nil {
			// In its turn, skipped: the key moves on.
			o := c.skipped(row)
			err := c.inbox.Finish(ctx, tx, c.owner, row.ID, o.Status, row.Attempts-1, o.Retention, o.LastError)
			if err == nil {
				err = tx.Commit()
			}
			if err != nil {
				c.retryError(ctx, row, "mark skipped", err)
				return false
			}
			spanOutcome(span, o, nil, "skipped")
			c.metrics.outcome(&row, o.Status)
			c.hooks.onSettled(row.MessageID, o.Status)
			return true
		}
	}
	began := time.Now()
	herr := c.call(ctx, tx, h, row, metadataOf(row, headers, row.Attempts, c.opts.Group))
	c.metrics.ran(&row, began, herr)
	if herr == nil {
		if _, err := c.inbox.Done(ctx, tx, c.owner, []int64{row.ID}, 0, c.opts.SucceededRetention); err != nil {
			c.retryError(ctx, row, "mark succeeded", err)
			return false
		}
		if err := tx.Commit(); err != nil {
			c.retryError(ctx, row, "commit", err)
			return false
		}
		c.metrics.outcome(&row, tables.StatusSucceeded)
		if row.Attempts > 1 {
			c.log.Info("message handled on retry", "message_id", row.MessageID, "event", row.Name, "attempt", row.Attempts)
		}
		c.hooks.onSettled(row.MessageID, tables.StatusSucceeded)
		return row.Seq > 0
	}
	_ = tx.Rollback()
	if ctx.Err() != nil {
		spanError(span, herr, false, 0)
		c.releaseRow(ctx, row)
		return false
	}
	o := c.afterFailure(row, row.Attempts, herr)
	spanOutcome(span, o, herr, "")
	if o.Status == tables.StatusFailed {
		c.finish(ctx, row, o)
		return false
	}
	// Record the failure even if shutdown begins meanwhile.
	dctx, cancel := detached(ctx)
	defer cancel()
	if err := c.inbox.Retry(dctx, c.db, c.owner, row.ID, row.Attempts, o.Delay, o.LastError); err != nil {
		c.retryError(ctx, row, "schedule retry", err)
		return false
	}
	c.metrics.outcome(&row, tables.StatusPending)
	c.hooks.onSettled(row.MessageID, tables.StatusPending)
	return false
}

// finish ends a claimed row as failed or skipped.
func (c *Consumer) finish(ctx context.Context, row tables.InboxRow, o tables.Outcome) {
	dctx, cancel := detached(ctx)
	defer cancel()
	err := c.db.RunInTx(dctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if err := c.inbox.Finish(ctx, tx, c.owner, row.ID, o.Status, o.Attempts, o.Retention, o.LastError); err != nil || !o.Keep {
			return err
		}
		return c.inbox.Keep(ctx, tx, row.ID)
	})
	if err != nil {
		c.retryError(ctx, row, "mark "+o.Status, err)
		return
	}
	c.metrics.outcome(&row, o.Status)
	c.logOutcome(row, o)
	c.hooks.onSettled(row.MessageID, o.Status)
}

// retryError handles a database error of the retrier. At shutdown the row is
// given back; otherwise it keeps its lease and is claimed again once the
// lease expires.
func (c *Consumer) retryError(ctx context.Context, row tables.InboxRow, what string, err error) {
	spanError(trace.SpanFromContext(ctx), fmt.Errorf("%s: %w", what, err), false, 0)
	if ctx.Err() != nil {
		c.releaseRow(ctx, row)
		return
	}
	c.log.Warn("consumer: retry: "+what+" failed; the row is retried when its lease expires",
		"message_id", row.MessageID, "event", row.Name, "error", err)
	c.hooks.onSettled(row.MessageID, outcomeNacked)
}

// releaseRow gives back, at shutdown, a claimed row whose run did not finish,
// rather than leave it until its lease expires. The unfinished attempt is
// not counted.
func (c *Consumer) releaseRow(ctx context.Context, row tables.InboxRow) {
	dctx, cancel := detached(ctx)
	defer cancel()
	if err := c.inbox.Release(dctx, c.db, c.owner, []int64{row.ID}); err != nil {
		c.log.Warn("consumer: release row at shutdown failed; it is retried when its lease expires",
			"message_id", row.MessageID, "error", err)
		c.hooks.onSettled(row.MessageID, outcomeNacked)
		return
	}
	c.hooks.onSettled(row.MessageID, outcomeReleased)
}

// detached returns a context for a short write that must happen even though
// ctx is ending: recording a retry's outcome, or releasing a row.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
}

// detachedTimeout bounds a write made after shutdown began.
const detachedTimeout = 5 * time.Second

// cleanLoop deletes expired rows at start and then every CleanInterval.
func (c *Consumer) cleanLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := c.Clean(ctx)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("consumer: cleanup failed", "deleted", n, "error", err)
		} else if n > 0 {
			c.log.Info("consumer: cleaned up inbox", "deleted", n)
		}
		c.hooks.onCleaned(n)
		t.Reset(c.opts.CleanInterval)
	}
}

// Clean deletes this group's succeeded and skipped rows older than
// SucceededRetention and failed rows older than FailedRetention, DeleteBatch
// rows per statement, and returns how many it deleted. It also forgets the
// keys silent for KeyRetention that have no events waiting or failed. Run calls it every
// CleanInterval; it is exported for tools and tests.
func (c *Consumer) Clean(ctx context.Context) (int, error) {
	n, err := c.inbox.Cleanup(ctx, c.db, c.opts.DeleteBatch)
	if err != nil {
		return int(n), fmt.Errorf("consumer: clean: %w", err)
	}
	if _, err := c.inbox.ForgetKeys(ctx, c.db, c.opts.KeyRetention, c.opts.DeleteBatch); err != nil {
		return int(n), fmt.Errorf("consumer: clean: forget silent keys: %w", err)
	}
	return int(n), nil
}

// FailedMessage is a received message that failed for good: its handler
// kept failing, it could not be decoded, or its metadata was malformed.
type FailedMessage struct {
	// Metadata is as the handler saw it; Attempt is the number of runs.
	Metadata
	// Payload is the message body as received.
	Payload []byte
	// Error is the last error, with the stack for a panic.
	Error string
	// FailedAt is when the message failed, on the database's clock.
	FailedAt time.Time
}

// Failed returns up to limit of this group's failed messages, oldest first.
func (c *Consumer) Failed(ctx context.Context, limit int) ([]FailedMessage, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("consumer: failed: limit %d is not positive", limit)
	}
	rows, err := c.inbox.Failed(ctx, c.db, limit)
	if err != nil {
		return nil, fmt.Errorf("consumer: list failed: %w", err)
	}
	out := make([]FailedMessage, len(rows))
	for i, r := range rows {
		out[i] = c.failedMessage(r)
	}
	return out, nil
}

func (c *Consumer) failedMessage(r tables.InboxRow) FailedMessage {
	m := FailedMessage{
		Metadata: metadataOf(r, nil, r.Attempts, c.opts.Group),
		Payload:  r.Payload,
		Error:    r.LastError.String,
	}
	if r.HandledAt.Valid {
		m.FailedAt = time.UnixMicro(r.HandledAt.Int64).UTC()
	}
	return m
}

// Reexecute makes this group's failed messages with the given ids (see
// [Metadata.ID]) due at once, with a fresh budget of MaxRetries attempts
// (Metadata.Attempt starts again at 1). The retrier of any running replica
// picks them up. It returns how many messages it re-queued; ids that are not
// failed are ignored.
func (c *Consumer) Reexecute(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := c.inbox.Reexecute(ctx, c.db, ids, c.opts.DeleteBatch)
	if err != nil {
		return 0, fmt.Errorf("consumer: reexecute %d messages: %w", len(ids), err)
	}
	return int(n), nil
}

// ReexecuteFailed does what [Consumer.Reexecute] does for every failed
// message of this group.
func (c *Consumer) ReexecuteFailed(ctx context.Context) (int, error) {
	n, err := c.inbox.RequeueFailed(ctx, c.db, c.opts.DeleteBatch)
	if err != nil {
		return 0, fmt.Errorf("consumer: reexecute failed messages: %w", err)
	}
	return int(n), nil
}

// Close stops reporting the group's gauges (see
// ConsumerOptions.MeterProvider) to the MeterProvider. Call it when done
// with a Consumer before the process ends, after Run has returned; a
// Consumer that is garbage collected stops them too. Close does not close
// the database or the subscriber, and everything but the gauges keeps
// working after it.
func (c *Consumer) Close() error {
	if err := c.metrics.close(); err != nil {
		return fmt.Errorf("consumer: close: unregister metrics: %w", err)
	}
	return nil
}

// consumerHooks lets tests wait for the consumer's progress instead of
// sleeping. Every hook may be nil.
type consumerHooks struct {
	// settled reports how a delivery or a retry run of a message ended: a
	// row status, or one of the outcome constants.
	settled   func(messageID, outcome string)
	retryPass func(claimed int)
	cleaned   func(deleted int)
}

func (h *consumerHooks) onSettled(id, outcome string) {
	if h != nil && h.settled != nil {
		h.settled(id, outcome)
	}
}

func (h *consumerHooks) onRetryPass(n int) {
	if h != nil && h.retryPass != nil {
		h.retryPass(n)
	}
}

func (h *consumerHooks) onCleaned(n int) {
	if h != nil && h.cleaned != nil {
		h.cleaned(n)
	}
}
