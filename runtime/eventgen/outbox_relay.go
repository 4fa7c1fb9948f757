package eventgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/backoff"
	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// Relay timing that is not worth an option.
const (
	// After a wake-up from Publish the relay polls on a short, growing
	// schedule, because the signal is sent before the caller commits.
	wakeFirstStep = time.Millisecond
	wakeMaxStep   = 50 * time.Millisecond
	wakeWindow    = time.Second
	// After a claim that found fewer rows than a batch, the relay waits
	// before it claims again, so that under a steady stream of commits
	// each claim takes several rows instead of one: every claim is a
	// statement the producers' database also runs. The wait is
	// minClaimLinger on a quiet database and grows, up to maxClaimLinger,
	// as claims get slower than the fastest claims lately: slow statements
	// mean a busy database, which then gets fewer of them. Marks wait the
	// same way.
	minClaimLinger = 2 * time.Millisecond
	maxClaimLinger = 20 * time.Millisecond
	// hintMargin is how far before the latest row claimed a claim starts
	// while rows keep coming; see claim.
	hintMargin = 250 * time.Millisecond
	// storeTimeout bounds each bookkeeping statement, in particular those
	// run after Run's context is done.
	storeTimeout = 10 * time.Second
	// prepareWait bounds how long Run, when it stops, waits for the
	// statements it began to prepare in the background.
	prepareWait = 2 * time.Second
	// maxErrorLen bounds last_error.
	maxErrorLen = 1000
)

// pauseBackoff paces claims while the database or the broker fails, so
// that an outage costs a bounded trickle of statements and publish
// attempts rather than a hot loop.
func pauseBackoff() backoff.Policy {
	return backoff.Policy{Base: 100 * time.Millisecond, Max: 10 * time.Second}
}

// Run relays committed events to the publisher until ctx is done, then
// stops cleanly: it waits for the publishes in flight, marks the published
// rows and hands back the rows it holds but has not published. It returns
// nil after a clean stop; database and broker errors are logged and retried
// with backoff, never returned. Run also deletes expired rows every
// CleanInterval.
//
// Run returns within PublishTimeout (and a tenth of it) after ctx is done,
// plus the time its last statements take, each bounded by 10 seconds,
// whatever the broker does: a publisher call that has not returned by then
// is left running, and its row is retried.
//
// Rows are claimed in batches by status and due time (on the database's
// clock) and held for LeaseDuration: by a lease written to each row, or,
// while a backlog drains on PostgreSQL and MySQL, by row locks in a
// transaction that skips rows other relays hold. They are published
// concurrently, at most MaxInFlight at once, and marked published in one
// statement per batch, only after the publisher returned nil. A Publish on
// this Outbox wakes Run at once; other writers are found within
// PollInterval.
//
// A failed publish is retried LocalRetries times in memory with exponential
// backoff and jitter, while other rows keep flowing; then the row goes back
// to the table, due after max(RetryMinAge, the persistent backoff from
// RetryInterval); after MaxRetries attempts in all it is marked failed and
// kept until FailedRetention has passed, for [Outbox.Requeue].
//
// A publish that does not end within PublishTimeout fails like any other,
// so a publisher that hangs cannot hold a row or a goroutine of the relay:
// the relay stops waiting for it, and its call keeps its MaxInFlight slot
// until it returns, so a publisher that hangs for good stops this relay's
// publishing (and says so in the log) instead of piling up calls. No
// publish starts unless it can end, by PublishTimeout, before its row's
// lease does; a row that waited too long for a slot goes back to the table
// unpublished. So, with a publisher that honours its message's context (as
// those of package transport do), this relay never publishes a row after
// another may have taken it over, and leases need no renewal.
func (o *Outbox) Run(ctx context.Context) error {
	if o.pub == nil {
		return errors.New("outbox: Run needs a publisher; this Outbox was created with none (publish-only)")
	}
	if !o.running.CompareAndSwap(false, true) {
		return errors.New("outbox: Run is already running for this Outbox")
	}
	defer o.running.Store(false)
	// Last: statements that the relay's work began to prepare in the
	// background.
	defer o.prepared.Wait(prepareWait)
	r := &relay{
		o:              o,
		opts:           o.opts,
		log:            o.opts.Logger.With(slog.String("component", "eventgen.outbox"), slog.String("table", o.opts.Table)),
		maxOutstanding: 2 * o.opts.BatchSize,
		slots:          make(chan struct{}, o.opts.MaxInFlight),
		results:        make(chan result, 2*o.opts.BatchSize),
		batchDone:      make(chan batchOutcome),
		retries:        make(chan *claimed, 2*o.opts.BatchSize),
		progress:       make(chan struct{}, 1),
		serialWrites:   o.dialect.Name == "sqlite",
		policy:         o.opts.policy(),
	}
	coordinated := make(chan struct{})
	go func() {
		defer close(coordinated)
		r.coordinate(ctx)
	}()
	cleaned := make(chan struct{})
	go func() {
		defer close(cleaned)
		r.cleanLoop(ctx)
	}()
	var watching sync.WaitGroup
	watching.Add(1)
	go watchPool(ctx, &watching, newPoolWatch(o.db.DB, r.log, time.Now()))
	r.claimConn = leased.NewPinned(o.db, o.dialect, !o.opts.NoPreparedStatements)
	r.dispatchLoop(ctx)
	r.claimConn.Close()
	r.publishing.Wait()
	close(r.results)
	<-coordinated
	<-cleaned
	watching.Wait()
	return nil
}

