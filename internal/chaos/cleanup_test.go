//go:build unix

package chaos_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/internal/chaos"
	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// TestCleanupAtScale fills an outbox with expired published rows and
// cleans them up while producers commit 300 events/s and the relay
// publishes them. Cleanup deletes in batches of DeleteBatch rows, one
// statement each, so no cleanup transaction may last a second, and nothing
// may deadlock: every business transaction must commit.
func TestCleanupAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite skipped in -short mode")
	}
	full := os.Getenv(envFull) == "1"
	rows := func(ci, fullSize int) int {
		if full {
			return fullSize
		}
		return ci
	}
	res := &results{}
	t.Cleanup(func() { res.save(t) })
	type scaleCase struct {
		b    backend
		rows int
	}
	cases := []scaleCase{{backend{name: "sqlite", db: "sqlite"}, rows(100_000, 300_000)}}
	for _, db := range []struct {
		name         string
		ci, fullSize int
	}{{"postgres", 200_000, 1_000_000}, {"mysql", 100_000, 300_000}} {
		dsn := testservices.Optional(t, db.name)
		if dsn == "" {
			continue
		}
		cases = append(cases, scaleCase{backend{name: db.name, db: db.name, dsn: dsn}, rows(db.ci, db.fullSize)})
	}
	for _, c := range cases {
		t.Run(c.b.name, func(t *testing.T) {
			res.add(t, cleanupAtScale(t, newEnv(t, c.b), c.rows))
		})
	}
}

const (
	cleanupRate    = 300 // events/s committed during the cleanup
	baselineWindow = 2 * time.Second
	// cleanupMinRateRatio is the least share of their rate without a
	// cleanup that producers keep during one.
	cleanupMinRateRatio = 0.5
	cleanupMaxStmt      = time.Second
	fillChunk           = 10_000
	fillPayloadBytes    = 256
)

