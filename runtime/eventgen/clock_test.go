package eventgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// skewed returns d with its clock moved by offset: a database whose clock
// is offset ahead of the application's (behind, if negative).
func skewed(d sqlstore.Dialect, offset time.Duration) sqlstore.Dialect {
	d.Now = fmt.Sprintf("(%s + %d)", d.Now, offset.Microseconds())
	return d
}

// clockResolution allows for SQLite's clock, which counts milliseconds.
const clockResolution = 5 * time.Millisecond

// clockSkews are the offsets between the database's clock and the
// application's that the clock tests run with.
var clockSkews = []time.Duration{10 * time.Minute, -10 * time.Minute}

// attemptLog records when each event was offered to the broker, failing
// the first failures attempts of the events fail returns true for.
type attemptLog struct {
	message.Publisher
	fail     func(n int) bool
	failures int

	mu    sync.Mutex
	times map[int][]time.Time
}

func (p *attemptLog) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	var err error
	for _, m := range msgs {
		var n int
		fmt.Sscanf(string(m.Payload), `{"n":%d`, &n) //nolint:errcheck // checked by the collector
		p.times[n] = append(p.times[n], time.Now())
		if len(p.times[n]) <= p.failures && p.fail(n) {
			err = fmt.Errorf("first attempt at event %d refused", n)
		}
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.Publisher.Publish(topic, msgs...)
}

func (p *attemptLog) attempts(n int) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.times[n]...)
}

// TestOutboxClockSkewChangesNothing runs the outbox with the database's
// clock ten minutes ahead of and behind the application's. Retries, delays,
// leases and retention are all timed on the database's clock, so each
// still takes the time it is configured to take: a decision that compared
// the two clocks would wait ten minutes, or not at all.
func TestOutboxClockSkewChangesNothing(t *testing.T) {
	const (
		n          = 10
		delayed    = 0 // published WithDelay
		minAge     = 300 * time.Millisecond
		delay      = 500 * time.Millisecond
		retention  = time.Minute // far longer than the run, however loaded the machine
		longEnough = 8 * time.Second
	)
	for _, d := range testenv.Databases(t) {
		for _, skew := range clockSkews {
			t.Run(fmt.Sprintf("%s/db%+v", d.Name, skew), func(t *testing.T) {
				db := d.Open(t)
				ps := newPubSub(t)
				got := collect(t, ps)
				// Odd events fail their first attempt and their one quick
				// retry; the next waits RetryMinAge in the table.
				pub := &attemptLog{Publisher: ps, fail: func(n int) bool { return n%2 == 1 }, failures: 2, times: map[int][]time.Time{}}
				ob := newOutbox(t, db, pub, OutboxOptions{
					LocalRetries: 1, LocalRetryInterval: time.Millisecond, RetryInterval: time.Millisecond, RetryMinAge: minAge,
					PollInterval: 20 * time.Millisecond, LeaseDuration: 10 * time.Second,
					PublishedRetention: retention, CleanInterval: time.Hour,
				})
				ob.dialect = skewed(ob.dialect, skew)
				ob.store = tables.NewOutbox(ob.dialect, ob.opts.Table, nil)

				marked := countMarked(ob)
				start := time.Now()
				publish(t, ob, db, delayed, 1, WithDelay(delay))
				publish(t, ob, db, 1, n-1)
				stop := run(t, ob)
				got.waitDistinct(n)
				marked.wait(t, n)
				if took := time.Since(start); took > longEnough {
					t.Errorf("publishing took %s, want well under %s", took, longEnough)
				}
				if at := pub.attempts(delayed); len(at) == 0 || at[0].Sub(start) < delay {
					t.Errorf("event delayed by %s was offered after %v", delay, durationsSince(start, at))
				}
				for i := 1; i < n; i += 2 {
					at := pub.attempts(i)
					if len(at) != 3 {
						t.Errorf("event %d: %d attempts, want 3 (two refused, one from the table)", i, len(at))
						continue
					}
					if gap := at[2].Sub(at[1]); gap < minAge-clockResolution {
						t.Errorf("event %d retried %s after its failure, before RetryMinAge %s", i, gap, minAge)
					}
				}

				// Published rows expire PublishedRetention after publishing,
				// on the database's clock: moved forward by the retention,
				// that clock finds every row expired.
				stop() // the relay must not run while its store changes
				ctx := context.Background()
				if c, err := ob.Clean(ctx); err != nil || c != 0 {
					t.Errorf("Clean at once = %d, %v; want 0: nothing has expired", c, err)
				}
				ob.dialect = skewed(ob.dialect, retention+time.Second)
				ob.store = tables.NewOutbox(ob.dialect, ob.opts.Table, nil)
				if c, err := ob.Clean(ctx); err != nil || c != n {
					t.Errorf("Clean a retention later = %d, %v; want %d", c, err, n)
				}
			})
		}
	}
}

