// Package chaos is a fault-injection harness for eventgen's runtime: it
// runs producers, outbox relays and consumers (in this process or as
// chaosnode child processes that tests kill with SIGKILL), and checks what
// was committed against what was delivered and applied.
//
// Ground truth lives in the database. A producer records every event id in
// a business table (the committed table) in the same transaction as its
// PublishOrderPlaced, so a rolled-back transaction records nothing. A
// consumer's handler writes an effect row (group, event id) through the
// inbox transaction into a table without a unique constraint, so an effect
// applied twice shows as two rows. Every raw delivery is appended to a log
// file, outside any transaction, so redeliveries absorbed by the inbox are
// counted too. [Check] compares the three.
//
// Failpoints are harness hooks around the Watermill publisher, the
// subscriber and the handler; the runtime carries no test state.
package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/dbopen"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// Tables names the tables of one scenario. Every name is unique to the
// scenario, so scenarios sharing a database never see each other's rows.
type Tables struct {
	Outbox    string // the outbox
	Inbox     string // the inbox of every group
	Committed string // event ids committed by producers (ground truth)
	Effects   string // effect rows applied by handlers, no unique constraint
	Cured     string // poison event ids that handlers accept from now on
}

// NewTables returns the tables of a scenario, suffixed with suffix.
func NewTables(suffix string) Tables {
	return Tables{
		Outbox:    "chaos_outbox_" + suffix,
		Inbox:     "chaos_inbox_" + suffix,
		Committed: "chaos_committed_" + suffix,
		Effects:   "chaos_effects_" + suffix,
		Cured:     "chaos_cured_" + suffix,
	}
}

// All returns every table name, for cleanup.
func (t Tables) All() []string {
	return []string{t.Outbox, t.Inbox, t.Committed, t.Effects, t.Cured}
}

// OpenDB opens kind (sqlite, postgres or mysql) at dsn, with
// internal/dbopen, without checking that it answers: a file path for
// SQLite, a DSN otherwise. SQLite gets WAL, immediate transactions and a
// busy timeout of 20 s rather than 10 s, since several processes share the
// file and some are killed holding it.
func OpenDB(kind, dsn string) (*bun.DB, error) {
	if kind == "sqlite" {
		dsn = "sqlite:" + dsn
	}
	if d, err := dbopen.Dialect(dsn); err != nil {
		return nil, fmt.Errorf("chaos: open %s: %w", kind, err)
	} else if d != kind {
		return nil, fmt.Errorf("chaos: open %s: a DSN of %s", kind, d)
	}
	db, err := dbopen.OpenWith(context.Background(), dsn, dbopen.Options{SQLiteBusyTimeout: 20 * time.Second, NoPing: true})
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	return db, nil
}

// CreateTables creates the scenario's business, effect and cure tables and
// migrates its outbox and inbox.
func CreateTables(ctx context.Context, db *bun.DB, t Tables) error {
	stmts := []string{
		"CREATE TABLE IF NOT EXISTS " + t.Committed + " (event_id VARCHAR(64) NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL, written_us BIGINT NOT NULL)",
		// No unique constraint: an effect applied twice must be visible.
		"CREATE TABLE IF NOT EXISTS " + t.Effects + " (grp VARCHAR(64) NOT NULL, event_id VARCHAR(64) NOT NULL, message_id VARCHAR(64) NOT NULL, applied_us BIGINT NOT NULL)",
		"CREATE TABLE IF NOT EXISTS " + t.Cured + " (event_id VARCHAR(64) NOT NULL PRIMARY KEY)",
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("chaos: create tables: %w", err)
		}
	}
	ob, err := eventgen.NewOutbox(db, discard{}, eventgen.OutboxOptions{Table: t.Outbox})
	if err != nil {
		return err
	}
	if err := ob.Migrate(ctx); err != nil {
		return err
	}
	c, err := eventgen.NewConsumer(db, discard{}, eventgen.ConsumerOptions{Group: "migrate", Table: t.Inbox})
	if err != nil {
		return err
	}
	return c.Migrate(ctx)
}

