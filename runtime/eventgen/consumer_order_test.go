package eventgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport"
)

// orderedMessage is OrderPlaced number seq of order key, as the relay sends
// it, with message id key#seq.
func orderedMessage(t testing.TB, key string, seq int64) *message.Message {
	t.Helper()
	m := eventMessage(t, orderPlaced{OrderID: key}, messageID(key, seq), nil)
	m.Metadata.Set("ce_sequence", fmt.Sprint(seq))
	return m
}

func messageID(key string, seq int64) string { return fmt.Sprintf("%s#%d", key, seq) }

// applied records, per key, the sequences a group's handler ran to success,
// in the order they ran.
type applied struct {
	mu    sync.Mutex
	order []string // key#seq, across keys
}

func (a *applied) add(m Metadata) {
	a.mu.Lock()
	a.order = append(a.order, messageID(m.Key, m.Sequence))
	a.mu.Unlock()
}

// handle is a handler that records every event and succeeds.
func (a *applied) handle(_ context.Context, _ orderPlaced, m Metadata) error {
	a.add(m)
	return nil
}

// of returns key's sequences in the order they ran.
func (a *applied) of(key string) []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []int64
	for _, id := range a.order {
		k, seq, _ := strings.Cut(id, "#")
		if k == key {
			var n int64
			fmt.Sscan(seq, &n)
			out = append(out, n)
		}
	}
	return out
}

func (a *applied) index(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Index(a.order, id)
}

func seqs(from, to int64) []int64 {
	var out []int64
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

// TestConsumerAppliesEachKeyInSequence delivers the events of two keys out
// of order; each key's events run in sequence, and none is left held.
func TestConsumerAppliesEachKeyInSequence(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var got applied
		c, tr := h.orders("billing", fastOptions(), func(ctx context.Context, e orderPlaced, m Metadata) error {
			got.add(m)
			return h.effect(ctx, m.Group, m.ID)
		})
		h.run(c)
		for _, m := range []struct {
			key string
			seq int64
		}{{"a", 3}, {"b", 2}, {"a", 1}, {"b", 1}, {"a", 5}, {"a", 2}, {"b", 3}, {"a", 4}, {"a", 6}} {
			h.publish(topicOrders, orderedMessage(t, m.key, m.seq))
		}
		tr.wait(t, "9 events handled", func() bool { return tr.ever(tables.StatusSucceeded) == 9 })
		if a := got.of("a"); !slices.Equal(a, seqs(1, 6)) {
			t.Errorf("key a ran %v, want 1..6 in order", a)
		}
		if b := got.of("b"); !slices.Equal(b, seqs(1, 3)) {
			t.Errorf("key b ran %v, want 1..3 in order", b)
		}
		if counts := h.statusCounts("billing"); counts[tables.StatusSucceeded] != 9 || len(counts) != 1 {
			t.Errorf("statuses %v, want 9 succeeded and nothing held", counts)
		}
		if rows, distinct := h.effectCounts("billing"); rows != 9 || distinct != 9 {
			t.Errorf("%d effects (%d distinct), want 9", rows, distinct)
		}
	})
}

// TestConsumerFailingEventHoldsOnlyItsKey: an event that fails three times
// and then succeeds holds back the later events of its key, not those of
// another key.
func TestConsumerFailingEventHoldsOnlyItsKey(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var got applied
		var runs atomic.Int32
		opts := fastOptions()
		opts.MaxRetries = 10
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			if m.ID == messageID("slow", 2) {
				// It fails until it has failed three times and every
				// event of the other key has run: if the other key waited
				// for this one, this would never end.
				if runs.Add(1) <= 3 || got.index(messageID("fast", 5)) < 0 {
					return errors.New("not yet")
				}
			}
			got.add(m)
			return nil
		})
		h.run(c)
		for n := int64(1); n <= 5; n++ {
			h.publish(topicOrders, orderedMessage(t, "slow", n))
		}
		for n := int64(1); n <= 5; n++ {
			h.publish(topicOrders, orderedMessage(t, "fast", n))
		}
		tr.wait(t, "10 events handled", func() bool { return tr.ever(tables.StatusSucceeded) == 10 })
		if s := got.of("slow"); !slices.Equal(s, seqs(1, 5)) {
			t.Errorf("key slow ran %v, want 1..5 in order", s)
		}
		if f := got.of("fast"); !slices.Equal(f, seqs(1, 5)) {
			t.Errorf("key fast ran %v, want 1..5 in order", f)
		}
		if n := runs.Load(); n < 4 {
			t.Errorf("slow#2 ran %d times, want at least 4", n)
		}
	})
}

