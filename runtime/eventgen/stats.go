package eventgen

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/tables"
)

// StatsHistoryLimit is how many finished rows [Outbox.Stats] and
// [Consumer.Stats] read at most to count the published events of an outbox
// or the handled messages of a group.
//
// Those rows are the table's history, kept for PublishedRetention or
// SucceededRetention: millions of them on a busy table. No index holds
// their number, so an exact count would read every one of them, and Stats
// must stay cheap enough for a health check. Stats counts the newest of
// them instead, up to this limit. The counts of events and messages that
// wait, run or failed are always exact.
const StatsHistoryLimit = 1000

// OutboxStats is a snapshot of an outbox table, from [Outbox.Stats]. The
// counts and the age come from one statement, and so agree with each other.
type OutboxStats struct {
	// Scheduled counts the events published with a delay (WithDelay,
	// WithDeliverAt) that the relay has not claimed yet, due or not.
	Scheduled int64
	// Pending counts the events waiting for the relay: new ones, and those
	// waiting for a retry.
	Pending int64
	// Retrying counts the pending events that have failed at least one
	// publish. They are part of Pending.
	Retrying int64
	// Processing counts the events a relay has claimed and is publishing,
	// and those of a relay that stopped, until their lease ends.
	Processing int64
	// Failed counts the events that used up their retries and are kept for
	// FailedRetention: see [Outbox.Failed] and [Outbox.Requeue].
	Failed int64
	// Published counts the published events the table keeps (for
	// PublishedRetention), up to [StatsHistoryLimit].
	Published int64
	// HistoryCapped reports that Published reached StatsHistoryLimit: the
	// table may keep more published events.
	HistoryCapped bool
	// OldestPending is how long the event due the longest has waited for a
	// relay to claim it, on the database's clock: the time since it was
	// written, or since its delay or retry delay ended (or since the lease
	// of a relay that stopped ended). It is 0 when no event is due. It is
	// the relay's lag: it grows while no relay runs or the relay falls
	// behind.
	OldestPending time.Duration
}

// Stats counts the outbox's events by status and measures how long the
// event due the longest has waited: see [OutboxStats]. It runs one
// statement that reads three of the table's indexes (those of unfinished,
// failed and expiring rows), so its cost grows with the events that wait,
// run or failed, and not with the published history the table keeps. It
// is meant for health checks and dashboards polled every few seconds.
//
// On MySQL and MariaDB the table must have been migrated by this version's
// [Outbox.Migrate], which adds the index of failed events.
func (o *Outbox) Stats(ctx context.Context) (OutboxStats, error) {
	return outboxStats(ctx, o.store, o.db)
}

// outboxStats is Outbox.Stats, for the gauges, which hold no Outbox.
func outboxStats(ctx context.Context, store *tables.Outbox, db bun.IDB) (OutboxStats, error) {
	st, err := store.Stats(ctx, db, StatsHistoryLimit)
	if err != nil {
		return OutboxStats{}, fmt.Errorf("outbox: stats: %w", err)
	}
	return OutboxStats{
		Scheduled:     st.Rows[tables.StatusScheduled],
		Pending:       st.Rows[tables.StatusPending],
		Retrying:      st.Retrying,
		Processing:    st.Rows[tables.StatusProcessing],
		Failed:        st.Rows[tables.StatusFailed],
		Published:     st.Rows[tables.StatusPublished],
		HistoryCapped: st.HistoryCapped,
		OldestPending: st.OldestDue,
	}, nil
}

// ConsumerStats is a snapshot of one consumer group's inbox, from
// [Consumer.Stats]. The counts of rows and the age come from one
// statement, and so agree with each other; the keys are counted just
// after.
type ConsumerStats struct {
	// Pending counts the group's messages waiting for a retry. A message
	// is handled as it is delivered, and stored as pending only after its
	// handler failed, so every pending message has failed at least once,
	// but for held events just woken (see Held), due at once.
	Pending int64
	// Held counts the events that wait for the event before them of
	// their key (see docs/ordering.md): taking no handler slot, they run
	// once it is applied. Many, or old, held events mean blocked keys:
	// see [Consumer.BlockedKeys].
	Held int64
	// Processing counts the messages a retrier has claimed and is
	// handling, and those of a retrier that stopped, until their lease
	// ends.
	Processing int64
	// Failed counts the messages that failed for good and are kept for
	// FailedRetention: see [Consumer.Failed] and [Consumer.Reexecute].
	Failed int64
	// Succeeded counts the handled messages the table keeps (for
	// SucceededRetention), and Skipped those the group has no handler
	// for, among the newest [StatsHistoryLimit] of the two together.
	Succeeded, Skipped int64
	// HistoryCapped reports that Succeeded and Skipped together reached
	// StatsHistoryLimit: the table may keep more of them.
	HistoryCapped bool
	// OldestPending is how long the message due the longest has waited
	// for a retrier to claim it, on the database's clock: the time since
	// its retry delay ended (or since the lease of a retrier that stopped
	// ended). It is 0 when no message is due. It grows while no consumer
	// of the group runs or its retries fall behind.
	OldestPending time.Duration
	// BlockedKeys counts the keys whose events wait (see
	// docs/ordering.md), those [Consumer.BlockedKeys] lists, up to
	// [StatsHistoryLimit]. FailedKeys counts those of them whose next
	// event failed for good: they stay blocked until an operator
	// re-executes or skips it. The others wait for an event that is being
	// handled, retried, or not received yet; a key held for a moment
	// while a broker reorders shows among them.
	BlockedKeys, FailedKeys int64
}

// Stats counts this group's inbox rows by status and measures how long the
// message due the longest has waited: see [ConsumerStats]. It runs one
// statement that reads three of the table's indexes (those of unfinished,
// failed and expiring rows, each by group), so its cost grows with the
// group's messages that wait, run or failed, and not with the history the
// table keeps. When events are held or failed, it then counts the blocked
// keys with up to four more: one groups the held rows by key on their
// index, one reads up to StatsHistoryLimit failed rows on theirs, and two
// look their keys up in the key table. It is meant for health checks and
// dashboards polled every few seconds, and needs no subscriber.
func (c *Consumer) Stats(ctx context.Context) (ConsumerStats, error) {
	return consumerStats(ctx, c.inbox, c.db)
}

// consumerStats is Consumer.Stats, for the gauges, which hold no Consumer.
func consumerStats(ctx context.Context, inbox *tables.Inbox, db bun.IDB) (ConsumerStats, error) {
	st, err := inbox.Stats(ctx, db, StatsHistoryLimit)
	if err != nil {
		return ConsumerStats{}, fmt.Errorf("consumer: stats: %w", err)
	}
	cs := ConsumerStats{
		Held:          st.Rows[tables.StatusHeld],
		Pending:       st.Rows[tables.StatusPending],
		Processing:    st.Rows[tables.StatusProcessing],
		Failed:        st.Rows[tables.StatusFailed],
		Succeeded:     st.Rows[tables.StatusSucceeded],
		Skipped:       st.Rows[tables.StatusSkipped],
		HistoryCapped: st.HistoryCapped,
		OldestPending: st.OldestDue,
	}
	if cs.Held == 0 && cs.Failed == 0 {
		return cs, nil // no key can be blocked
	}
	blocked, err := inbox.BlockedStreams(ctx, db, StatsHistoryLimit)
	if err != nil {
		return ConsumerStats{}, fmt.Errorf("consumer: stats: blocked keys: %w", err)
	}
	cs.BlockedKeys = int64(len(blocked))
	for _, b := range blocked {
		if b.HeadFailed {
			cs.FailedKeys++
		}
	}
	return cs, nil
}