func cleanupAtScale(t *testing.T, e *env, rows int) string {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	opts := chaos.RelayOptions(e.tables, log)
	opts.CleanInterval = time.Hour // the test cleans, and times it
	// Bun's hooks time every cleanup statement: not prepared.
	opts.NoPreparedStatements = true
	ob, err := eventgen.NewOutbox(e.db, tr.Publisher(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	fillStart := time.Now()
	fillExpired(t, e.db, e.b.db, e.tables.Outbox, rows)
	t.Logf("filled %d expired rows in %s", rows, time.Since(fillStart).Round(time.Millisecond))

	// The producers' rate on this machine as it is loaded now, without a
	// cleanup: the bar for their rate during one.
	baseCtx, stopBase := context.WithTimeout(ctx, baselineWindow)
	baseStart := time.Now()
	base, _ := chaos.RunProducer(baseCtx, e.db, ob, e.tables, chaos.ProducerOptions{Workers: 4, Rate: cleanupRate})
	stopBase()
	baseRate := float64(base.Committed) / time.Since(baseStart).Seconds()

	timer := &deleteTimer{}
	e.db.AddQueryHook(timer)

	runCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- ob.Run(runCtx) }()

	prodCtx, stopProducers := context.WithCancel(ctx)
	prodDone := make(chan chaos.ProducerStats, 1)
	go func() {
		st, _ := chaos.RunProducer(prodCtx, e.db, ob, e.tables, chaos.ProducerOptions{Workers: 4, Rate: cleanupRate})
		prodDone <- st
	}()

	start := time.Now()
	deleted, err := ob.Clean(ctx)
	took := time.Since(start)
	stopProducers()
	prod := <-prodDone
	committed, failures, latencies := prod.Committed, prod.Failures, prod.Latencies
	stopRelay()
	if err := <-relayDone; err != nil {
		t.Errorf("relay: %v", err)
	}
	if err != nil {
		t.Fatalf("Clean after %d rows: %v", deleted, err)
	}

	for _, f := range failures {
		t.Errorf("business transaction failed during cleanup: %v", f)
	}
	// The relay's Run also cleans, at start: two cleaners share the work,
	// as replicas do. Clean skips the rows that the other cleaner is
	// deleting rather than wait for them, so it may return while the
	// relay's cleaner holds a batch; stopping the relay then rolls that
	// batch back. The next pass, as the relay's next interval would, takes
	// what is left.
	if _, err := ob.Clean(ctx); err != nil {
		t.Fatalf("Clean after the relay stopped: %v", err)
	}
	// The database, not the hook, says what was deleted: a DELETE that
	// commits just as its caller's context ends reports an error to the
	// caller (and to Bun's hook) although its rows are gone.
	statements, hookRows, longest := timer.result()
	var expiredLeft, liveRows, committedEvents int
	for _, c := range []struct {
		dst *int
		q   *bun.SelectQuery
	}{
		{&expiredLeft, e.db.NewSelect().TableExpr(e.tables.Outbox).Where("message_id LIKE ?", "expired-%")},
		{&liveRows, e.db.NewSelect().TableExpr(e.tables.Outbox).Where("message_id NOT LIKE ?", "expired-%")},
		{&committedEvents, e.db.NewSelect().TableExpr(e.tables.Committed)},
	} {
		if err := c.q.ColumnExpr("count(*)").Scan(ctx, c.dst); err != nil {
			t.Fatal(err)
		}
	}
	if expiredLeft != 0 {
		t.Errorf("%d of the %d expired rows left after cleaning", expiredLeft, rows)
	}
	// Every event the producers committed during the test is still there:
	// its retention has not passed.
	if liveRows != committedEvents {
		t.Errorf("%d live outbox rows after cleaning, want the %d events committed during the test", liveRows, committedEvents)
	}
	if hookRows > int64(rows) {
		t.Errorf("the DELETE statements reported %d rows, more than the %d expired ones", hookRows, rows)
	}
	if longest >= cleanupMaxStmt {
		t.Errorf("the longest cleanup statement took %s, want under %s", longest, cleanupMaxStmt)
	}
	// Cleanup shares the machine with the producers (on 2 cores they lose
	// about a fifth of their rate to it on PostgreSQL); what it must not
	// do is block them, which would take most of their rate.
	if want := int(baseRate * took.Seconds() * cleanupMinRateRatio); took > 2*time.Second && committed < want {
		t.Errorf("producers committed %d events in %s of cleanup, want at least %d (%.0f%% of the %.0f/s they committed just before, without it)",
			committed, took.Round(time.Millisecond), want, 100*cleanupMinRateRatio, baseRate)
	}
	total := rows - expiredLeft
	return fmt.Sprintf("chaos scenario=cleanup-at-scale backend=%s rows=%d deleted=%d by_clean=%d took=%s rows_per_s=%.0f delete_statements=%d longest_delete=%s producer_committed=%d producer_rate_ratio=%.2f producer_failures=%d producer_p99=%s deadlocks=%d",
		e.b.name, rows, total, deleted, took.Round(time.Millisecond), float64(total)/took.Seconds(), statements,
		longest.Round(time.Millisecond), committed, float64(committed)/took.Seconds()/baseRate, len(failures), p99(latencies).Round(100*time.Microsecond), countDeadlocks(failures))
}

// fillExpired inserts n published rows whose retention ended a day ago,
// fillChunk rows per statement.
func fillExpired(t *testing.T, db *bun.DB, kind, table string, n int) {
	t.Helper()
	ctx := context.Background()
	digit := "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)"
	num := "(a.d + 10*b.d + 100*c.d + 1000*e.d + ?)"
	id := "'expired-' || " + num
	if kind == "mysql" {
		id = "CONCAT('expired-', " + num + ")"
	}
	day := time.Now().Add(-24 * time.Hour).UnixMicro()
	q := fmt.Sprintf(`INSERT INTO %s (message_id, name, version, topic, msg_key, source, payload, status, attempts, created_at, published_at, expires_at)
SELECT %s, 'OrderPlaced', 1, 'shop.orders', '', 'chaos', ?, 'published', 1, ?, ?, ?
FROM %s a CROSS JOIN %s b CROSS JOIN %s c CROSS JOIN %s e`, table, id, digit, digit, digit, digit)
	payload := []byte(`{"pad":"` + strings.Repeat("x", fillPayloadBytes-10) + `"}`)
	for off := 0; off < n; off += fillChunk {
		if _, err := db.ExecContext(ctx, q, off, payload, day-1000, day-1000, day); err != nil {
			t.Fatalf("fill rows %d..: %v", off, err)
		}
	}
}

// deleteTimer records how long each DELETE statement took, and how many
// rows they deleted together.
type deleteTimer struct {
	mu      sync.Mutex
	count   int
	rows    int64
	longest time.Duration
}

func (d *deleteTimer) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

func (d *deleteTimer) AfterQuery(_ context.Context, ev *bun.QueryEvent) {
	if !strings.HasPrefix(strings.TrimSpace(ev.Query), "DELETE") {
		return
	}
	took := time.Since(ev.StartTime)
	var n int64
	if ev.Err == nil && ev.Result != nil {
		n, _ = ev.Result.RowsAffected()
	}
	d.mu.Lock()
	d.count++
	d.rows += n
	d.longest = max(d.longest, took)
	d.mu.Unlock()
}

func (d *deleteTimer) result() (statements int, rows int64, longest time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count, d.rows, d.longest
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// countDeadlocks counts the failures that are deadlocks (PostgreSQL
// 40P01, MySQL 1213) or lock timeouts (MySQL 1205, SQLite's busy error).
func countDeadlocks(errs []error) int {
	n := 0
	for _, err := range errs {
		s := strings.ToLower(err.Error())
		if strings.Contains(s, "deadlock") || strings.Contains(s, "40p01") || strings.Contains(s, "1213") ||
			strings.Contains(s, "1205") || strings.Contains(s, "lock wait") || strings.Contains(s, "database is locked") {
			n++
		}
	}
	return n
}
