package sqlstore

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
)

// Prepared runs a small, fixed set of statements as prepared statements of
// one database: each is parsed and planned once per connection instead of
// once per call. The statements are written with Bun's ? placeholders.
//
// A statement runs prepared when it is given the database itself or one of
// its transactions (bun.Tx), once it has been prepared. Anything else, such
// as a bun.Conn or a transaction of another *bun.DB, runs through Bun with
// its values inlined, as it would without Prepared. Prepared statements do
// not pass through Bun's query hooks.
type Prepared struct {
	db *bun.DB
	d  Dialect

	mu        sync.RWMutex
	stmts     map[string]*sql.Stmt
	preparing map[string]bool
	// failed holds when a statement last failed to prepare, so that a
	// database that refuses it (say, behind a pooler) is asked again only
	// after preparedRetryAfter.
	failed map[string]time.Time
	// span, if set, traces the statements that run prepared.
	span StatementSpan
	// inFlight counts the statements being prepared in the background.
	inFlight sync.WaitGroup
}

// StatementSpan starts a span for a statement about to run prepared and
// returns the context to run it in and the function that ends the span
// with the statement's error. Prepared statements do not pass through
// Bun's query hooks, so whoever wants them traced says so with TraceWith.
type StatementSpan func(ctx context.Context, query string) (context.Context, func(error))

// TraceWith makes p trace each statement it runs prepared with span. Call it
// before p is used.
func (p *Prepared) TraceWith(span StatementSpan) { p.span = span }

// traced starts the span of query, if p traces.
func (p *Prepared) traced(ctx context.Context, query string) (context.Context, func(error)) {
	if p == nil || p.span == nil {
		return ctx, endNothing
	}
	return p.span(ctx, query)
}

func endNothing(error) {}

// preparedRetryAfter is how long a statement that failed to prepare runs
// through Bun before it is prepared again.
const preparedRetryAfter = time.Minute

// prepareTimeout bounds the wait for a pool connection to prepare on.
const prepareTimeout = time.Minute

// NewPrepared returns a Prepared for db, whose dialect is d.
func NewPrepared(db *bun.DB, d Dialect) *Prepared {
	return &Prepared{
		db:        db,
		d:         d,
		stmts:     make(map[string]*sql.Stmt),
		preparing: make(map[string]bool),
		failed:    make(map[string]time.Time),
	}
}

// ExecContext runs query with args on idb: prepared if idb is p's database
// or one of its transactions and query has been prepared, through Bun
// otherwise.
func (p *Prepared) ExecContext(ctx context.Context, idb bun.IDB, query string, args ...any) (sql.Result, error) {
	return ExecPrepared(ctx, p, idb, query, args...)
}

// prepared returns query's statement for idb, closed by done: the prepared
// statement if idb is p's database or one of its transactions and query has
// been prepared, nil otherwise.
func (p *Prepared) prepared(ctx context.Context, idb bun.IDB, query string) (stmt *sql.Stmt, done func()) {
	if p == nil {
		return nil, nil
	}
	switch db := idb.(type) {
	case bun.Tx:
		if db.Tx == nil || db.NewRaw("").DB() != p.db {
			return nil, nil
		}
		if stmt := p.stmt(query); stmt != nil {
			// The transaction's copy reuses the statement already
			// prepared on its connection, and prepares it there the
			// first time.
			txStmt := db.Tx.StmtContext(ctx, stmt)
			return txStmt, func() { _ = txStmt.Close() }
		}
	case *bun.DB:
		if db == p.db {
			return p.stmt(query), func() {}
		}
	}
	return nil, nil
}

