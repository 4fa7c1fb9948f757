package eventgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// wedgedPublisher is a publisher whose first `wedge` calls block, ignoring
// their message's context, until the test ends: a broker client that
// stopped answering. Later calls pass through to the real publisher.
type wedgedPublisher struct {
	message.Publisher
	wedge   int64
	calls   atomic.Int64
	blocked atomic.Int64
	release chan struct{}
	once    sync.Once
}

func newWedgedPublisher(t *testing.T, inner message.Publisher, wedge int64) *wedgedPublisher {
	p := &wedgedPublisher{Publisher: inner, wedge: wedge, release: make(chan struct{})}
	t.Cleanup(p.unwedge)
	return p
}

func (p *wedgedPublisher) unwedge() { p.once.Do(func() { close(p.release) }) }

func (p *wedgedPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.calls.Add(1) <= p.wedge {
		p.blocked.Add(1)
		defer p.blocked.Add(-1)
		<-p.release
		return errors.New("released after the test")
	}
	return p.Publisher.Publish(topic, msgs...)
}

// TestOutboxRecoversFromHungPublishes runs ONE relay whose publisher hangs
// on its first calls and ignores their deadline: the relay must stop
// waiting for them after PublishTimeout, retry their rows, and deliver
// every event with no restart, while those calls still hang.
func TestOutboxRecoversFromHungPublishes(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ps := newPubSub(t)
			got := collect(t, ps)
			const hung = 4
			pub := newWedgedPublisher(t, ps, hung)
			ob := newOutbox(t, db, pub, OutboxOptions{
				LeaseDuration: 2 * time.Second, PublishTimeout: 200 * time.Millisecond,
				LocalRetryInterval: 10 * time.Millisecond, RetryInterval: 10 * time.Millisecond, RetryMinAge: 10 * time.Millisecond,
				PollInterval: 20 * time.Millisecond, MaxInFlight: 8,
			})
			marked := countMarked(ob)
			run(t, ob)
			const events = 40
			publish(t, ob, db, 0, events)
			got.waitDistinct(events)
			marked.wait(t, events)
			if n := pub.blocked.Load(); n != hung {
				t.Errorf("%d publisher calls still hang, want %d: the test did not exercise what it claims", n, hung)
			}
			if c := statusCounts(t, ob); c[tables.StatusPublished] != events {
				t.Errorf("statuses = %v, want %d published", c, events)
			}
		})
	}
}

// TestOutboxRunReturnsWhilePublisherHangs stops a relay whose every publish
// hangs for good: Run must return within PublishTimeout and its grace,
// plus its last statements, and every row must still be there, unpublished.
func TestOutboxRunReturnsWhilePublisherHangs(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			pub := newWedgedPublisher(t, newPubSub(t), 1<<62)
			const publishTimeout = 500 * time.Millisecond
			ob := newOutbox(t, db, pub, OutboxOptions{LeaseDuration: 5 * time.Second, PublishTimeout: publishTimeout, PollInterval: 20 * time.Millisecond})
			const events = 10
			publish(t, ob, db, 0, events)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- ob.Run(ctx) }()
			for deadline := time.Now().Add(10 * time.Second); pub.blocked.Load() == 0; {
				if time.Now().After(deadline) {
					t.Fatal("no publish started within 10s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			stopped := time.Now()
			cancel()
			const bound = publishTimeout + 2*time.Second
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				t.Logf("Run returned %s after its context ended, with %d publisher calls still hanging",
					time.Since(stopped).Round(time.Millisecond), pub.blocked.Load())
			case <-time.After(bound):
				t.Fatalf("Run did not return within %s of its context ending", bound)
			}
			c := statusCounts(t, ob)
			if c[tables.StatusPublished] != 0 || c[tables.StatusPending]+c[tables.StatusProcessing] != events {
				t.Errorf("statuses = %v, want all %d rows pending (or leased), none published", c, events)
			}
		})
	}
}

// leaseCheckingPublisher fails every publish by waiting out its message's
// deadline (a broker that does not answer, with a client that honours the
// deadline), and records any publish whose deadline is later than its row's
// lease: a publish that could outlive the lease, so that another relay
// could take the row over while it still runs.
type leaseCheckingPublisher struct {
	// leaseOf reads the row's lease_until (µs), if it has one.
	leaseOf func(ctx context.Context, id string) (leaseUntil int64, ok bool, err error)

	mu         sync.Mutex
	attempts   int
	violations []string
}

func (p *leaseCheckingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		deadline, ok := m.Context().Deadline()
		if !ok {
			p.record("publish of %s has no deadline", m.UUID)
			continue
		}
		until, leased, err := p.leaseOf(context.Background(), m.UUID)
		switch {
		case err != nil:
			p.record("read lease of %s: %v", m.UUID, err)
		case leased && deadline.UnixMicro() > until:
			p.record("publish of %s may run until %s, past its lease (%s)", m.UUID,
				deadline.Format(time.StampMicro), time.UnixMicro(until).Format(time.StampMicro))
		}
		<-m.Context().Done()
	}
	p.mu.Lock()
	p.attempts++
	p.mu.Unlock()
	return context.DeadlineExceeded
}

func (p *leaseCheckingPublisher) record(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.violations = append(p.violations, fmt.Sprintf(format, args...))
}

func (p *leaseCheckingPublisher) Close() error { return nil }

// TestOutboxPublishEndsBeforeItsLease makes every publish run to its
// deadline, with quick local retries that would run late into the lease,
// and checks that no publish is allowed to run past its row's lease.
func TestOutboxPublishEndsBeforeItsLease(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			table := testenv.TableName(t, "outbox")
			testenv.DropTables(t, db, table)
			pub := &leaseCheckingPublisher{leaseOf: func(ctx context.Context, id string) (int64, bool, error) {
				var until *int64
				err := db.QueryRowContext(ctx, "SELECT lease_until FROM "+table+" WHERE message_id = ?", id).Scan(&until)
				if err != nil || until == nil {
					return 0, false, err
				}
				return *until, true, nil
			}}
			const lease = time.Second
			ob := newOutbox(t, db, pub, OutboxOptions{
				Table: table, LeaseDuration: lease, PublishTimeout: lease / 2, // the most allowed
				LocalRetries: 8, LocalRetryInterval: 20 * time.Millisecond, MaxRetries: 100,
				RetryInterval: 10 * time.Millisecond, RetryMinAge: 10 * time.Millisecond,
				PollInterval: 20 * time.Millisecond,
			})
			run(t, ob)
			publish(t, ob, db, 0, 3)
			// Several leases' worth of attempts: local retries late in a
			// lease, and rows claimed again after their round ended.
			const want = 9
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
				pub.mu.Lock()
				n := pub.attempts
				pub.mu.Unlock()
				if n >= want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d publish attempts in a minute, want %d", n, want)
				}
			}
			pub.mu.Lock()
			defer pub.mu.Unlock()
			for _, v := range pub.violations {
				t.Error(v)
			}
			t.Logf("%d attempts, none past its lease", pub.attempts)
		})
	}
}
