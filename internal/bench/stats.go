package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSamples bounds the latencies one client keeps, so that a long run on a
// fast database cannot grow memory without bound; the rest are counted.
const maxSamples = 1 << 20

// loadResult is a closed-loop measurement.
type loadResult struct {
	ops     int // operations completed in the measured window
	elapsed time.Duration
	lat     latencies
	// rounds holds each round's rate, when the result adds up rounds
	// (interleaved).
	rounds []float64
}

func (r loadResult) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// latencies is a sample of durations, sorted when read.
type latencies []time.Duration

func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fanOut runs fn in n goroutines and waits for them. The first error
// cancels the others' context and is returned; after a clean finish, the
// error of the parent context, if any.
func fanOut(ctx context.Context, n int, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// closedLoop runs op from clients goroutines back to back for warmup plus
// dur, and measures the operations that started after the warm-up and
// ended within the window. The first error stops the run and is returned.
func closedLoop(ctx context.Context, clients int, warmup, dur time.Duration, op func(ctx context.Context) error) (loadResult, error) {
	start := time.Now()
	from, to := start.Add(warmup), start.Add(warmup+dur)
	var (
		mu  sync.Mutex
		all latencies
		ops int
	)
	err := fanOut(ctx, clients, func(ctx context.Context) error {
		var mine latencies
		n := 0
		defer func() {
			mu.Lock()
			all = append(all, mine...)
			ops += n
			mu.Unlock()
		}()
		for {
			t0 := time.Now()
			if !t0.Before(to) {
				return nil
			}
			if err := op(ctx); err != nil {
				return err
			}
			t1 := time.Now()
			if t0.Before(from) || t1.After(to) {
				continue
			}
			n++
			if len(mine) < maxSamples {
				mine = append(mine, t1.Sub(t0))
			}
		}
	})
	if err != nil {
		return loadResult{}, err
	}
	return loadResult{ops: ops, elapsed: dur, lat: all}, nil
}

// slice is one variant's part of a round: the operation to measure and
// what to undo after it.
type slice struct {
	op   func(ctx context.Context) error
	done func()
}

// interleaved measures variants 0..n-1 in rounds: each round runs every
// variant for dur/rounds after its own warm-up, so that load that drifts
// over time (other work on the machine, checkpoints) weighs on every
// variant alike, and the variants' order rotates from round to round, so
// that none always follows the same one. prepare is called before each
// slice.
func interleaved(ctx context.Context, n, rounds, clients int, warmup, dur time.Duration, prepare func(v int) (slice, error)) ([]loadResult, error) {
	out := make([]loadResult, n)
	for r := range rounds {
		for k := range n {
			v := (r + k) % n
			s, err := prepare(v)
			if err != nil {
				return nil, err
			}
			res, err := closedLoop(ctx, clients, warmup, dur/time.Duration(rounds), s.op)
			if s.done != nil {
				s.done()
			}
			if err != nil {
				return nil, err
			}
			out[v].ops += res.ops
			out[v].elapsed += res.elapsed
			out[v].lat = append(out[v].lat, res.lat...)
			out[v].rounds = append(out[v].rounds, res.rate())
		}
	}
	return out, nil
}

// progress counts events as they pass a point (a broker ack, a handler)
// and records when each tenth of an expected total was reached.
type progress struct {
	total   int64
	start   time.Time
	count   atomic.Int64
	done    chan struct{}
	mu      sync.Mutex
	first   time.Duration     // when the first event passed
	deciles [11]time.Duration // deciles[i]: when i tenths were reached
}

func newProgress(total int) *progress {
	return &progress{total: int64(total), start: time.Now(), done: make(chan struct{})}
}

// restart sets the clock's origin to now; counts so far are kept.
func (p *progress) restart() { p.start = time.Now() }

func (p *progress) add(n int) {
	c := p.count.Add(int64(n))
	before := c - int64(n)
	if before == 0 {
		p.mu.Lock()
		p.first = time.Since(p.start)
		p.mu.Unlock()
	}
	// Record every decile crossed by this addition.
	for i := before*10/p.total + 1; i <= c*10/p.total && i <= 10; i++ {
		p.mu.Lock()
		p.deciles[i] = time.Since(p.start)
		p.mu.Unlock()
		if i == 10 {
			close(p.done)
		}
	}
}

// processCPU returns the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rateSince returns the rate, per second, from when decile tenths of the
// total were reached until end (since start): a drain's pace once
// started, without its start. Call it once wait has returned nil.
func (p *progress) rateSince(decile int, end time.Duration) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := end - p.deciles[decile]
	if d <= 0 {
		return 0
	}
	reached := (int64(decile)*p.total + 9) / 10 // the count at which the decile was reached
	return float64(p.total-reached) / d.Seconds()
}

// wait waits for the total, ctx or timeout.
func (p *progress) wait(ctx context.Context, timeout time.Duration, what string) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%s: %d of %d after %s: %w", what, p.count.Load(), p.total, timeout, errTimeout)
	}
}

var errTimeout = errors.New("timed out")

// elapsed returns when i tenths of the total were reached.
func (p *progress) at(i int) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deciles[i]
}

// rate is the whole run's events per second.
func (p *progress) rate() float64 { return float64(p.total) / p.at(10).Seconds() }

// rateFromFirst is the rate from the first event to the last, which
// leaves out the time it took to start.
func (p *progress) rateFromFirst() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total < 2 || p.deciles[10] <= p.first {
		return 0
	}
	return float64(p.total-1) / (p.deciles[10] - p.first).Seconds()
}

// tenthRate is the rate over the i-th tenth (0 is the first, 9 the last).
func (p *progress) tenthRate(i int) float64 {
	return float64(p.total) / 10 / (p.at(i+1) - p.at(i)).Seconds()
}
