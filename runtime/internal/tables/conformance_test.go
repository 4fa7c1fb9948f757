package tables

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// The store conformance suite: one table of behaviours of the leased-row
// engine, run for both tables on every database the environment offers
// (SQLite always; PostgreSQL and MariaDB when configured). A new dialect
// is a new entry in testenv.Databases that passes it.

// engine is a leased table seen through row ids, so that one suite covers
// both row types.
type engine interface {
	Claim(ctx context.Context, db bun.IDB, c leased.Claim) ([]int64, error)
	Failed(ctx context.Context, db bun.IDB, limit int) ([]int64, error)
	Own(ctx context.Context, tx bun.IDB, owner string, id int64, lease time.Duration) (bool, error)
	Done(ctx context.Context, db bun.IDB, owner string, ids []int64, failures int, retention time.Duration) (int64, error)
	Retry(ctx context.Context, db bun.IDB, owner string, id int64, attempts int, delay time.Duration, lastErr string) error
	Finish(ctx context.Context, db bun.IDB, owner string, id int64, status string, attempts int, retention time.Duration, lastErr string) error
	Release(ctx context.Context, db bun.IDB, owner string, ids []int64) error
	Requeue(ctx context.Context, db bun.IDB, ids []int64, batch int) (int64, error)
	RequeueFailed(ctx context.Context, db bun.IDB, batch int) (int64, error)
	Cleanup(ctx context.Context, db bun.IDB, batch int) (int64, error)
	Stats(ctx context.Context, db bun.IDB, historyLimit int) (leased.Stats, error)
}

type byID[R any] struct {
	*leased.Table[R]
	id func(R) int64
}

func (e byID[R]) Claim(ctx context.Context, db bun.IDB, c leased.Claim) ([]int64, error) {
	rows, err := e.Table.Claim(ctx, db, c)
	return e.ids(rows), err
}

func (e byID[R]) Failed(ctx context.Context, db bun.IDB, limit int) ([]int64, error) {
	rows, err := e.Table.Failed(ctx, db, limit)
	return e.ids(rows), err
}

func (e byID[R]) ids(rows []R) []int64 {
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = e.id(r)
	}
	return ids
}

// kind is one of the two tables.
type kind struct {
	name       string
	migrations []sqlstore.Migration
	// open returns the engine on table for dialect d (which may be a
	// skewed copy of the database's).
	open func(d sqlstore.Dialect, table string, prepared *sqlstore.Prepared) engine
	// insert adds n rows due after delay, of payloadBytes bytes each.
	insert func(t *testing.T, db bun.IDB, d sqlstore.Dialect, table string, n int, delay time.Duration, payloadBytes int)
	// insertExpired adds one finished row that has already expired.
	insertExpired func(ctx context.Context, db bun.IDB, d sqlstore.Dialect, table string) error
	// countsOnClaim: a claim counts the attempt.
	countsOnClaim bool
}

const suiteGroup = "conformance"

