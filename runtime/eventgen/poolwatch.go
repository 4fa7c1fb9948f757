package eventgen

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"
)

// poolWatch notices a database/sql pool that closes idle connections about
// as fast as it opens them. database/sql keeps two idle connections by
// default, so a process that runs more transactions at once than that (a
// Consumer with Concurrency 8, producers beside a relay) connects to the
// database again and again; on PostgreSQL that costs milliseconds, and
// measured up to hundreds, per transaction. The fix is one line in the
// application, so Run says so in its log.
type poolWatch struct {
	db  *sql.DB
	log *slog.Logger

	since    time.Time // start of the current window
	closed   int64     // MaxIdleClosed at since
	warnedAt time.Time
}

const (
	poolWatchWindow    = time.Minute
	poolChurnPerWindow = 600 // ten closed connections a second
	poolWarnEvery      = time.Hour
)

func newPoolWatch(db *sql.DB, log *slog.Logger, now time.Time) *poolWatch {
	return &poolWatch{db: db, log: log, since: now, closed: db.Stats().MaxIdleClosed}
}

// check ends the current window if it is over, and warns (at most once per
// poolWarnEvery) if the pool closed poolChurnPerWindow idle connections in
// it. It reports whether it warned.
func (w *poolWatch) check(now time.Time) bool {
	if now.Sub(w.since) < poolWatchWindow {
		return false
	}
	st := w.db.Stats()
	n := st.MaxIdleClosed - w.closed
	w.since, w.closed = now, st.MaxIdleClosed
	if n < poolChurnPerWindow || (!w.warnedAt.IsZero() && now.Sub(w.warnedAt) < poolWarnEvery) {
		return false
	}
	w.warnedAt = now
	w.log.Warn("database pool is reconnecting constantly: raise db.SetMaxIdleConns to at least the number of transactions run at once",
		"idle_connections_closed", n, "window", poolWatchWindow, "open", st.OpenConnections, "max_open", st.MaxOpenConnections)
	return true
}

// watchPool runs w.check every window until ctx is done.
func watchPool(ctx context.Context, wg *sync.WaitGroup, w *poolWatch) {
	defer wg.Done()
	t := time.NewTicker(poolWatchWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.check(now)
		}
	}
}