// stmt returns query's prepared statement, or nil if it is not prepared
// yet. The first call starts preparing it in the background, on the first
// pool connection that is free: the caller may hold the pool's last
// connection in its transaction, and must not wait for another.
func (p *Prepared) stmt(query string) *sql.Stmt {
	p.mu.RLock()
	stmt := p.stmts[query]
	p.mu.RUnlock()
	if stmt != nil {
		return stmt
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if stmt := p.stmts[query]; stmt != nil {
		return stmt
	}
	if p.preparing[query] || time.Since(p.failed[query]) < preparedRetryAfter {
		return nil
	}
	p.preparing[query] = true
	p.inFlight.Go(func() { p.prepare(query) })
	return nil
}

// Wait waits, for at most d, for the statements being prepared in the
// background, so that a caller that stops (a Consumer's Run, say) leaves
// nothing working on the database after it returns. A preparation takes
// milliseconds; the bound keeps a database that stopped answering from
// holding up the stop. It is safe on a nil Prepared.
func (p *Prepared) Wait(d time.Duration) {
	if p == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		p.inFlight.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (p *Prepared) prepare(query string) {
	ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
	defer cancel()
	stmt, err := p.db.DB.PrepareContext(ctx, driverPlaceholders(p.d, query))
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.preparing, query)
	if err != nil {
		p.failed[query] = time.Now()
		return
	}
	delete(p.failed, query)
	p.stmts[query] = stmt
}

// driverPlaceholders rewrites Bun's ? placeholders into the driver's: $1,
// $2, ... on PostgreSQL, unchanged elsewhere. The runtime's statements have
// no ? inside string literals, so every ? is a placeholder.
func driverPlaceholders(d Dialect, query string) string {
	if d.Name != "postgres" {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + strings.Count(query, "?")*2)
	n := 0
	for {
		i := strings.IndexByte(query, '?')
		if i < 0 {
			b.WriteString(query)
			return b.String()
		}
		n++
		b.WriteString(query[:i])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
		query = query[i+1:]
	}
}

// StatementConn is a connection that keeps the statements prepared on it.
// The leased tables run their claims and marks on a StatementConn as prepared
// statements; everything else runs through Bun, as on a bun.Conn.
type StatementConn struct {
	bun.Conn
	d     Dialect
	stmts map[string]*sql.Stmt // nil: statements run through Bun
}

// NewStatementConn returns conn, a connection of a database of dialect d,
// as a StatementConn. Unless prepare is set, it runs every statement
// through Bun, as a bun.Conn does.
func NewStatementConn(conn bun.Conn, d Dialect, prepare bool) *StatementConn {
	c := &StatementConn{Conn: conn, d: d}
	if prepare {
		c.stmts = make(map[string]*sql.Stmt)
	}
	return c
}

// Close closes the statements and returns the connection to the pool.
func (c *StatementConn) Close() error {
	for q, stmt := range c.stmts {
		_ = stmt.Close()
		delete(c.stmts, q)
	}
	return c.Conn.Close()
}

// stmt returns query, in Bun's placeholders, prepared on the connection.
// Not safe for concurrent use, like the connection itself.
func (c *StatementConn) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if stmt := c.stmts[query]; stmt != nil {
		return stmt, nil
	}
	stmt, err := c.Conn.Conn.PrepareContext(ctx, driverPlaceholders(c.d, query))
	if err != nil {
		return nil, err
	}
	c.stmts[query] = stmt
	return stmt, nil
}

// QueryPrepared runs query, written with Bun's placeholders, on db as a
// prepared statement where one is kept: on a StatementConn that prepares,
// or through p (which may be nil) on p's database and its transactions.
// Otherwise it runs through Bun, with the values inlined. args must be
// values every driver takes as they are.
//
// A statement that runs prepared is traced as p says (see TraceWith); one
// that runs through Bun passes through Bun's query hooks instead.
func QueryPrepared(ctx context.Context, p *Prepared, db bun.IDB, query string, args ...any) (rows *sql.Rows, err error) {
	if c, ok := db.(*StatementConn); ok && c.stmts != nil {
		stmt, err := c.stmt(ctx, query)
		if err != nil {
			return nil, err
		}
		ctx, end := p.traced(ctx, query)
		defer func() { end(err) }()
		return stmt.QueryContext(ctx, args...)
	}
	if stmt, done := p.prepared(ctx, db, query); stmt != nil {
		ctx, end := p.traced(ctx, query)
		defer func() { end(err) }()
		rows, err := stmt.QueryContext(ctx, args...)
		if err != nil {
			done()
			return nil, err
		}
		// A statement of a transaction stays usable until the
		// transaction ends; its rows are read before that.
		return rows, nil
	}
	return db.QueryContext(ctx, query, args...)
}

// ExecPrepared is QueryPrepared for statements that return no rows.
func ExecPrepared(ctx context.Context, p *Prepared, db bun.IDB, query string, args ...any) (res sql.Result, err error) {
	if c, ok := db.(*StatementConn); ok && c.stmts != nil {
		stmt, err := c.stmt(ctx, query)
		if err != nil {
			return nil, err
		}
		ctx, end := p.traced(ctx, query)
		defer func() { end(err) }()
		return stmt.ExecContext(ctx, args...)
	}
	if stmt, done := p.prepared(ctx, db, query); stmt != nil {
		defer done()
		ctx, end := p.traced(ctx, query)
		defer func() { end(err) }()
		return stmt.ExecContext(ctx, args...)
	}
	return db.ExecContext(ctx, query, args...)
}
