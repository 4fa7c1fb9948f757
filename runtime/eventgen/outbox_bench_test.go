package eventgen

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// BenchmarkPublish measures business transactions that write events: one
// event per transaction through Publish, ten per transaction (one INSERT),
// and, for reference, one hand-written single-row INSERT of the same row.
func BenchmarkPublish(b *testing.B) {
	for _, d := range testenv.Databases(b) {
		b.Run(d.Name, func(b *testing.B) {
			db := d.Open(b)
			ob := newOutbox(b, db, newPubSub(b), OutboxOptions{})
			ctx := context.Background()
			for _, perTx := range []int{1, 10} {
				b.Run(fmt.Sprintf("events=%d", perTx), func(b *testing.B) {
					events := make([]Event, perTx)
					for i := range events {
						events[i] = testEvent{N: i, Body: strings.Repeat("x", 200)}
					}
					b.ResetTimer()
					publishTxs(ctx, b, ob, db, events)
					b.ReportMetric(float64(b.N*perTx)/b.Elapsed().Seconds(), "events/s")
				})
			}
			b.Run("raw-insert", func(b *testing.B) {
				q := fmt.Sprintf("INSERT INTO %s (message_id, name, version, topic, msg_key, source, payload, headers, status, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, %s, %s)",
					ob.opts.Table, ob.dialect.Now, ob.dialect.Now)
				payload := []byte(`{"n":0,"body":"` + strings.Repeat("x", 200) + `"}`)
				b.ResetTimer()
				for range b.N {
					err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
						_, err := tx.ExecContext(ctx, q, uuid.NewString(), "TestHappened", 2, testTopic, "k0", "bench", payload, nil, "pending")
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			})
		})
	}
}

// BenchmarkRelayDrain measures how fast a relay drains a backlog of b.N
// rows of about 250 bytes to the in-process transport (no subscriber, so
// the broker costs nearly nothing): claim, publish and mark. It also
// reports the rate of the last tenth of the drain relative to the first
// (the drain must not slow as published rows pile up in the table).
func BenchmarkRelayDrain(b *testing.B) {
	for _, d := range testenv.Databases(b) {
		b.Run(d.Name, func(b *testing.B) {
			db := d.Open(b)
			ob := newOutbox(b, db, newPubSub(b), OutboxOptions{})
			fill(context.Background(), b, ob, db, b.N)
			var (
				mu    sync.Mutex
				n     int
				marks = make([]time.Time, 0, 11) // when each tenth was done
				done  = make(chan struct{})
			)
			ob.hooks = &outboxHooks{published: func(ids []int64) {
				mu.Lock()
				defer mu.Unlock()
				n += len(ids)
				for len(marks) <= 10 && n >= len(marks)*b.N/10 {
					marks = append(marks, time.Now())
				}
				if n == b.N {
					close(done)
				}
			}}
			marks = append(marks, time.Now())
			b.ResetTimer()
			stop := run(b, ob)
			<-done
			b.StopTimer()
			stop()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			if b.N >= 1000 {
				first, last := marks[1].Sub(marks[0]), marks[10].Sub(marks[9])
				b.ReportMetric(first.Seconds()/last.Seconds(), "last/first-rate")
			}
		})
	}
}

// publishTxs publishes events b.N times, in a transaction of its own each
// time, begun with ctx.
func publishTxs(ctx context.Context, b *testing.B, ob *Outbox, db *bun.DB, events []Event) {
	b.Helper()
	for range b.N {
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			return ob.Publish(ctx, tx, "bench", events)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// fill writes n pending rows in multi-row inserts of 500, published in
// ctx.
func fill(ctx context.Context, b *testing.B, ob *Outbox, db *bun.DB, n int) {
	b.Helper()
	body := strings.Repeat("x", 200)
	for i := 0; i < n; i += 500 {
		events := make([]Event, min(500, n-i))
		for j := range events {
			events[j] = testEvent{N: i + j, Body: body}
		}
		if err := ob.Publish(ctx, db, "bench", events); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitToPublish measures the latency from a transaction's commit
// to the subscriber receiving its event, at a fixed offered load of 500
// events/s from 4 producers, with the relay woken by Publish.
func BenchmarkCommitToPublish(b *testing.B) {
	for _, d := range testenv.Databases(b) {
		b.Run(d.Name, func(b *testing.B) {
			db := d.Open(b)
			ps := newPubSub(b)
			ob := newOutbox(b, db, ps, OutboxOptions{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			msgs, err := ps.Subscribe(ctx, testTopic)
			if err != nil {
				b.Fatal(err)
			}
			var (
				mu        sync.Mutex
				committed = make(map[int]time.Time, b.N)
				received  = make(map[int]time.Time, b.N)
				all       = make(chan struct{})
			)
			go func() {
				for m := range msgs {
					n := eventN(b, m)
					mu.Lock()
					received[n] = time.Now()
					done := len(received) == b.N
					mu.Unlock()
					m.Ack()
					if done {
						close(all)
					}
				}
			}()
			run(b, ob)
			const producers, rate = 4, 500
			interval := time.Second * producers / rate
			b.ResetTimer()
			var wg sync.WaitGroup
			for p := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tick := time.NewTicker(interval)
					defer tick.Stop()
					for n := p; n < b.N; n += producers {
						<-tick.C
						err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
							return ob.Publish(ctx, tx, "bench", []Event{testEvent{N: n}})
						})
						if err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						committed[n] = time.Now()
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			select {
			case <-all:
			case <-time.After(30 * time.Second):
				b.Fatal("timed out waiting for every event")
			}
			b.StopTimer()
			mu.Lock()
			defer mu.Unlock()
			lat := make([]time.Duration, 0, b.N)
			for n, c := range committed {
				lat = append(lat, max(0, received[n].Sub(c)))
			}
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

var _ message.Publisher = (*flakyPublisher)(nil)
