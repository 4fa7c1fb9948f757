package tables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

func outboxKeys(t *testing.T, d testenv.Database) (*OutboxKeys, func() bun.Tx) {
	t.Helper()
	db := d.Open(t)
	dialect, err := sqlstore.DialectOf(db)
	if err != nil {
		t.Fatal(err)
	}
	table := testenv.TableName(t, "keys")
	testenv.DropTables(t, db, table)
	if err := sqlstore.Migrate(context.Background(), db, table, OutboxMigrations); err != nil {
		t.Fatal(err)
	}
	return NewOutboxKeys(dialect, table, sqlstore.NewPrepared(db, dialect)), func() bun.Tx {
		tx, err := db.BeginTx(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
}

func stream(source, topic, key string, n int) StreamCount {
	return StreamCount{ID: StreamID(source, topic, key), Source: source, Topic: topic, Key: key, Count: n}
}

// TestOutboxKeysNumberEachStream: each stream counts on from its last
// number, several streams in one call, and a rolled-back transaction leaves
// no gap.
func TestOutboxKeysNumberEachStream(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			keys, begin := outboxKeys(t, d)
			ctx := context.Background()
			a, b := stream("src", "orders", "k1", 2), stream("src", "orders", "k2", 1)
			take := func(commit bool, streams ...StreamCount) map[string]int64 {
				t.Helper()
				tx := begin()
				last, err := keys.Take(ctx, tx, streams)
				if err != nil {
					t.Fatal(err)
				}
				if commit {
					err = tx.Commit()
				} else {
					err = tx.Rollback()
				}
				if err != nil {
					t.Fatal(err)
				}
				return last
			}
			if got := take(true, a, b); got[a.ID] != 2 || got[b.ID] != 1 {
				t.Fatalf("first call: %v, want k1 at 2 and k2 at 1", got)
			}
			if got := take(false, a); got[a.ID] != 4 {
				t.Fatalf("rolled-back call: k1 at %d, want 4", got[a.ID])
			}
			if got := take(true, stream("src", "orders", "k1", 1)); got[a.ID] != 3 {
				t.Fatalf("after the rollback: k1 at %d, want 3 (no gap)", got[a.ID])
			}
			// Same key, another topic or source: another stream.
			other := stream("src", "payments", "k1", 1)
			if got := take(true, other); got[other.ID] != 1 {
				t.Fatalf("k1 on another topic at %d, want 1", got[other.ID])
			}
		})
	}
}

// TestOutboxKeysFollowCommitOrder: transactions that number one stream
// concurrently get 1..n with no gap or repeat, and each gets its number
// only after the transaction with the number before it has committed.
func TestOutboxKeysFollowCommitOrder(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			keys, begin := outboxKeys(t, d)
			const workers, each = 4, 15
			s := stream("src", "orders", "hot", 1)
			var mu sync.Mutex
			committing := map[int64]time.Time{} // seq -> when its Commit was called
			taken := map[int64]time.Time{}      // seq -> when Take returned it
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						tx := begin()
						last, err := keys.Take(context.Background(), tx, []StreamCount{s})
						if err != nil {
							t.Error(err)
							_ = tx.Rollback()
							return
						}
						now := time.Now()
						mu.Lock()
						taken[last[s.ID]] = now
						committing[last[s.ID]] = time.Now()
						mu.Unlock()
						if err := tx.Commit(); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if len(taken) != workers*each {
				t.Fatalf("%d distinct numbers for %d transactions", len(taken), workers*each)
			}
			for n := int64(1); n <= workers*each; n++ {
				if _, ok := taken[n]; !ok {
					t.Fatalf("number %d never given; numbers must be 1..%d", n, workers*each)
				}
				if n > 1 && taken[n].Before(committing[n-1]) {
					t.Errorf("number %d was given before the transaction holding %d committed", n, n-1)
				}
			}
		})
	}
}