// Event kinds in the committed table.
const (
	KindGood        = "good"        // handled at once
	KindPoison      = "poison"      // its handler fails until the id is cured
	KindUndecodable = "undecodable" // its payload does not decode
	KindRejected    = "rejected"    // published with HeaderReject
	KindFlaky       = "flaky"       // its handler fails on the first attempt, so it is run by the retrier
	KindHostile     = "hostile"     // its key and a header hold what brokers mangle unless encoded; see HostileValue
)

// HostileHeader is the header that a hostile order carries HostileValue in.
const HostileHeader = "x-chaos"

// HostileValue is the key and the HostileHeader of the hostile order id:
// spaces at both ends, a double quote, percent signs (one before hex digits)
// and text outside ASCII, which every broker must deliver unchanged. Its
// handler fails, so that the order is counted lost, unless they arrive so.
func HostileValue(id string) string { return " " + id + ` "50%" %41 Grüße 東京 🚀 ` }

// hostileOrder is an OrderPlaced keyed by HostileValue.
type hostileOrder struct{ shopevents.OrderPlaced }

// Key implements eventgen.Event.
func (h hostileOrder) Key() string { return HostileValue(h.OrderID.String()) }

// Order returns a valid OrderPlaced with a new id; a poison order carries
// the note "poison".
func Order(kind string) shopevents.OrderPlaced {
	e := shopevents.OrderPlaced{
		OrderID:    uuid.New(),
		CustomerID: uuid.New(),
		Status:     shopevents.OrderStatusPending,
		Lines: []shopevents.LineItem{{Sku: "SKU-1", Quantity: 2,
			UnitPrice: shopevents.Money{Amount: 1050, Currency: "EUR"}}},
		Total: shopevents.Money{Amount: 2100, Currency: "EUR"},
		ShippingAddress: shopevents.Address{Name: "Ada", Street: "1 Main St", City: "Paris",
			PostalCode: "75001", CountryCode: "FR"},
		Labels:   map[string]string{"chaos": "1"},
		PlacedAt: time.Now().UTC(),
	}
	switch kind {
	case KindPoison:
		note := KindPoison
		e.Note = &note
	case KindFlaky, KindHostile:
		e.Labels[kind] = "1"
	}
	return e
}

// Undecodable is published as an OrderPlaced whose payload has a number
// where the order id belongs, so every consumer fails to decode it.
type Undecodable struct{ ID uuid.UUID }

// EventName implements eventgen.Event.
func (Undecodable) EventName() string { return shopevents.OrderPlaced{}.EventName() }

// EventVersion implements eventgen.Event.
func (Undecodable) EventVersion() int { return 1 }

// Topic implements eventgen.Event.
func (Undecodable) Topic() string { return shopevents.TopicOrders }

// Validate implements eventgen.Event.
func (Undecodable) Validate() error { return nil }

// MarshalJSON writes a payload that OrderPlaced cannot decode.
func (u Undecodable) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"order_id": 42, "chaos_id": u.ID.String()})
}

// PublishOne writes one event of kind in a business transaction, with its
// id in the committed table; with rollback the transaction is rolled back
// after the publish. It returns the event id.
func PublishOne(ctx context.Context, db *bun.DB, ob *eventgen.Outbox, t Tables, kind string, rollback bool, opts ...eventgen.PublishOption) (string, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("begin: %w", err)
	}
	id, err := WriteEvent(ctx, tx, ob, t, kind, opts...)
	if err != nil || rollback {
		_ = tx.Rollback()
		return id, err
	}
	if err := tx.Commit(); err != nil {
		return id, fmt.Errorf("commit: %w", err)
	}
	return id, nil
}