// relay is the state of one Run.
type relay struct {
	o    *Outbox
	opts OutboxOptions
	log  *slog.Logger

	// outstanding counts claimed rows not yet settled (marked, returned or
	// released). Claims stop at maxOutstanding, which bounds memory and
	// keeps a failing broker from pulling in the whole backlog.
	outstanding    atomic.Int64
	maxOutstanding int
	// backlog is set while claims come back full; see claim.
	backlog bool
	// hint is the latest created_at claimed (database clock, µs), and
	// scanned is when a claim last scanned the claim index from the start;
	// see claim.
	hint    int64
	scanned time.Time
	idle    bool // the last claim found nothing
	// writeMu serializes the relay's own writes on SQLite, which has one
	// writer at a time: waiting here is immediate, while waiting on the
	// database lock sleeps in steps of up to 100ms.
	writeMu      sync.Mutex
	serialWrites bool
	// claimConn is the dispatcher's connection; see leased.Pinned.
	claimConn *leased.Pinned
	// brokerFailures counts publishes failed since the last success.
	brokerFailures atomic.Int64
	// stuck counts publisher calls still running past their timeout.
	stuck atomic.Int64

	slots      chan struct{}     // one per publish in flight
	results    chan result       // publish outcomes of leased rows, to the coordinator
	batchDone  chan batchOutcome // locked batches that ended, to the coordinator
	retries    chan *claimed     // local retries that are due, to the dispatcher
	progress   chan struct{}     // rows settled, to the dispatcher
	publishing sync.WaitGroup    // publishes in flight

	policy leased.Policy
}

// claimed is a row held by this relay.
type claimed struct {
	row     tables.OutboxRow
	headers map[string]string
	// lastStart is the last moment a publish of the row may start and
	// still end, by PublishTimeout, before the row's lease does.
	lastStart time.Time
	// tries counts publishes of this row in this claim.
	tries int
	// err is the last publish error.
	err error
	// permanent marks a row that can never be published.
	permanent bool
	// due is when a local retry is due.
	due time.Time
	// batch is the locked batch the row's first publish belongs to, nil
	// for a leased row.
	batch *lockedBatch
}

// lockedBatch is a batch held by row locks in an open transaction (on
// databases with SKIP LOCKED) until all its rows have been tried once.
//
// A batch collects its rows' outcomes itself and commits in a goroutine of
// its own, never through the coordinator: a coordinator waiting for a row
// lock must not be what keeps a batch (its own, or another relay's) from
// committing and releasing its locks.
type lockedBatch struct {
	tx     *bun.Tx
	ctx    context.Context // bounds the transaction by LeaseDuration
	cancel context.CancelFunc
	size   int

	mu      sync.Mutex
	results []result
}

// batchOutcome is a locked batch after its transaction ended.
type batchOutcome struct {
	b         *lockedBatch
	published []int64
	failed    []result
	leased    time.Time // when the failed rows' leases began, at the latest
	err       error
}