var kinds = []kind{
	{
		name:       "outbox",
		migrations: OutboxMigrations,
		open: func(d sqlstore.Dialect, table string, p *sqlstore.Prepared) engine {
			return byID[OutboxRow]{NewOutbox(d, table, p), func(r OutboxRow) int64 { return r.ID }}
		},
		insert: func(t *testing.T, db bun.IDB, d sqlstore.Dialect, table string, n int, delay time.Duration, size int) {
			t.Helper()
			for i := range n {
				// The columns of version 1, so that upgrade tests can
				// fill a table of that version.
				_, err := db.ExecContext(context.Background(), fmt.Sprintf("INSERT INTO %s (message_id, name, version, topic, source, payload, status, created_at, next_attempt_at) VALUES (?, 'E', 1, 'topic', 'src', ?, '%s', %s, %s + ?)",
					table, StatusPending, d.Now, d.Now), fmt.Sprintf("m-%d-%d", time.Now().UnixNano(), i), make([]byte, size), delay.Microseconds())
				if err != nil {
					t.Fatal(err)
				}
			}
		},
		insertExpired: func(ctx context.Context, db bun.IDB, d sqlstore.Dialect, table string) error {
			_, err := db.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (message_id, name, version, topic, source, payload, status, created_at, expires_at) VALUES (?, 'E', 1, 'topic', 'src', ?, '%s', %s, %s - 1000000)",
				table, StatusPublished, d.Now, d.Now), fmt.Sprintf("x-%d", time.Now().UnixNano()), []byte{})
			return err
		},
	},
	{
		name:       "inbox",
		migrations: InboxMigrations,
		open: func(d sqlstore.Dialect, table string, p *sqlstore.Prepared) engine {
			return byID[InboxRow]{NewInbox(d, table, suiteGroup, p).Table, func(r InboxRow) int64 { return r.ID }}
		},
		insert: func(t *testing.T, db bun.IDB, d sqlstore.Dialect, table string, n int, delay time.Duration, size int) {
			t.Helper()
			in := NewInbox(d, table, suiteGroup, nil)
			for i := range n {
				row := InboxRow{MessageID: fmt.Sprintf("m-%d-%d", time.Now().UnixNano(), i), Name: "E", Version: 1, Topic: "topic", Payload: make([]byte, size)}
				if ok, err := in.Insert(context.Background(), db, row, Outcome{Status: StatusPending, Delay: delay}); err != nil || !ok {
					t.Fatalf("insert: %v, %v", ok, err)
				}
			}
		},
		insertExpired: func(ctx context.Context, db bun.IDB, d sqlstore.Dialect, table string) error {
			in := NewInbox(d, table, suiteGroup, nil)
			row := InboxRow{MessageID: fmt.Sprintf("x-%d", time.Now().UnixNano()), Name: "E", Version: 1, Topic: "topic"}
			_, err := in.Insert(ctx, db, row, Outcome{Status: StatusSucceeded, Retention: -time.Second})
			return err
		},
		countsOnClaim: true,
	},
}

// suite is one behaviour's environment: a fresh table of one kind on one
// database.
type suite struct {
	kind
	db    *bun.DB
	d     sqlstore.Dialect
	table string
	e     engine
}

func (s *suite) ctx() context.Context { return context.Background() }

// due makes every unfinished row due now and every lease expired, as if an
// hour had passed on the database's clock.
func (s *suite) hourPasses(t *testing.T) {
	t.Helper()
	q := fmt.Sprintf("UPDATE %s SET next_attempt_at = next_attempt_at - 3600000000, lease_until = lease_until - 3600000000 WHERE next_attempt_at IS NOT NULL", s.table)
	if _, err := s.db.ExecContext(s.ctx(), q); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) row(t *testing.T, id int64) (status string, attempts int, owner sql.NullString) {
	t.Helper()
	err := s.db.QueryRowContext(s.ctx(), "SELECT status, attempts, lock_owner FROM "+s.table+" WHERE id = ?", id).Scan(&status, &attempts, &owner)
	if err != nil {
		t.Fatal(err)
	}
	return status, attempts, owner
}

func (s *suite) claimAll(t *testing.T, owner string, lease time.Duration) []int64 {
	t.Helper()
	ids, err := s.e.Claim(s.ctx(), s.db, leased.Claim{Owner: owner, Limit: 1000, Lease: lease})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return ids
}