// WriteEvent records an event of kind in tx: its id in the committed table,
// then the event through the outbox (the generated publisher for good and
// poison events).
func WriteEvent(ctx context.Context, tx bun.Tx, ob *eventgen.Outbox, t Tables, kind string, opts ...eventgen.PublishOption) (string, error) {
	var (
		id  string
		pub func() error
	)
	switch kind {
	case KindUndecodable:
		u := Undecodable{ID: uuid.New()}
		id = u.ID.String()
		pub = func() error { return ob.Publish(ctx, tx, shopevents.Source, []eventgen.Event{u}, opts...) }
	case KindHostile:
		e := hostileOrder{Order(kind)}
		id = e.OrderID.String()
		opts = append(opts, eventgen.WithHeader(HostileHeader, HostileValue(id)))
		pub = func() error { return ob.Publish(ctx, tx, shopevents.Source, []eventgen.Event{e}, opts...) }
	default:
		e := Order(kind)
		id = e.OrderID.String()
		pub = func() error { return shopevents.NewPublisher(ob).PublishOrderPlaced(ctx, tx, e, opts...) }
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+t.Committed+" (event_id, kind, written_us) VALUES (?, ?, ?)", id, kind, time.Now().UnixMicro()); err != nil {
		return id, fmt.Errorf("insert business row: %w", err)
	}
	if err := pub(); err != nil {
		return id, err
	}
	return id, nil
}

// ProducerOptions configures RunProducer.
type ProducerOptions struct {
	Events        int     // transactions to commit in all (rolled-back ones not counted); 0: until ctx is done
	Workers       int     // goroutines
	RollbackEvery int     // every n-th transaction rolls back after the publish; 0 never
	Rate          float64 // transactions per second in all; 0 unlimited
	FlakyEvery    int     // every n-th transaction writes a flaky event; 0 never
	HostileEvery  int     // every n-th transaction (of those not flaky) writes a hostile event; 0 never
}

// ProducerStats counts what a producer did.
type ProducerStats struct {
	Committed  int `json:"committed"`
	RolledBack int `json:"rolled_back"`
	Errors     int `json:"errors"`
	// Failures are the errors counted in Errors, and Latencies the
	// durations of the committed transactions.
	Failures  []error         `json:"-"`
	Latencies []time.Duration `json:"-"`
}

func (s *ProducerStats) add(o ProducerStats) {
	s.Committed += o.Committed
	s.RolledBack += o.RolledBack
	s.Errors += o.Errors
	s.Failures = append(s.Failures, o.Failures...)
	s.Latencies = append(s.Latencies, o.Latencies...)
}

// RunProducer commits opts.Events good events (or commits until ctx is
// done, if Events is 0) from opts.Workers goroutines, rolling back every
// RollbackEvery-th transaction after its publish. Transactions that fail (a
// busy database) are counted and not retried: the committed table says what
// happened. A transaction cut short because ctx is done is not a failure.
// With Events set, RunProducer returns ctx's error if ctx ends first.
func RunProducer(ctx context.Context, db *bun.DB, ob *eventgen.Outbox, t Tables, opts ProducerOptions) (ProducerStats, error) {
	workers := max(opts.Workers, 1)
	out := make(chan ProducerStats, workers)
	jobs := make(chan int)
	for range workers {
		go func() {
			var st ProducerStats
			for n := range jobs {
				rollback := opts.RollbackEvery > 0 && n%opts.RollbackEvery == opts.RollbackEvery-1
				kind := KindGood
				switch {
				case opts.FlakyEvery > 0 && n%opts.FlakyEvery == 0:
					kind = KindFlaky
				case opts.HostileEvery > 0 && n%opts.HostileEvery == 1%opts.HostileEvery:
					kind = KindHostile
				}
				start := time.Now()
				_, err := PublishOne(ctx, db, ob, t, kind, rollback)
				switch {
				case err != nil && ctx.Err() != nil:
					// cut short by the end of the run
				case err != nil:
					st.Errors++
					st.Failures = append(st.Failures, err)
				case rollback:
					st.RolledBack++
				default:
					st.Committed++
					st.Latencies = append(st.Latencies, time.Since(start))
				}
			}
			out <- st
		}()
	}
	var tick <-chan time.Time
	if opts.Rate > 0 {
		tk := time.NewTicker(time.Duration(float64(time.Second) / opts.Rate))
		defer tk.Stop()
		tick = tk.C
	}
	// Enough transactions that, after rollbacks, Events commit.
	total := opts.Events
	if opts.RollbackEvery > 1 {
		total = opts.Events * opts.RollbackEvery / (opts.RollbackEvery - 1)
	}
	var err error
feed:
	for n := 0; opts.Events == 0 || n < total; n++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
			}
		}
		select {
		case jobs <- n:
		case <-ctx.Done():
			if opts.Events > 0 {
				err = ctx.Err()
			}
			break feed
		}
	}
	close(jobs)
	var sum ProducerStats
	for range workers {
		sum.add(<-out)
	}
	return sum, err
}