// TestConsumerBlockedKeyReexecuteAndSkip: an event that fails for good
// blocks its key, shows in BlockedKeys, survives cleanup, and unblocks the
// key when re-executed or skipped.
func TestConsumerBlockedKeyReexecuteAndSkip(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var got applied
		var cured atomic.Bool
		opts := fastOptions()
		opts.FailedRetention = time.Microsecond
		opts.SucceededRetention = time.Hour
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			if m.Sequence == 2 && !cured.Load() {
				return permanent(errors.New("bad data"))
			}
			got.add(m)
			return nil
		})
		h.run(c)
		for _, key := range []string{"fixme", "skipme"} {
			for n := int64(1); n <= 4; n++ {
				h.publish(topicOrders, orderedMessage(t, key, n))
			}
		}
		for _, key := range []string{"fixme", "skipme"} {
			tr.waitEver(t, messageID(key, 2), tables.StatusFailed)
			tr.waitEver(t, messageID(key, 3), tables.StatusHeld)
			tr.waitEver(t, messageID(key, 4), tables.StatusHeld)
		}
		ctx := context.Background()
		if _, err := c.Clean(ctx); err != nil {
			t.Fatal(err)
		}
		blocked, err := c.BlockedKeys(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(blocked) != 2 {
			t.Fatalf("BlockedKeys = %+v, want the two keys", blocked)
		}
		for _, b := range blocked {
			if b.Applied != 1 || b.NextStatus != tables.StatusFailed || b.Next.ID != messageID(b.Key, 2) ||
				b.Waiting != 2 || b.Since.IsZero() || !strings.Contains(b.Next.Error, "bad data") || b.Topic != topicOrders {
				t.Errorf("blocked key %+v; want event 2 failed (kept through cleanup) and 2 waiting", b)
			}
		}

		if st, err := c.Stats(ctx); err != nil || st.Held != 4 || st.Failed != 2 || st.BlockedKeys != 2 || st.FailedKeys != 2 {
			t.Errorf("Stats = %+v, %v; want 4 held and 2 failed, and both keys blocked on a failed event", st, err)
		}

		cured.Store(true)
		if n, err := c.Reexecute(ctx, messageID("fixme", 2)); err != nil || n != 1 {
			t.Fatalf("Reexecute = %d, %v", n, err)
		}
		id, err := c.SkipNext(ctx, "test-source", topicOrders, "skipme")
		if err != nil || id != messageID("skipme", 2) {
			t.Fatalf("SkipNext = %q, %v; want skipme#2", id, err)
		}
		tr.waitEver(t, messageID("fixme", 4), tables.StatusSucceeded)
		tr.waitEver(t, messageID("skipme", 4), tables.StatusSucceeded)
		if f := got.of("fixme"); !slices.Equal(f, seqs(1, 4)) {
			t.Errorf("key fixme ran %v, want 1..4 in order", f)
		}
		if s := got.of("skipme"); !slices.Equal(s, []int64{1, 3, 4}) {
			t.Errorf("key skipme ran %v, want 1, 3, 4", s)
		}
		if r := h.row(c, messageID("skipme", 2)); r.Status != tables.StatusSkipped || !strings.Contains(r.LastError.String, "skipped by an operator") {
			t.Errorf("skipped event: status %s, error %q", r.Status, r.LastError.String)
		}
		if blocked, err := c.BlockedKeys(ctx, 10); err != nil || len(blocked) != 0 {
			t.Errorf("BlockedKeys after re-execute and skip = %+v, %v; want none", blocked, err)
		}
		if st, err := c.Stats(ctx); err != nil || st.BlockedKeys != 0 || st.FailedKeys != 0 {
			t.Errorf("Stats after re-execute and skip = %+v, %v; want no blocked key", st, err)
		}
		if _, err := c.SkipNext(ctx, "test-source", topicOrders, "skipme"); err == nil {
			t.Error("SkipNext on a key that waits for nothing succeeded")
		}
	})
}