// inbox returns a migrated inbox of group g on a fresh table of d.
func inbox(t *testing.T, d testenv.Database) (*bun.DB, *Inbox) {
	t.Helper()
	db := d.Open(t)
	dialect, err := sqlstore.DialectOf(db)
	if err != nil {
		t.Fatal(err)
	}
	table := testenv.TableName(t, "inbox")
	testenv.DropTables(t, db, table)
	if err := sqlstore.Migrate(context.Background(), db, table, InboxMigrations); err != nil {
		t.Fatal(err)
	}
	return db, NewInbox(dialect, table, "g", nil)
}

// TestInboxSkipMovesOnlyPastMissingEvents: a stream at 0 whose next rows
// are history (applied, then the key was forgotten and restarted by a later
// event) moves to just before its first held row, as past events never
// received; a row between them that still waits stops the move, for the
// retrier's scan and for an operator alike. A failed event that never ran
// is not history: it blocks its key until an operator skips it.
func TestInboxSkipMovesOnlyPastMissingEvents(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db, in := inbox(t, d)
			ctx, table := context.Background(), in.TableName
			s := Stream{Source: "src", Topic: "orders", Key: "k"}
			row := func(s Stream, seq int64) InboxRow {
				return InboxRow{MessageID: fmt.Sprintf("%s#%d", s.Key, seq), Name: "E", Version: 1, Topic: s.Topic, Key: s.Key, Seq: seq, Source: s.Source, Payload: []byte(`{}`)}
			}
			insert := func(s Stream, seq int64, o Outcome) {
				t.Helper()
				if ok, err := in.Insert(ctx, db, row(s, seq), o); err != nil || !ok {
					t.Fatalf("insert %s#%d: %v, %v", s.Key, seq, ok, err)
				}
			}
			// hold inserts event seq of s held, as a delivery does when its
			// stream stands at 0, which starts the stream.
			hold := func(s Stream, seq int64) {
				t.Helper()
				err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					pos, err := in.Advance(ctx, tx, row(s, seq))
					if err == nil && (pos.Advanced || pos.Applied != 0) {
						err = fmt.Errorf("advance = %+v, want not advanced from 0", pos)
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				insert(s, seq, Outcome{Status: StatusHeld})
			}
			insert(s, 1, Outcome{Status: StatusSucceeded, Retention: time.Hour})
			insert(s, 2, Outcome{Status: StatusPending})
			hold(s, 4) // the key was forgotten; event 4 starts it again

			if _, ok, err := in.Next(ctx, db, s, 1); err != nil || ok {
				t.Errorf("Next(1) = %v, %v; want nothing: the row is history", ok, err)
			}

			if _, _, err := in.Skip(ctx, db, s, "", 0, true); !errors.Is(err, ErrNotMissing) {
				t.Errorf("Skip(missingOnly) with event 2 waiting = %v, want ErrNotMissing", err)
			}
			if _, _, err := in.Skip(ctx, db, s, "by hand", time.Hour, false); err == nil || !strings.Contains(err.Error(), "wait") {
				t.Errorf("Skip with event 2 waiting = %v, want an error saying it waits", err)
			}
			if _, err := db.ExecContext(ctx, fmt.Sprintf("UPDATE %s SET status = '%s', expires_at = %s + 3600000000 WHERE message_id = ?", table, StatusSucceeded, in.D.Now), "k#2"); err != nil {
				t.Fatal(err)
			}
			at, skipped, err := in.Skip(ctx, db, s, "", 0, true)
			if err != nil || at != 3 || skipped != nil {
				t.Fatalf("Skip(missingOnly) past history = %d, %+v, %v; want 3, nothing skipped", at, skipped, err)
			}
			var applied int64
			if err := db.QueryRowContext(ctx, "SELECT seq FROM "+KeysTable(table)+" WHERE stream = ?", s.ID()).Scan(&applied); err != nil || applied != 3 {
				t.Errorf("stream at %d, %v; want 3", applied, err)
			}
			if _, _, err := in.Skip(ctx, db, s, "", 0, true); !errors.Is(err, ErrNotMissing) {
				t.Errorf("Skip(missingOnly) with event 4 next = %v, want ErrNotMissing", err)
			}

			// Event 1 of key r was rejected (failed, with an expiry): it
			// never ran, and blocks r.
			r := Stream{Source: "src", Topic: "orders", Key: "r"}
			insert(r, 1, Outcome{Status: StatusFailed, Retention: time.Hour, LastError: "rejected"})
			hold(r, 2)
			if next, ok, err := in.Next(ctx, db, r, 1); err != nil || !ok || next.Status != StatusFailed {
				t.Errorf("Next(r, 1) = %+v, %v, %v; want the failed row", next, ok, err)
			}
			if _, _, err := in.Skip(ctx, db, r, "", 0, true); !errors.Is(err, ErrNotMissing) {
				t.Errorf("Skip(missingOnly) of r = %v, want ErrNotMissing", err)
			}
			if at, skipped, err := in.Skip(ctx, db, r, "by hand", time.Hour, false); err != nil || at != 1 || skipped == nil || skipped.MessageID != "r#1" {
				t.Errorf("Skip of r = %d, %+v, %v; want r#1 skipped", at, skipped, err)
			}
		})
	}
}