// failRows claims every due row and finishes it failed, expiring after
// retention.
func (s *suite) failRows(t *testing.T, retention time.Duration) []int64 {
	t.Helper()
	ids := s.claimAll(t, "failer", time.Minute)
	for _, id := range ids {
		if err := s.e.Finish(s.ctx(), s.db, "failer", id, StatusFailed, 1, retention, "boom"); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

var behaviours = []struct {
	name string
	run  func(t *testing.T, s *suite)
}{
	{"TwoClaimersNeverGetTheSameRow", func(t *testing.T, s *suite) {
		const rows, claimers = 120, 4
		s.insert(t, s.db, s.d, s.table, rows, 0, 16)
		hook := &statements{}
		s.db.AddQueryHook(hook)
		var mu sync.Mutex
		seen := map[int64]string{}
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for c := range claimers {
			owner := fmt.Sprintf("claimer-%d", c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ids, err := s.e.Claim(s.ctx(), s.db, leased.Claim{Owner: owner, Limit: 7, Lease: time.Minute})
					if err != nil {
						errs <- err
						return
					}
					if len(ids) == 0 {
						return
					}
					mu.Lock()
					for _, id := range ids {
						if prev, ok := seen[id]; ok {
							errs <- fmt.Errorf("row %d claimed by %s and %s", id, prev, owner)
						}
						seen[id] = owner
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if len(seen) != rows {
			t.Errorf("%d rows claimed, want %d", len(seen), rows)
		}
		// On MySQL the locking read goes through the claim index, so
		// that it locks the batch and not every due row it scans.
		if s.d.Name == "mysql" {
			for _, q := range hook.queries("SELECT") {
				if strings.Contains(q, "SKIP LOCKED") && !strings.Contains(q, "FORCE INDEX") {
					t.Errorf("a claim's locking read does not force the claim index: %s", q)
				}
			}
		}
	}},
	{"ALeaseExpiresAndIsTakenOver", func(t *testing.T, s *suite) {
		s.insert(t, s.db, s.d, s.table, 3, 0, 16)
		first := s.claimAll(t, "first", time.Minute)
		if len(first) != 3 {
			t.Fatalf("first claimed %d rows, want 3", len(first))
		}
		if again := s.claimAll(t, "second", time.Minute); len(again) != 0 {
			t.Fatalf("second claimed %v while the lease held", again)
		}
		s.hourPasses(t)
		second := s.claimAll(t, "second", time.Minute)
		slices.Sort(first)
		slices.Sort(second)
		if !slices.Equal(first, second) {
			t.Fatalf("after the lease expired second claimed %v, want %v", second, first)
		}
		for _, id := range second {
			if status, _, owner := s.row(t, id); status != StatusProcessing || owner.String != "second" {
				t.Errorf("row %d: %s by %s, want processing by second", id, status, owner.String)
			}
		}
	}},
	{"ASettleByAnExpiredOwnerIsRefused", func(t *testing.T, s *suite) {
		s.insert(t, s.db, s.d, s.table, 4, 0, 16)
		ids := s.claimAll(t, "zombie", time.Minute)
		s.hourPasses(t)
		if got := s.claimAll(t, "live", time.Minute); len(got) != 4 {
			t.Fatalf("live took over %d rows, want 4", len(got))
		}
		ctx := s.ctx()
		if n, err := s.e.Done(ctx, s.db, "zombie", ids[:1], 0, time.Hour); err != nil || n != 0 {
			t.Errorf("zombie Done = %d, %v; want 0 rows", n, err)
		}
		if err := s.e.Retry(ctx, s.db, "zombie", ids[1], 1, 0, "late"); err != nil {
			t.Error(err)
		}
		if err := s.e.Finish(ctx, s.db, "zombie", ids[2], StatusFailed, 1, time.Hour, "late"); err != nil {
			t.Error(err)
		}
		if err := s.e.Release(ctx, s.db, "zombie", ids[3:]); err != nil {
			t.Error(err)
		}
		if ok, err := s.e.Own(ctx, s.db, "zombie", ids[0], time.Minute); err != nil || ok {
			t.Errorf("zombie Own = %v, %v; want false", ok, err)
		}
		for _, id := range ids {
			if status, _, owner := s.row(t, id); status != StatusProcessing || owner.String != "live" {
				t.Errorf("row %d after the zombie's settles: %s by %s, want processing by live", id, status, owner.String)
			}
		}
		if ok, err := s.e.Own(ctx, s.db, "live", ids[0], time.Minute); err != nil || !ok {
			t.Errorf("live Own = %v, %v; want true", ok, err)
		}
		if n, err := s.e.Done(ctx, s.db, "live", ids, 0, time.Hour); err != nil || n != 4 {
			t.Errorf("live Done = %d, %v; want 4", n, err)
		}
	}},
	{"DueTimesUseTheDatabaseClock", func(t *testing.T, s *suite) {
		// Rows due in an hour by the database's clock; an engine whose
		// clock expression runs two hours ahead finds them due, the
		// real one does not. Go's clock plays no part.
		s.insert(t, s.db, s.d, s.table, 2, time.Hour, 16)
		if ids := s.claimAll(t, "now", time.Minute); len(ids) != 0 {
			t.Fatalf("claimed %v an hour before they are due", ids)
		}
		ahead := s.d
		ahead.Now = fmt.Sprintf("(%s + %d)", s.d.Now, (2 * time.Hour).Microseconds())
		later := s.open(ahead, s.table, nil)
		ids, err := later.Claim(s.ctx(), s.db, leased.Claim{Owner: "later", Limit: 10, Lease: time.Minute})
		if err != nil || len(ids) != 2 {
			t.Fatalf("two hours later claimed %v, %v; want 2 rows", ids, err)
		}
		// A retry delay is measured on the same clock.
		if err := later.Retry(s.ctx(), s.db, "later", ids[0], 1, 30*time.Minute, "x"); err != nil {
			t.Fatal(err)
		}
		if got := s.claimAll(t, "now", time.Minute); len(got) != 0 {
			t.Errorf("claimed %v before their retry is due", got)
		}
	}},
	{"AClaimCountsAttemptsOnlyWhereTheTableSays", func(t *testing.T, s *suite) {
		s.insert(t, s.db, s.d, s.table, 1, 0, 16)
		ids := s.claimAll(t, "a", time.Minute)
		want := 0
		if s.countsOnClaim {
			want = 1
		}
		if _, attempts, _ := s.row(t, ids[0]); attempts != want {
			t.Errorf("attempts after a claim = %d, want %d", attempts, want)
		}
		if err := s.e.Release(s.ctx(), s.db, "a", ids); err != nil {
			t.Fatal(err)
		}
		if status, attempts, _ := s.row(t, ids[0]); status != StatusPending || attempts != 0 {
			t.Errorf("after release: %s with %d attempts, want pending with 0", status, attempts)
		}
		if again := s.claimAll(t, "b", time.Minute); len(again) != 1 {
			t.Errorf("a released row is not due at once: claimed %v", again)
		}
	}},
	{"AClaimKeepsToItsByteBudget", func(t *testing.T, s *suite) {
		s.insert(t, s.db, s.d, s.table, 5, 0, 1000)
		ids, err := s.e.Claim(s.ctx(), s.db, leased.Claim{Owner: "a", Limit: 10, MaxBytes: 2500, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		want := 5 // the inbox has no byte budget
		if s.name == "outbox" {
			want = 2
		}
		if len(ids) != want {
			t.Errorf("claimed %d rows of 1000 bytes within 2500 bytes, want %d", len(ids), want)
		}
		// One row always, however large.
		s.insert(t, s.db, s.d, s.table, 1, 0, 5000)
		if _, err := s.e.Done(s.ctx(), s.db, "a", ids, 0, time.Hour); err != nil {
			t.Fatal(err)
		}
		ids, err = s.e.Claim(s.ctx(), s.db, leased.Claim{Owner: "a", Limit: 10, MaxBytes: 100, Lease: time.Minute})
		if err != nil || len(ids) != 1 {
			t.Errorf("claim with a budget below one row = %v, %v; want one row", ids, err)
		}
	}},
	{"RequeueAndCleanupRunInBoundedBatches", func(t *testing.T, s *suite) {
		// Through Bun, so that its hook sees every statement.
		s.e = s.open(s.d, s.table, nil)
		s.insert(t, s.db, s.d, s.table, 25, 0, 16)
		s.failRows(t, time.Hour)
		hook := &statements{}
		s.db.AddQueryHook(hook)
		n, err := s.e.RequeueFailed(s.ctx(), s.db, 10)
		if err != nil || n != 25 {
			t.Fatalf("RequeueFailed = %d, %v; want 25", n, err)
		}
		if got := hook.affected("UPDATE"); !slices.Equal(got, []int64{10, 10, 5}) {
			t.Errorf("requeue updates changed %v rows, want [10 10 5]", got)
		}
		// Requeued rows are due at once with a fresh budget.
		s.failRows(t, -time.Second)
		hook.reset()
		n, err = s.e.Cleanup(s.ctx(), s.db, 10)
		if err != nil || n != 25 {
			t.Fatalf("Cleanup = %d, %v; want 25", n, err)
		}
		// Then one more pass finds nothing: an empty DELETE, or on MySQL
		// an empty read of ids and no DELETE.
		want := []int64{10, 10, 5, 0}
		if s.d.Name == "mysql" {
			want = want[:3]
		}
		if got := hook.affected("DELETE"); !slices.Equal(got, want) {
			t.Errorf("cleanup deletes removed %v rows, want %v", got, want)
		}
	}},
	{"RequeueTakesOnlyFailedRows", func(t *testing.T, s *suite) {
		s.insert(t, s.db, s.d, s.table, 3, 0, 16)
		failed := s.failRows(t, time.Hour)
		s.insert(t, s.db, s.d, s.table, 1, time.Hour, 16)
		if got, err := s.e.Failed(s.ctx(), s.db, 10); err != nil || len(got) != 3 {
			t.Fatalf("Failed = %v, %v; want 3 rows", got, err)
		}
		n, err := s.e.Requeue(s.ctx(), s.db, append(failed[:2:2], 999999), 1)
		if err != nil || n != 2 {
			t.Fatalf("Requeue = %d, %v; want 2", n, err)
		}
		if status, attempts, _ := s.row(t, failed[0]); status != StatusPending || attempts != 0 {
			t.Errorf("requeued row: %s with %d attempts, want pending with 0", status, attempts)
		}
		if got := s.claimAll(t, "a", time.Minute); len(got) != 2 {
			t.Errorf("claimed %v after requeue, want the 2 requeued rows", got)
		}
	}},
	{"CleanupDeletesByKeyAndDoesNotBlockInserts", func(t *testing.T, s *suite) {
		// The engine runs each cleanup statement in a READ COMMITTED
		// transaction of its own on MySQL. Here that transaction stays
		// open, and an insert of a row into the range it deleted from
		// must not wait for it: a range DELETE would hold gap locks
		// there. SQLite has one writer at a time and is left out.
		if s.d.Name == "sqlite" {
			t.Skip("SQLite has one writer at a time")
		}
		for range 5 {
			if err := s.insertExpired(s.ctx(), s.db, s.d, s.table); err != nil {
				t.Fatal(err)
			}
		}
		hook := &statements{}
		s.db.AddQueryHook(hook)
		tx, err := s.db.BeginTx(s.ctx(), &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback() //nolint:errcheck // ends the test's transaction
		if n, err := s.e.Cleanup(s.ctx(), tx, 3); err != nil || n != 5 {
			t.Fatalf("Cleanup in a transaction = %d, %v; want 5", n, err)
		}
		ctx, cancel := context.WithTimeout(s.ctx(), 5*time.Second)
		defer cancel()
		if err := s.insertExpired(ctx, s.db, s.d, s.table); err != nil {
			t.Fatalf("an insert while a cleanup transaction is open: %v", err)
		}
		for _, q := range hook.queries("DELETE") {
			if !strings.Contains(q, "id IN (") && !strings.Contains(q, "id = ANY(") {
				t.Errorf("a cleanup statement does not delete by primary key: %s", q)
			}
		}
	}},
	{"EveryStatementIsPreparedWhereTheDialectAllows", func(t *testing.T, s *suite) {
		prepared := sqlstore.NewPrepared(s.db, s.d)
		s.e = s.open(s.d, s.table, prepared)
		hook := &statements{}
		s.db.AddQueryHook(hook)
		round := func() {
			ctx := s.ctx()
			s.e.Claim(ctx, s.db, leased.Claim{Owner: "a", Limit: 10, Lease: time.Minute}) //nolint:errcheck // counted, not checked
			s.e.Own(ctx, s.db, "a", 1, time.Minute)                                       //nolint:errcheck
			s.e.Done(ctx, s.db, "a", []int64{1, 2}, 0, time.Hour)                         //nolint:errcheck
			s.e.Retry(ctx, s.db, "a", 1, 1, time.Second, "x")                             //nolint:errcheck
			s.e.Finish(ctx, s.db, "a", 1, StatusFailed, 1, time.Hour, "x")                //nolint:errcheck
			s.e.Release(ctx, s.db, "a", []int64{1})                                       //nolint:errcheck
			s.e.Failed(ctx, s.db, 10)                                                     //nolint:errcheck
			s.e.RequeueFailed(ctx, s.db, 10)                                              //nolint:errcheck
			s.e.Cleanup(ctx, s.db, 10)                                                    //nolint:errcheck
			s.e.Stats(ctx, s.db, 10)                                                      //nolint:errcheck
		}
		// Statements are prepared in the background on first use.
		var left []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			hook.reset()
			round()
			left = hook.notPrepared(s.d)
			if len(left) == 0 {
				break
			}
		}
		if len(left) > 0 {
			t.Errorf("statements still sent through Bun after preparation:\n%s", strings.Join(left, "\n"))
		}
	}},
}

// statements is a Bun query hook that records the statements it sees and
// the rows each changed.
type statements struct {
	mu   sync.Mutex
	seen []seenStatement
}

type seenStatement struct {
	query    string
	affected int64
}

func (h *statements) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

func (h *statements) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	var n int64 = -1
	if e.Result != nil && e.Err == nil {
		n, _ = e.Result.RowsAffected()
	}
	h.mu.Lock()
	h.seen = append(h.seen, seenStatement{e.Query, n})
	h.mu.Unlock()
}

func (h *statements) reset() {
	h.mu.Lock()
	h.seen = nil
	h.mu.Unlock()
}

// matching returns the statements that start with verb.
func (h *statements) matching(verb string) []seenStatement {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []seenStatement
	for _, s := range h.seen {
		if strings.HasPrefix(strings.TrimSpace(s.query), verb) {
			out = append(out, s)
		}
	}
	return out
}

// affected returns the rows changed by each statement that starts with verb.
func (h *statements) affected(verb string) []int64 {
	var out []int64
	for _, s := range h.matching(verb) {
		out = append(out, s.affected)
	}
	return out
}

// queries returns the statements that start with verb.
func (h *statements) queries(verb string) []string {
	var out []string
	for _, s := range h.matching(verb) {
		out = append(out, s.query)
	}
	return out
}

// notPrepared returns the statements that went through Bun although the
// dialect could have run them prepared: on MySQL, a statement with a list
// of ids is expanded by Bun and may not be prepared, and transaction
// control is Bun's own.
func (h *statements) notPrepared(d sqlstore.Dialect) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.seen {
		q := strings.TrimSpace(s.query)
		switch {
		case strings.HasPrefix(q, "BEGIN"), strings.HasPrefix(q, "COMMIT"), strings.HasPrefix(q, "ROLLBACK"), strings.HasPrefix(q, "SET TRANSACTION"):
		case d.Name == "mysql" && strings.Contains(q, "id IN ("):
		default:
			out = append(out, q)
		}
	}
	return out
}

func TestConformance(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			dialect, err := sqlstore.DialectOf(db)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range kinds {
				t.Run(k.name, func(t *testing.T) {
					for _, b := range slices.Concat(behaviours, statsBehaviours) {
						t.Run(b.name, func(t *testing.T) {
							// A handle of its own, so that hooks see only
							// this behaviour. Made before t.Parallel: NewDB
							// initialises the dialect it shares with db.
							own := bun.NewDB(db.DB, db.Dialect())
							t.Parallel() // each behaviour has a table of its own
							table := testenv.TableName(t, "conf_"+k.name)
							if err := sqlstore.Migrate(context.Background(), db, table, k.migrations); err != nil {
								t.Fatal(err)
							}
							testenv.DropTables(t, db, table)
							b.run(t, &suite{kind: k, db: own, d: dialect, table: table, e: k.open(dialect, table, nil)})
						})
					}
				})
			}
		})
	}
}

// atFirstVersion returns the dialect of db and a new table of the first
// version of migrations, dropped at t's cleanup.
func atFirstVersion(t *testing.T, db *bun.DB, prefix string, migrations []sqlstore.Migration) (sqlstore.Dialect, string) {
	t.Helper()
	dialect, err := sqlstore.DialectOf(db)
	if err != nil {
		t.Fatal(err)
	}
	table := testenv.TableName(t, prefix)
	testenv.DropTables(t, db, table)
	if err := sqlstore.Migrate(context.Background(), db, table, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	return dialect, table
}

// TestInboxVersion2KeysMessagesByTopic upgrades an inbox table of version 1
// that holds rows, and checks that the rows stay and that a message id is
// then unique per topic, not per group.
func TestInboxVersion2KeysMessagesByTopic(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			ctx := context.Background()
			dialect, table := atFirstVersion(t, db, "inbox_v1", InboxMigrations)
			insertV1 := fmt.Sprintf("INSERT INTO %s (consumer_group, message_id, name, version, topic, payload, status, attempts, created_at, next_attempt_at) VALUES (?, ?, 'E', 1, ?, ?, 'pending', 2, %s, %s)",
				table, dialect.Now, dialect.Now)
			for i, topic := range []string{"orders", "payments"} {
				if _, err := db.ExecContext(ctx, insertV1, "g", fmt.Sprintf("m%d", i), topic, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.ExecContext(ctx, insertV1, "g", "m0", "payments", []byte(`{}`)); err == nil {
				t.Fatal("version 1 took a second row for one group and message id")
			}
			if err := sqlstore.Migrate(ctx, db, table, InboxMigrations); err != nil {
				t.Fatalf("upgrade to version 2: %v", err)
			}
			var rows, attempts int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*), SUM(attempts) FROM "+table).Scan(&rows, &attempts); err != nil || rows != 2 || attempts != 4 {
				t.Fatalf("after the upgrade: %d rows with %d attempts, %v; want 2 rows with 4", rows, attempts, err)
			}
			in := NewInbox(dialect, table, "g", nil)
			insert := func(topic string) bool {
				t.Helper()
				ok, err := in.Insert(ctx, db, InboxRow{MessageID: "m0", Name: "E", Version: 1, Topic: topic, Payload: []byte(`{}`)}, Outcome{Status: StatusPending})
				if err != nil {
					t.Fatal(err)
				}
				return ok
			}
			if insert("orders") {
				t.Error("a message already recorded on its topic was recorded again")
			}
			if !insert("payments") {
				t.Error("a message with the id of one on another topic was not recorded")
			}
			// The table keeps working as a leased table after the rebuild.
			ids, err := in.Claim(ctx, db, leased.Claim{Owner: "o", Limit: 10, Lease: time.Minute})
			if err != nil || len(ids) != 3 {
				t.Errorf("claim after the upgrade = %d rows, %v; want 3", len(ids), err)
			}
			if err := sqlstore.Migrate(ctx, db, table, InboxMigrations); err != nil {
				t.Errorf("migrate again: %v", err)
			}
		})
	}
}