// TestConsumerKeyWhoseStartNeverArrives: a key the group never saw begins
// at the first event it receives once GapTimeout has passed; a key it has
// seen keeps waiting for a missing event, shown as blocked, until skipped.
func TestConsumerKeyWhoseStartNeverArrives(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var got applied
		opts := fastOptions()
		opts.GapTimeout = 300 * time.Millisecond
		c, tr := h.orders("billing", opts, got.handle)
		h.run(c)
		h.publish(topicOrders, orderedMessage(t, "late-joiner", 4), orderedMessage(t, "late-joiner", 3),
			orderedMessage(t, "gap", 1), orderedMessage(t, "gap", 3))
		tr.waitEver(t, messageID("late-joiner", 4), tables.StatusSucceeded)
		if l := got.of("late-joiner"); !slices.Equal(l, []int64{3, 4}) {
			t.Errorf("key late-joiner ran %v, want 3, 4", l)
		}
		// Long past GapTimeout, gap#3 still waits for gap#2.
		tr.waitEver(t, messageID("gap", 1), tables.StatusSucceeded)
		time.Sleep(3 * opts.GapTimeout) // lets the timeout pass; the assertion is that nothing ran
		if g := got.of("gap"); !slices.Equal(g, []int64{1}) {
			t.Fatalf("key gap ran %v, want only 1: 2 never arrived", g)
		}
		ctx := context.Background()
		blocked, err := c.BlockedKeys(ctx, 10)
		if err != nil || len(blocked) != 1 || blocked[0].Key != "gap" || blocked[0].NextStatus != StatusMissing ||
			blocked[0].Next.Sequence != 2 || blocked[0].Waiting != 1 {
			t.Fatalf("BlockedKeys = %+v, %v; want gap waiting for its missing event 2", blocked, err)
		}
		if st, err := c.Stats(ctx); err != nil || st.BlockedKeys != 1 || st.FailedKeys != 0 {
			t.Errorf("Stats = %+v, %v; want 1 blocked key, not on a failed event", st, err)
		}
		if id, err := c.SkipNext(ctx, "test-source", topicOrders, "gap"); err != nil || id != "" {
			t.Fatalf("SkipNext = %q, %v; want the missing event skipped", id, err)
		}
		tr.waitEver(t, messageID("gap", 3), tables.StatusSucceeded)
	})
}

// TestConsumerEventAfterItsTurnFails: an event whose key the group has
// already applied past is recorded as failed, not run.
func TestConsumerEventAfterItsTurnFails(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		var got applied
		c, tr := h.orders("billing", fastOptions(), got.handle)
		h.run(c)
		h.publish(topicOrders, orderedMessage(t, "k", 1), orderedMessage(t, "k", 2))
		tr.waitEver(t, messageID("k", 2), tables.StatusSucceeded)
		stale := eventMessage(t, orderPlaced{OrderID: "k"}, "another-id", nil)
		stale.Metadata.Set("ce_sequence", "1")
		h.publish(topicOrders, stale)
		tr.waitEver(t, "another-id", tables.StatusFailed)
		if r := h.row(c, "another-id"); !strings.Contains(r.LastError.String, "out of order") {
			t.Errorf("stale event's error %q, want out of order", r.LastError.String)
		}
		if k := got.of("k"); !slices.Equal(k, seqs(1, 2)) {
			t.Errorf("key k ran %v, want 1, 2", k)
		}
	})
}

// TestOrderedEndToEnd publishes the events of a few keys from concurrent
// transactions through the outbox, the relay and the in-process broker to a
// group with 8 competing subscriptions, and checks that each key's events
// ran in the order their transactions committed.
func TestOrderedEndToEnd(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ctx := context.Background()
			tr, err := transport.Open(ctx, "mem://", transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			outTable, inTable := testenv.TableName(t, "outbox"), testenv.TableName(t, "inbox")
			testenv.DropTables(t, db, outTable, inTable)
			ob, err := NewOutbox(db, tr.Publisher(), OutboxOptions{Table: outTable, PollInterval: 20 * time.Millisecond, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := ob.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			opts := fastOptions()
			opts.Group, opts.Table, opts.Concurrency, opts.Logger = "billing", inTable, 8, testLogger()
			opts.MaxRetries = 20
			sub, err := tr.Subscriber(opts.Group)
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewConsumer(db, sub, opts)
			if err != nil {
				t.Fatal(err)
			}
			var got applied
			var calls atomic.Int64
			done := make(chan struct{}, 1024)
			if err := Handle(c, func(ctx context.Context, e orderPlaced, m Metadata) error {
				if calls.Add(1)%7 == 0 && m.Attempt == 1 {
					return errors.New("first attempt fails") // retried in its turn
				}
				got.add(m)
				done <- struct{}{}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := c.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); _ = ob.Run(runCtx) }()
			go func() { defer wg.Done(); _ = c.Run(runCtx) }()
			defer func() { stop(); wg.Wait() }()
			<-c.Subscribed()

			const keys, each, writers = 4, 30, 4
			var written atomic.Int64
			var pwg sync.WaitGroup
			for w := range writers {
				pwg.Add(1)
				go func() {
					defer pwg.Done()
					for i := range keys * each / writers {
						key := fmt.Sprintf("order-%d", (w+i)%keys)
						err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
							return ob.Publish(ctx, tx, "test-source", []Event{orderPlaced{OrderID: key}})
						})
						if err != nil {
							t.Error(err)
							return
						}
						written.Add(1)
					}
				}()
			}
			pwg.Wait()
			deadline := time.After(testTimeout)
			for range written.Load() {
				select {
				case <-done:
				case <-deadline:
					t.Fatalf("gave up waiting: %d of %d events handled", len(got.order), written.Load())
				}
			}
			for k := range keys {
				key := fmt.Sprintf("order-%d", k)
				if s := got.of(key); !slices.Equal(s, seqs(1, int64(len(s)))) || len(s) != each {
					t.Errorf("key %s ran %v, want 1..%d in order", key, s, each)
				}
			}
		})
	}
}