// TestConsumerClockSkewChangesNothing is the consumer's side of
// TestOutboxClockSkewChangesNothing: persistent retries wait RetryMinAge,
// leased rows are run once, and handled rows expire after their
// retention, whichever way the database's clock is off.
func TestConsumerClockSkewChangesNothing(t *testing.T) {
	const (
		n         = 6
		minAge    = 300 * time.Millisecond
		retention = time.Minute // far longer than the run, however loaded the machine
	)
	for _, skew := range clockSkews {
		forEachDatabase(t, func(t *testing.T, h *harness) {
			t.Logf("database clock %+v from the application's", skew)
			// Every message fails its first run and its quick retry; the
			// next waits RetryMinAge.
			opts := ConsumerOptions{
				LocalRetries: 1, LocalRetryInterval: time.Millisecond, RetryInterval: time.Millisecond, RetryMinAge: minAge,
				PollInterval: 20 * time.Millisecond, LeaseDuration: 2 * time.Second, MaxRetries: 4,
				SucceededRetention: retention, CleanInterval: time.Hour,
			}
			var mu sync.Mutex
			runs := map[string][]time.Time{}
			c, tr := h.orders("billing", opts, func(ctx context.Context, e orderPlaced, m Metadata) error {
				mu.Lock()
				runs[m.ID] = append(runs[m.ID], time.Now())
				mu.Unlock()
				if m.Attempt <= 2 {
					return errors.New("refused")
				}
				return h.effect(ctx, m.Group, m.ID)
			})
			c.inbox = tables.NewInbox(skewed(c.inbox.D, skew), c.opts.Table, c.opts.Group, nil)
			stop := h.run(c)
			var msgs []*message.Message
			for i := range n {
				msgs = append(msgs, eventMessage(t, orderPlaced{OrderID: fmt.Sprint(i)}, fmt.Sprint(i), nil))
			}
			h.publish(topicOrders, msgs...)
			tr.wait(t, "all handled", func() bool { return tr.ever(tables.StatusSucceeded) == n })
			mu.Lock()
			for id, at := range runs {
				if len(at) != 3 {
					t.Errorf("message %s: handler ran %d times, want 3", id, len(at))
				} else if gap := at[2].Sub(at[1]); gap < minAge-clockResolution {
					t.Errorf("message %s retried %s after its failure, before RetryMinAge %s", id, gap, minAge)
				}
			}
			mu.Unlock()
			if rows, distinct := h.effectCounts("billing"); rows != n || distinct != n {
				t.Errorf("effects: %d rows for %d messages, want %d each", rows, distinct, n)
			}

			// Handled rows expire SucceededRetention after handling, on
			// the database's clock: moved forward by the retention, that
			// clock finds every row expired.
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if got, err := c.Clean(ctx); err != nil || got != 0 {
				t.Errorf("Clean at once = %d, %v; want 0: nothing has expired", got, err)
			}
			c.inbox = tables.NewInbox(skewed(c.inbox.D, retention+time.Second), c.opts.Table, c.opts.Group, nil)
			if got, err := c.Clean(ctx); err != nil || got != n {
				t.Errorf("Clean a retention later = %d, %v; want %d", got, err, n)
			}
		})
	}
}

func durationsSince(start time.Time, at []time.Time) []time.Duration {
	var ds []time.Duration
	for _, a := range at {
		ds = append(ds, a.Sub(start))
	}
	return ds
}