// RelayOptions are the outbox options of every relay in the harness: short
// leases and intervals so that a killed relay's rows come back in seconds.
func RelayOptions(t Tables, log *slog.Logger) eventgen.OutboxOptions {
	return eventgen.OutboxOptions{
		Table:              t.Outbox,
		PollInterval:       100 * time.Millisecond,
		LeaseDuration:      3 * time.Second,
		LocalRetryInterval: 50 * time.Millisecond,
		RetryInterval:      200 * time.Millisecond,
		RetryMinAge:        200 * time.Millisecond,
		Logger:             log,
	}
}

// ConsumerOptions are the consumer options of the harness, with
// maxRetries attempts (0 for the default).
func ConsumerOptions(t Tables, group string, maxRetries int, log *slog.Logger) eventgen.ConsumerOptions {
	return eventgen.ConsumerOptions{
		Group:              group,
		Table:              t.Inbox,
		PollInterval:       100 * time.Millisecond,
		LeaseDuration:      3 * time.Second,
		LocalRetryInterval: 20 * time.Millisecond,
		RetryInterval:      50 * time.Millisecond,
		RetryMinAge:        50 * time.Millisecond,
		MaxRetries:         maxRetries,
		Logger:             log,
	}
}

// ErrPoison is what a poison order's handler returns until it is cured.
var ErrPoison = errors.New("chaos: poison order rejected by its handler")

// ErrFlaky is what a flaky order's handler returns on its first attempt.
var ErrFlaky = errors.New("chaos: flaky order fails its first attempt")

// NewConsumer returns a consumer of group whose OrderPlaced handler writes
// an effect row in the inbox transaction. midHandler, if not nil, runs
// after that write, before the handler returns.
func NewConsumer(db *bun.DB, sub *Subscriber, t Tables, opts eventgen.ConsumerOptions, midHandler func(id string)) (*eventgen.Consumer, error) {
	c, err := eventgen.NewConsumer(db, sub, opts)
	if err != nil {
		return nil, err
	}
	group := opts.Group
	err = shopevents.RegisterOrderPlacedHandler(c, handlerFunc(func(ctx context.Context, e shopevents.OrderPlaced, m eventgen.Metadata) error {
		tx := eventgen.Tx(ctx)
		id := e.OrderID.String()
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+t.Effects+" (grp, event_id, message_id, applied_us) VALUES (?, ?, ?, ?)",
			group, id, m.ID, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("apply effect: %w", err)
		}
		if midHandler != nil {
			midHandler(m.ID)
		}
		if want := HostileValue(id); e.Labels[KindHostile] != "" && (m.Key != want || m.Headers[HostileHeader] != want) {
			return fmt.Errorf("chaos: hostile order %s arrived with key %q and header %q", id, m.Key, m.Headers[HostileHeader])
		}
		if e.Labels[KindFlaky] != "" && m.Attempt == 1 {
			return ErrFlaky
		}
		if e.Note != nil && *e.Note == KindPoison {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t.Cured+" WHERE event_id = ?", id).Scan(&n); err != nil {
				return fmt.Errorf("check cure: %w", err)
			}
			if n == 0 {
				return ErrPoison
			}
		}
		return nil
	}))
	if err != nil {
		return nil, err
	}
	return c, nil
}

type handlerFunc func(ctx context.Context, e shopevents.OrderPlaced, m eventgen.Metadata) error

func (f handlerFunc) HandleOrderPlaced(ctx context.Context, e shopevents.OrderPlaced, m eventgen.Metadata) error {
	return f(ctx, e, m)
}