// TestInboxForgetKeepsAKeyWhoseEventArrived: a key found silent is not
// forgotten if an event of it arrived since, committed before the forget
// or still in its transaction while the forget runs.
func TestInboxForgetKeepsAKeyWhoseEventArrived(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db, in := inbox(t, d)
			ctx, table := context.Background(), in.TableName
			const retention = -time.Hour // every key's last change is past it
			stream := func(key string) Stream { return Stream{Source: "src", Topic: "orders", Key: key} }
			// arrive stores event seq of key held in tx, as a delivery does.
			arrive := func(tx bun.Tx, key string, seq int64) {
				t.Helper()
				s := stream(key)
				r := InboxRow{MessageID: fmt.Sprintf("%s#%d", key, seq), Name: "E", Version: 1, Topic: s.Topic, Key: key, Seq: seq, Source: s.Source, Payload: []byte(`{}`)}
				if _, err := in.Advance(ctx, tx, r); err != nil {
					t.Fatal(err)
				}
				if _, err := in.Insert(ctx, tx, r, Outcome{Status: StatusHeld}); err != nil {
					t.Fatal(err)
				}
			}
			begin := func() bun.Tx {
				t.Helper()
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				return tx
			}
			// Three keys at 0 with nothing waiting: silent.
			for _, key := range []string{"committed", "open", "silent"} {
				if _, err := db.ExecContext(ctx, "INSERT INTO "+KeysTable(table)+" (consumer_group, stream, source, topic, msg_key, seq, message_id, updated_at) VALUES ('g', ?, 'src', 'orders', ?, 0, '', 0)",
					stream(key).ID(), key); err != nil {
					t.Fatal(err)
				}
			}
			ids := []string{stream("committed").ID(), stream("open").ID(), stream("silent").ID()}

			tx := begin()
			arrive(tx, "committed", 2)
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			tx = begin()
			arrive(tx, "open", 2)
			type result struct {
				n   int64
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := in.forget(ctx, db, ids, retention)
				done <- result{n, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("forget returned (%d, %v) while a transaction held a key's row", r.n, r.err)
			case <-time.After(200 * time.Millisecond):
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if r := <-done; r.err != nil || r.n != 1 {
				t.Fatalf("forget = %d, %v; want the silent key alone", r.n, r.err)
			}
			var left []string
			if err := db.NewSelect().TableExpr(KeysTable(table)).Column("msg_key").Order("msg_key").Scan(ctx, &left); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(left, []string{"committed", "open"}) {
				t.Errorf("keys left %v, want committed and open", left)
			}
		})
	}
}