// result is what happened to a claimed row: published (err nil), failed,
// or released untried.
type result struct {
	c        *claimed
	err      error
	released bool
}

// dispatchLoop claims due rows and starts their publishes until ctx is done.
//
// It claims again at once after a full batch, after a linger (see
// minClaimLinger) after a non-empty one that was not full, on the wake-up
// schedule for wakeWindow after a Publish in this process (but not within
// the linger), and every PollInterval otherwise. While the broker fails,
// claims back off; local retries run on their own schedule.
func (r *relay) dispatchLoop(ctx context.Context) {
	var (
		next         time.Time // when the schedule wants the next claim
		dbUntil      time.Time // database backoff
		brokerUntil  time.Time // broker backoff
		fastUntil    time.Time // end of the wake-up schedule
		lingerUntil  time.Time // no claim before, after a partial batch
		step         time.Duration
		claimTime    statementTime
		dbErrors     int
		brokerStreak int
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if r.brokerFailures.Load() == 0 {
			brokerUntil, brokerStreak = time.Time{}, 0
		}
		at := laterOf(next, laterOf(dbUntil, brokerUntil))
		full := r.outstanding.Load() > int64(r.maxOutstanding-r.opts.BatchSize)
		if wait := time.Until(at); full || wait > 0 {
			var tick <-chan time.Time
			if !full {
				timer.Reset(wait)
				tick = timer.C
			}
			select {
			case <-ctx.Done():
				return
			case c := <-r.retries:
				r.dispatch(ctx, c)
			case <-r.progress:
			case <-r.o.wake:
				now := time.Now()
				fastUntil, step, next = now.Add(wakeWindow), wakeFirstStep, laterOf(now, lingerUntil)
			case <-tick:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		limit := r.opts.BatchSize
		if r.brokerFailures.Load() > 0 {
			limit = min(limit, r.opts.RetryBatch)
		}
		limit = min(limit, r.maxOutstanding-int(r.outstanding.Load()))
		began := time.Now()
		n, err := r.claim(ctx, limit)
		now := time.Now()
		if n > 0 {
			claimTime.add(now.Sub(began))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			dbErrors++
			r.log.Error("outbox: claim batch", slog.Any("error", err), slog.Int("consecutive_errors", dbErrors))
			dbUntil = now.Add(pauseBackoff().Delay(dbErrors))
			continue
		}
		dbErrors, dbUntil = 0, time.Time{}
		switch {
		case n > 0 && r.backlog:
			next = now // more are due
		case n > 0:
			lingerUntil = now.Add(claimTime.linger())
			next = lingerUntil // more may come soon
		case now.Before(fastUntil):
			next = now.Add(step)
			step = min(2*step, wakeMaxStep)
		default:
			next = now.Add(r.opts.PollInterval)
		}
		if n > 0 && r.brokerFailures.Load() > 0 {
			brokerStreak++
			brokerUntil = now.Add(pauseBackoff().Delay(brokerStreak))
		}
	}
}

// statementTime follows how long a statement takes: a moving average, and
// a floor that drops to the fastest run at once and rises slowly, so that
// it stays the database's quiet-time speed through a busy spell but
// follows a database that became slower for good.
type statementTime struct{ avg, floor time.Duration }

func (t *statementTime) add(d time.Duration) {
	d = max(d, time.Microsecond)
	if t.avg == 0 {
		t.avg, t.floor = d, d
		return
	}
	t.avg += (d - t.avg) / 8
	if d < t.floor {
		t.floor = d
	} else {
		t.floor += (d - t.floor) / 1024
	}
}

// linger is how long to wait before the statement runs again: the
// minimum, stretched by how much slower than the floor it now runs.
func (t *statementTime) linger() time.Duration {
	if t.floor == 0 {
		return minClaimLinger
	}
	return min(max(minClaimLinger*t.avg/t.floor, minClaimLinger), maxClaimLinger)
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// claim takes up to limit due rows and starts publishing them, and returns
// how many rows it took.
//
// Rows are leased by one UPDATE (two row writes per event with the mark,
// but one round trip per claim and marks batched across claims), except
// while there is a backlog on a database that can skip locked rows: then
// a full batch is held by row locks in a transaction and marked in it (one
// row write per event, which is what limits a drain).
//
// While rows keep coming, claims start at the index entry of the latest
// row claimed (less hintMargin) rather than at the start: entries of rows
// already published stay in the index until vacuum (longer while any
// transaction holds an old snapshot), and scanning past tens of thousands
// of them per claim would slow a drain as it goes. Rows that fall before
// the hint (late commits, expired leases, retries) are found by a full
// scan at least every PollInterval, and by every claim after an idle one.
func (r *relay) claim(ctx context.Context, limit int) (int, error) {
	c := leased.Claim{Owner: r.o.owner, Limit: limit, MaxBytes: r.opts.BatchBytes, Lease: r.opts.LeaseDuration}
	if r.hint > 0 && !r.idle && time.Since(r.scanned) < r.opts.PollInterval {
		c.From = r.hint - hintMargin.Microseconds()
	} else {
		r.scanned = time.Now()
	}
	n, full, err := r.take(ctx, c, r.backlog && r.o.store.LocksRows())
	r.backlog, r.idle = full, n == 0
	return n, err
}

// lockWrites serializes a write on SQLite; see writeMu.
func (r *relay) lockWrites() (unlock func()) {
	if !r.serialWrites {
		return func() {}
	}
	r.writeMu.Lock()
	return r.writeMu.Unlock
}

// take claims and dispatches rows. full reports a batch cut by BatchSize
// or, probably, by BatchBytes: more rows are likely due.
func (r *relay) take(ctx context.Context, c leased.Claim, lock bool) (n int, full bool, err error) {
	began := time.Now() // no later than the database starts the leases
	var (
		rows  []tables.OutboxRow
		batch *lockedBatch
	)
	if lock {
		// The batch outlives Run's context: once claimed, it is settled.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.LeaseDuration)
		var tx *bun.Tx
		tx, rows, err = r.o.store.Lock(bctx, r.o.db, c)
		if tx == nil {
			cancel()
		} else {
			batch = &lockedBatch{tx: tx, ctx: bctx, cancel: cancel, size: len(rows)}
		}
	} else {
		unlock := r.lockWrites()
		err = r.claimConn.Do(ctx, func(db bun.IDB) (err error) {
			rows, err = r.o.store.Claim(ctx, db, c)
			return err
		})
		unlock()
	}
	if err != nil {
		return 0, false, fmt.Errorf("claim batch: %w", err)
	}
	if len(rows) == 0 {
		return 0, false, nil
	}
	// Publishes start in id order. The rows of one key were inserted in
	// the order of their sequence, so the broker mostly receives a key's
	// events in sequence, and consumers seldom hold one back.
	slices.SortFunc(rows, func(a, b tables.OutboxRow) int { return cmp.Compare(a.ID, b.ID) })
	bytes, largest := 0, 0
	for i := range rows {
		bytes += len(rows[i].Payload)
		largest = max(largest, len(rows[i].Payload))
		r.hint = max(r.hint, rows[i].CreatedAt)
	}
	full = len(rows) == c.Limit || bytes+largest > r.opts.BatchBytes
	r.outstanding.Add(int64(len(rows)))
	r.o.metrics.claimed(len(rows))
	if h := r.o.hooks; h != nil && h.claimed != nil {
		h.claimed(len(rows), batch != nil)
	}
	lastStart := r.lastStart(began)
	for i := range rows {
		c := &claimed{row: rows[i], lastStart: lastStart, batch: batch}
		if rows[i].Headers.Valid {
			var err error
			if c.headers, err = decodeHeaders(rows[i].Headers.String); err != nil {
				c.permanent = true
				r.report(result{c: c, err: fmt.Errorf("decode stored headers: %w", err)})
				continue
			}
		}
		if ctx.Err() != nil {
			r.report(result{c: c, released: true})
			continue
		}
		r.dispatch(ctx, c)
	}
	return len(rows), full, nil
}

// dispatch publishes c once, when a slot is free. A row whose lease no
// longer leaves time for a publish, because it waited too long for a slot,
// goes back to the table instead.
func (r *relay) dispatch(ctx context.Context, c *claimed) {
	giveBack := func() { r.report(result{c: c, released: c.tries == 0, err: c.err}) }
	late := time.NewTimer(time.Until(c.lastStart))
	defer late.Stop()
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		giveBack()
		return
	case <-late.C:
		if c.err == nil {
			c.err = errors.New("no publish slot was free before the row's lease ran short")
		}
		giveBack()
		return
	}
	r.publishing.Add(1)
	go func() {
		defer r.publishing.Done()
		r.report(result{c: c, err: r.publish(c)})
	}()
}

// publishGrace is how long after PublishTimeout the relay still waits for
// a publisher that ignores its message's context deadline.
func (r *relay) publishGrace() time.Duration {
	return max(r.opts.PublishTimeout/10, 50*time.Millisecond)
}

// lastStart returns the last moment a publish of a row leased at leased
// may start: PublishTimeout and its grace before the lease ends.
func (r *relay) lastStart(leased time.Time) time.Time {
	return leased.Add(r.opts.LeaseDuration - r.opts.PublishTimeout - r.publishGrace())
}

// report hands the outcome of a publish (or of a release) to the row's
// locked batch, or to the coordinator.
func (r *relay) report(res result) {
	if res.err == nil && !res.released {
		r.brokerFailures.Store(0)
	}
	b := res.c.batch
	if b == nil {
		r.results <- res
		return
	}
	b.mu.Lock()
	b.results = append(b.results, res)
	complete := len(b.results) == b.size
	b.mu.Unlock()
	if complete {
		r.publishing.Add(1) // Run waits for the commit
		go func() {
			defer r.publishing.Done()
			r.batchDone <- r.finishBatch(b)
		}()
	}
}

// finishBatch settles a locked batch once each of its rows has been tried:
// in its transaction it marks the published rows and leases the failed
// ones, which then continue as leased rows; then it commits.
func (r *relay) finishBatch(b *lockedBatch) batchOutcome {
	defer b.cancel()
	o := batchOutcome{b: b}
	var failedIDs []int64
	for _, res := range b.results {
		switch {
		case res.released:
		case res.err == nil:
			o.published = append(o.published, res.c.row.ID)
		default:
			o.failed = append(o.failed, res)
			failedIDs = append(failedIDs, res.c.row.ID)
		}
	}
	o.err = func() error {
		if len(o.published) > 0 {
			if err := r.o.store.MarkLocked(b.ctx, *b.tx, r.o.owner, o.published, 0, r.opts.PublishedRetention); err != nil {
				return fmt.Errorf("mark %d rows published: %w", len(o.published), err)
			}
		}
		if len(failedIDs) > 0 {
			o.leased = time.Now()
			if err := r.o.store.LeaseLocked(b.ctx, *b.tx, r.o.owner, failedIDs, r.opts.LeaseDuration); err != nil {
				return fmt.Errorf("lease %d failed rows: %w", len(failedIDs), err)
			}
		}
		return b.tx.Commit()
	}()
	if o.err != nil {
		_ = b.tx.Rollback() // the transaction is already broken
	}
	return o
}

// publish sends c to the broker once and releases its slot when the
// publisher returns. A nil error means the publisher returned nil: for
// brokers with confirms, that the broker has the message.
//
// The message's context ends after PublishTimeout. If the publisher has not
// returned a little after that, publish returns an error without it: the
// row is retried like any failed publish, and the publisher's call keeps
// its slot until it returns, so that a publisher that blocks for good
// stops the relay's publishing instead of piling up goroutines.
//
// Each call is a PRODUCER span, parented to the trace context stored with
// the row; the message carries the span's context instead of the stored
// one, so that consumers continue the trace from it.
func (r *relay) publish(c *claimed) (err error) {
	c.tries++
	row := &c.row
	attempt := row.Attempts + c.tries
	ctx, span := r.o.tracing.startSend(c.headers, row, attempt)
	defer func() {
		if err != nil {
			spanError(span, err, r.policy.Exhausted(attempt), attempt)
			r.o.metrics.sendFailed(row, err)
		} else {
			r.o.metrics.published(row)
		}
		span.End()
	}()
	msg := wire.Encode(wire.Envelope{
		ID:       row.MessageID,
		Name:     row.Name,
		Version:  row.Version,
		Source:   row.Source,
		Key:      row.Key,
		Sequence: row.Seq,
		Time:     time.UnixMicro(row.CreatedAt),
		Payload:  row.Payload,
		Headers:  c.headers,
	})
	r.o.tracing.inject(ctx, msg.Metadata)
	ctx, cancel := context.WithTimeout(ctx, r.opts.PublishTimeout)
	msg.SetContext(ctx)
	const running, returned, abandoned = 0, 1, 2
	var state atomic.Int32
	done := make(chan error, 1)
	go func() {
		defer cancel()
		err := r.o.pub.Publish(row.Topic, msg)
		<-r.slots
		if !state.CompareAndSwap(running, returned) {
			r.stuck.Add(-1)
		}
		done <- err
	}()
	watchdog := time.NewTimer(r.opts.PublishTimeout + r.publishGrace())
	defer watchdog.Stop()
	select {
	case err = <-done:
	case <-watchdog.C:
		if state.CompareAndSwap(running, abandoned) {
			n := r.stuck.Add(1)
			r.log.Error("outbox: the publisher did not return within PublishTimeout; the row will be retried, and the call keeps its publish slot until it returns",
				slog.String("message_id", row.MessageID), slog.String("topic", row.Topic),
				slog.Duration("publish_timeout", r.opts.PublishTimeout), slog.Int64("stuck_publishes", n), slog.Int("max_in_flight", r.opts.MaxInFlight))
			return timedOut{fmt.Errorf("publish to %s: the publisher did not return within %s", row.Topic, r.opts.PublishTimeout)}
		}
		err = <-done // it has just returned
	}
	if err != nil {
		return fmt.Errorf("publish to %s: %w", row.Topic, err)
	}
	return nil
}

// timedOut is the error of a publish the relay stopped waiting for. It
// is a context.DeadlineExceeded, which its message does not say: the
// metrics count it as a timeout.
type timedOut struct{ error }

func (timedOut) Is(target error) bool { return target == context.DeadlineExceeded }

// coordinate settles publish outcomes until results is closed: it marks
// published rows in batches, schedules local retries, and returns rows that
// used up their local retries to the table. After results is closed it
// settles everything it still holds, with a context that outlives ctx.
func (r *relay) coordinate(ctx context.Context) {
	s := settler{r: r, published: map[int][]int64{}, stopping: ctx.Done(), conn: leased.NewPinned(r.o.db, r.o.dialect, !r.o.opts.NoPreparedStatements)}
	defer s.conn.Close()
	// Bookkeeping must outlive Run's context: rows already published are
	// marked even while stopping.
	ctx = context.WithoutCancel(ctx)
	retryTimer := time.NewTimer(time.Hour)
	defer retryTimer.Stop()
	var flushRetry, flushLater <-chan time.Time
	// Marks wait like claims do (see minClaimLinger) unless a batch's
	// worth is pending: publishes finish one by one, and marking each
	// handful at once would cost the database a statement per handful.
	var markNotBefore time.Time
	var markTime statementTime
	results := r.results
	// Run closes results after every publish and every batch's commit
	// has been reported.
	for results != nil {
		var due <-chan time.Time
		if len(s.waiting) > 0 {
			retryTimer.Reset(time.Until(s.earliest()))
			due = retryTimer.C
		}
		select {
		case res, ok := <-results:
			if !ok {
				results = nil
				break
			}
			s.handle(ctx, res)
			// Take what else is ready before writing, so that one
			// statement marks many rows.
			for drained := false; !drained && s.pendingMarks < r.opts.BatchSize; {
				select {
				case res, ok := <-results:
					if !ok {
						results, drained = nil, true
						break
					}
					s.handle(ctx, res)
				default:
					drained = true
				}
			}
		case o := <-r.batchDone:
			s.batchFinished(ctx, o)
		case <-due:
			s.releaseDue()
		case <-flushRetry:
			flushRetry = nil
		case <-flushLater:
			flushLater = nil
		}
		if flushRetry != nil {
			continue // after a failed flush, wait for the retry
		}
		if wait := time.Until(markNotBefore); wait > 0 && results != nil &&
			s.pendingMarks < r.opts.BatchSize && len(s.released) == 0 {
			if flushLater == nil && s.pendingMarks > 0 {
				flushLater = time.After(wait)
			}
			continue
		}
		marks, began := s.pendingMarks, time.Now()
		if err := s.flush(ctx); err != nil {
			r.log.Error("outbox: mark published", slog.Any("error", err))
			flushRetry = time.After(pauseBackoff().Delay(1))
			continue
		}
		if marks > 0 {
			now := time.Now()
			markTime.add(now.Sub(began))
			markNotBefore = now.Add(markTime.linger())
		}
	}
	s.shutdown(ctx)
}

// settler is the coordinator's state.
type settler struct {
	r *relay
	// published holds ids to mark, by failures before their success.
	published    map[int][]int64
	pendingMarks int
	released     []int64
	// waiting holds rows whose local retry is not yet due.
	waiting []*claimed
	// stopping is closed when Run's context is done.
	stopping <-chan struct{}
	// conn is the coordinator's connection; see leased.Pinned.
	conn *leased.Pinned
}

func (s *settler) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

func (s *settler) handle(ctx context.Context, res result) {
	c := res.c
	switch {
	case res.released:
		s.released = append(s.released, c.row.ID)
		return
	case res.err == nil:
		s.published[c.tries-1] = append(s.published[c.tries-1], c.row.ID)
		s.pendingMarks++
		return
	}
	s.failed(ctx, c, res.err)
}

// batchFinished continues after a locked batch's transaction ended.
func (s *settler) batchFinished(ctx context.Context, o batchOutcome) {
	r := s.r
	if o.err != nil {
		// The locks are gone: the rows are due again and will be
		// claimed again, the published ones published twice.
		r.log.Error("outbox: settle batch; its rows will be claimed again, and those published may be published twice",
			slog.Any("error", o.err), slog.Int("rows", o.b.size))
		s.settled(o.b.size)
		return
	}
	s.settled(o.b.size - len(o.failed))
	if h := r.o.hooks; h != nil && h.published != nil && len(o.published) > 0 {
		h.published(o.published)
	}
	lastStart := r.lastStart(o.leased)
	for _, res := range o.failed {
		res.c.batch, res.c.lastStart = nil, lastStart
		s.failed(ctx, res.c, res.err)
	}
}

// failed handles a failed publish of a leased row: a local retry later, or
// the end of this round.
func (s *settler) failed(ctx context.Context, c *claimed, err error) {
	r := s.r
	c.err = err
	if !c.permanent {
		r.brokerFailures.Add(1)
	}
	attempts := c.row.Attempts + c.tries
	local := 0
	if c.row.Attempts == 0 {
		local = r.policy.Local // the first claim gets the quick retries
	}
	if !c.permanent && c.tries <= local && !r.policy.Exhausted(attempts) && !s.isStopping() {
		c.due = time.Now().Add(r.policy.LocalDelay(c.tries))
		if c.due.Before(c.lastStart) {
			s.waiting = append(s.waiting, c)
			r.o.metrics.ended(&c.row, tables.StatusPending)
			return
		}
	}
	s.endRound(ctx, c, true)
}

// endRound stores the outcome of a row whose publishes in this claim all
// failed: pending again after the persistent backoff, or failed. count
// says to count the outcome in the metrics: not for a row that was
// already counted as retried when its local retry was scheduled.
func (s *settler) endRound(ctx context.Context, c *claimed, count bool) {
	r := s.r
	attempts := c.row.Attempts + c.tries
	if c.permanent {
		attempts = max(attempts, r.opts.MaxRetries)
	}
	msg := truncateError(c.err)
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	var err error
	status := tables.StatusPending
	unlock := r.lockWrites()
	if r.policy.Exhausted(attempts) {
		status = tables.StatusFailed
		err = s.conn.Do(ctx, func(db bun.IDB) error {
			return r.o.store.Finish(ctx, db, r.o.owner, c.row.ID, tables.StatusFailed, attempts, r.opts.FailedRetention, msg)
		})
	} else {
		delay := r.policy.PersistentDelay(attempts)
		err = s.conn.Do(ctx, func(db bun.IDB) error {
			return r.o.store.Retry(ctx, db, r.o.owner, c.row.ID, attempts, delay, msg)
		})
	}
	unlock()
	if count {
		r.o.metrics.ended(&c.row, status)
	}
	level := slog.LevelWarn
	if status == tables.StatusFailed {
		level = slog.LevelError
	}
	r.log.Log(ctx, level, "outbox: publish failed",
		slog.String("message_id", c.row.MessageID), slog.String("event", c.row.Name), slog.String("topic", c.row.Topic),
		slog.Int("attempts", attempts), slog.String("status", status), slog.String("error", msg))
	if err != nil {
		// The lease expires and the row is claimed again: nothing is lost.
		r.log.Error("outbox: store failed publish", slog.String("message_id", c.row.MessageID), slog.Any("error", err))
	}
	s.settled(1)
	if h := r.o.hooks; h != nil && h.ended != nil {
		h.ended(c.row.ID, status)
	}
}

func truncateError(err error) string {
	msg := err.Error()
	if len(msg) <= maxErrorLen {
		return msg
	}
	cut := maxErrorLen
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "..."
}

// settled counts n rows as no longer held and lets the dispatcher claim.
func (s *settler) settled(n int) {
	s.r.outstanding.Add(-int64(n))
	select {
	case s.r.progress <- struct{}{}:
	default:
	}
}

func (s *settler) earliest() time.Time {
	t := s.waiting[0].due
	for _, c := range s.waiting[1:] {
		if c.due.Before(t) {
			t = c.due
		}
	}
	return t
}

// releaseDue hands rows whose local retry is due to the dispatcher.
func (s *settler) releaseDue() {
	now := time.Now()
	keep := s.waiting[:0]
	for _, c := range s.waiting {
		if c.due.After(now) {
			keep = append(keep, c)
			continue
		}
		s.r.retries <- c // never blocks: it holds at most maxOutstanding rows
	}
	clear(s.waiting[len(keep):])
	s.waiting = keep
}

// flush marks published rows, one statement per distinct failure count
// (almost always one), and hands back released rows.
func (s *settler) flush(ctx context.Context) error {
	r := s.r
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	defer r.lockWrites()()
	for failures, ids := range s.published {
		var n int64
		err := s.conn.Do(ctx, func(db bun.IDB) (err error) {
			n, err = r.o.store.Done(ctx, db, r.o.owner, ids, failures, r.opts.PublishedRetention)
			return err
		})
		if err != nil {
			return fmt.Errorf("%d rows: %w", len(ids), err)
		}
		if n < int64(len(ids)) {
			r.log.Warn("outbox: rows were taken over by another relay before they were marked; they may be published twice",
				slog.Int64("rows", int64(len(ids))-n))
		}
		delete(s.published, failures)
		s.pendingMarks -= len(ids)
		s.settled(len(ids))
		if h := r.o.hooks; h != nil && h.published != nil {
			h.published(ids)
		}
	}
	if len(s.released) > 0 {
		err := s.conn.Do(ctx, func(db bun.IDB) error {
			return r.o.store.Release(ctx, db, r.o.owner, s.released)
		})
		if err != nil {
			return fmt.Errorf("release %d rows: %w", len(s.released), err)
		}
		s.settled(len(s.released))
		s.released = s.released[:0]
	}
	return nil
}

// shutdown settles everything still held once the dispatcher has stopped.
func (s *settler) shutdown(ctx context.Context) {
	for len(s.r.retries) > 0 { // the dispatcher has stopped
		s.waiting = append(s.waiting, <-s.r.retries)
	}
	for _, c := range s.waiting {
		s.endRound(ctx, c, false)
	}
	s.waiting = nil
	if err := s.flush(ctx); err != nil {
		s.r.log.Error("outbox: settle rows on stop; their leases will expire and they will be published again", slog.Any("error", err))
	}
}

// cleanLoop deletes expired rows every CleanInterval, starting at once.
func (r *relay) cleanLoop(ctx context.Context) {
	t := time.NewTicker(r.opts.CleanInterval)
	defer t.Stop()
	for {
		unlock := r.lockWrites()
		n, err := r.o.Clean(ctx)
		unlock()
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Error("outbox: clean", slog.Any("error", err), slog.Int("deleted", n))
		case n > 0:
			r.log.Info("outbox: cleaned expired rows", slog.Int("deleted", n))
		}
		if h := r.o.hooks; h != nil && h.cleaned != nil {
			h.cleaned(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
