package eventgen

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// TestOutboxStats checks Outbox.Stats against the table while the relay is
// stopped, as the pending events' age grows, and after the relay drained
// them. The engine's counts are checked status by status in
// runtime/internal/tables.
func TestOutboxStats(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ctx := context.Background()
			ob := newOutbox(t, db, newPubSub(t), OutboxOptions{PollInterval: 10 * time.Millisecond})
			publish(t, ob, db, 0, 5)
			publish(t, ob, db, 5, 1, WithDelay(time.Hour))
			time.Sleep(10 * time.Millisecond) // SQLite's clock counts milliseconds
			first, err := ob.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := (OutboxStats{Scheduled: 1, Pending: 5, OldestPending: first.OldestPending}); first != want || first.OldestPending <= 0 {
				t.Errorf("Stats with the relay stopped = %+v, want %+v with OldestPending above 0", first, want)
			}
			time.Sleep(100 * time.Millisecond)
			second, err := ob.Stats(ctx)
			if err != nil || second.OldestPending < first.OldestPending+90*time.Millisecond {
				t.Errorf("100ms later OldestPending = %s, %v; was %s", second.OldestPending, err, first.OldestPending)
			}

			run(t, ob)
			deadline := time.Now().Add(testTimeout)
			var st OutboxStats
			for st.Published < 5 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				if st, err = ob.Stats(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if want := (OutboxStats{Scheduled: 1, Published: 5}); st != want {
				t.Errorf("Stats after the relay ran = %+v, want %+v", st, want)
			}
			counts := statusCounts(t, ob)
			if counts[tables.StatusPublished] != 5 || counts[tables.StatusScheduled] != 1 {
				t.Errorf("the table holds %v", counts)
			}
		})
	}
}

// TestConsumerStats checks that Consumer.Stats counts its own group's inbox
// rows, without a subscriber.
func TestConsumerStats(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		consumer := func(group string) *Consumer {
			c, err := NewConsumer(h.db, nil, ConsumerOptions{Group: group, Table: h.table, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			return c
		}
		c, other := consumer("ops"), consumer("other")
		storeFailed(t, c, "m1")
		storeFailed(t, c, "m2")
		storeFailed(t, other, "m1")
		for i, o := range []tables.Outcome{
			{Status: tables.StatusPending, Attempts: 1, Delay: time.Hour, LastError: "retry me"},
			c.finished(tables.StatusSucceeded, 1, ""),
			c.finished(tables.StatusSucceeded, 2, ""),
			c.finished(tables.StatusSkipped, 0, "no handler"),
		} {
			row := tables.InboxRow{MessageID: fmt.Sprintf("r%d", i), Name: "OrderPlaced", Version: 1, Topic: topicOrders, Payload: []byte(`{}`)}
			if _, err := c.inbox.Insert(ctx, h.db, row, o); err != nil {
				t.Fatal(err)
			}
		}
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := (ConsumerStats{Pending: 1, Failed: 2, Succeeded: 2, Skipped: 1}); st != want {
			t.Errorf("Stats = %+v, want %+v", st, want)
		}
		if st, err := other.Stats(ctx); err != nil || st != (ConsumerStats{Failed: 1}) {
			t.Errorf("Stats of the other group = %+v, %v; want 1 failed", st, err)
		}
	})
}
