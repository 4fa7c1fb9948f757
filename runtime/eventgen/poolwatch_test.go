package eventgen

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// churn makes db's pool close at least n idle connections: eight
// connections are held at once, then returned to a pool that keeps one.
func churn(t *testing.T, db *bun.DB, n int64) {
	t.Helper()
	ctx := context.Background()
	start := db.DB.Stats().MaxIdleClosed
	// A guard against a hang, not a measure: the watch runs on the
	// test's clock, and a loaded database opens connections slowly.
	deadline := time.Now().Add(3 * time.Minute)
	for db.DB.Stats().MaxIdleClosed-start < n {
		if time.Now().After(deadline) {
			t.Fatalf("the pool closed %d idle connections in 3 minutes, want %d", db.DB.Stats().MaxIdleClosed-start, n)
		}
		conns := make([]*bun.Conn, 8)
		for i := range conns {
			c, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = &c
		}
		for _, c := range conns {
			c.Close()
		}
	}
}

func TestPoolWatchWarnsWhenThePoolReconnects(t *testing.T) {
	for _, d := range testenv.Databases(t) {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t)
			db.DB.SetMaxOpenConns(16)
			db.DB.SetMaxIdleConns(1)
			var logs syncBuffer
			start := time.Now()
			w := newPoolWatch(db.DB, slog.New(slog.NewTextHandler(&logs, nil)), start)
			at := func(windows int) time.Time { return start.Add(time.Duration(windows) * poolWatchWindow) }

			if w.check(at(1)) {
				t.Errorf("warned with no connection closed: %s", logs.String())
			}
			churn(t, db, poolChurnPerWindow/2)
			if w.check(at(2)) {
				t.Errorf("warned at %d closed connections, under the threshold of %d", poolChurnPerWindow/2, poolChurnPerWindow)
			}
			churn(t, db, poolChurnPerWindow)
			if w.check(at(2).Add(poolWatchWindow / 2)) {
				t.Error("warned before the window ended")
			}
			if !w.check(at(3)) {
				t.Fatal("no warning after the pool closed enough connections in a window")
			}
			if got := logs.String(); !strings.Contains(got, "SetMaxIdleConns") || !strings.Contains(got, "idle_connections_closed=") {
				t.Errorf("warning does not say what to do: %s", got)
			}
			churn(t, db, poolChurnPerWindow)
			if w.check(at(4)) {
				t.Error("warned again within the hour")
			}
			churn(t, db, poolChurnPerWindow)
			if !w.check(at(4).Add(poolWarnEvery)) {
				t.Error("no warning an hour after the first")
			}
		})
	}
}
