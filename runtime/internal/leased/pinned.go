package leased

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// Pinned keeps one connection of a pool for a loop that runs one
// statement at a time, such as the relay's claims or its marks.
//
// database/sql keeps only two idle connections unless told otherwise, so a
// busy process closes and reopens connections all the time, and a new
// PostgreSQL connection costs milliseconds to hundreds of milliseconds on a
// loaded server. Measured with the default pool, a relay that took a pooled
// connection per claim added a p50 of 430 ms to every event at 40 events/s;
// with its connections pinned, 5 ms.
//
// A pool bounded to fewer than minPinnedPool connections is used as it is:
// pinning would starve the application.
//
// The connection keeps the statements prepared on it, so that the table.s
// claims and marks are parsed and planned once (see sqlstore.StatementConn).
type Pinned struct {
	db      *bun.DB
	d       sqlstore.Dialect
	prepare bool                    // keep statements prepared
	conn    *sqlstore.StatementConn // nil until first use and after an error
	off     bool                    // the pool is too small to pin
}

// minPinnedPool is the smallest bounded pool the runtime pins connections in.
const minPinnedPool = 8

// NewPinned returns a Pinned for db, of dialect d, that keeps the statements
// run through the leased tables prepared on its connection if prepare is set.
func NewPinned(db *bun.DB, d sqlstore.Dialect, prepare bool) *Pinned {
	limit := db.Stats().MaxOpenConnections
	return &Pinned{db: db, d: d, prepare: prepare, off: limit > 0 && limit < minPinnedPool}
}

// Do runs f on the pinned connection. After an error the connection goes
// back to the pool (which discards it if it is broken) and the next call
// takes another; an error from a connection the server already closed
// (say, after an idle timeout) is retried once on a fresh one.
func (p *Pinned) Do(ctx context.Context, f func(bun.IDB) error) error {
	if p.off {
		return f(p.db)
	}
	for attempt := 0; ; attempt++ {
		if p.conn == nil {
			c, err := p.db.Conn(ctx)
			if err != nil {
				return err
			}
			p.conn = sqlstore.NewStatementConn(c, p.d, p.prepare)
		}
		err := f(p.conn)
		if err == nil {
			return nil
		}
		p.Close()
		if attempt > 0 || ctx.Err() != nil || !(errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)) {
			return err
		}
	}
}

// Close returns the connection to the pool.
func (p *Pinned) Close() {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}