// TestConsumerForgetsSilentKeys: Clean forgets a key whose events are all
// done once KeyRetention has passed, and keeps one with events waiting
// behind a failed one.
func TestConsumerForgetsSilentKeys(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, h *harness) {
		opts := fastOptions()
		opts.SucceededRetention, opts.KeyRetention = time.Microsecond, time.Microsecond
		opts.GapTimeout = 200 * time.Millisecond
		c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
			if m.Key == "blocked" && m.Sequence == 2 {
				return permanent(errors.New("bad data"))
			}
			return nil
		})
		h.run(c)
		h.publish(topicOrders, orderedMessage(t, "done", 1), orderedMessage(t, "done", 2),
			orderedMessage(t, "blocked", 1), orderedMessage(t, "blocked", 2), orderedMessage(t, "blocked", 3))
		tr.waitEver(t, messageID("done", 2), tables.StatusSucceeded)
		tr.waitEver(t, messageID("blocked", 2), tables.StatusFailed)
		tr.waitEver(t, messageID("blocked", 3), tables.StatusHeld)
		ctx := context.Background()
		time.Sleep(time.Millisecond) // past KeyRetention on the database's clock
		if _, err := c.Clean(ctx); err != nil {
			t.Fatal(err)
		}
		var keys []string
		if err := h.db.NewSelect().TableExpr(tables.KeysTable(h.table)).Column("msg_key").Where("consumer_group = ?", "billing").Scan(ctx, &keys); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keys, []string{"blocked"}) {
			t.Errorf("keys remembered after Clean: %v, want only blocked", keys)
		}
		// A forgotten key starts again at its next event, after GapTimeout.
		h.publish(topicOrders, orderedMessage(t, "done", 3))
		tr.waitEver(t, messageID("done", 3), tables.StatusSucceeded)
	})
}

// TestConsumerResumesAForgottenKey: a key forgotten while the rows of its
// applied events are still there (a cleanup pass forgets it after deleting
// the expired rows it found) starts again at its next event as a key never
// seen: after GapTimeout, not once those rows are cleaned up, or at once by
// an operator's SkipNext; meanwhile BlockedKeys lists its next event as
// missing.
func TestConsumerResumesAForgottenKey(t *testing.T) {
	for _, operator := range []bool{false, true} {
		group, opts := "automatic", fastOptions()
		opts.GapTimeout = 200 * time.Millisecond
		if operator {
			group, opts.GapTimeout = "operator", time.Hour
		}
		t.Run(group, func(t *testing.T) {
			forEachDatabase(t, func(t *testing.T, h *harness) {
				ctx := context.Background()
				var got applied
				c, tr := h.orders(group, opts, got.handle)
				h.run(c)
				h.publish(topicOrders, orderedMessage(t, "k", 1), orderedMessage(t, "k", 2))
				tr.waitEver(t, messageID("k", 2), tables.StatusSucceeded)
				if _, err := h.db.ExecContext(ctx, "DELETE FROM "+tables.KeysTable(h.table)+" WHERE consumer_group = ?", group); err != nil {
					t.Fatal(err)
				}
				h.publish(topicOrders, orderedMessage(t, "k", 3), orderedMessage(t, "k", 4))
				if operator {
					// Both held: k#2's goroutine may still take k#3 and
					// park it again.
					var blocked []BlockedKey
					var err error
					tr.wait(t, "k#3 and k#4 held", func() bool {
						blocked, err = c.BlockedKeys(ctx, 10)
						return err != nil || len(blocked) == 1 && blocked[0].Waiting == 2
					})
					if err != nil || blocked[0].NextStatus != StatusMissing || blocked[0].Next.Sequence != 1 {
						t.Fatalf("BlockedKeys = %+v, %v; want k waiting for its event 1, missing", blocked, err)
					}
					if id, err := c.SkipNext(ctx, "test-source", topicOrders, "k"); err != nil || id != "" {
						t.Fatalf("SkipNext = %q, %v; want the missing events skipped", id, err)
					}
				}
				tr.waitEver(t, messageID("k", 4), tables.StatusSucceeded)
				if k := got.of("k"); !slices.Equal(k, seqs(1, 4)) {
					t.Errorf("key k ran %v, want 1 to 4", k)
				}
				if r := h.row(c, messageID("k", 1)); r.Status != tables.StatusSucceeded {
					t.Errorf("k#1 is %s; the test needs its row still there", r.Status)
				}
			})
		})
	}
}
