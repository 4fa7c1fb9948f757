package eventgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
	"github.com/eventgen/eventgen/runtime/internal/tables"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// maxColumn bounds the name, topic, key and source of an event: they are
// stored in VARCHAR(255) columns.
const maxColumn = 255

// Outbox stores events in the caller's database transaction ([Outbox.Publish])
// and relays them to a Watermill publisher after commit ([Outbox.Run]).
//
// Several processes may share one outbox table: each row is claimed with a
// lease, so it is normally published by one relay, and a crashed relay's rows
// are taken over when its lease expires. Delivery is at least once; the
// message id is the same on every attempt so consumers can de-duplicate.
//
// An Outbox is safe for concurrent use. Run may be called once at a time.
type Outbox struct {
	db      *bun.DB
	pub     message.Publisher
	opts    OutboxOptions
	dialect sqlstore.Dialect
	store   *tables.Outbox
	// owner identifies this Outbox's relay in lock_owner.
	owner string

	// wake carries Publish's hint that rows were written; see Run.
	wake    chan struct{}
	running atomic.Bool

	// prepared runs Publish's INSERT; nil with NoPreparedStatements.
	prepared *sqlstore.Prepared
	// keys numbers the events of each key; see Publish.
	keys *tables.OutboxKeys

	// tracing is nil when tracing is off; see newTracing.
	tracing *tracing
	// metrics is nil when metrics are off; see meterOf.
	metrics *outboxMetrics

	// hooks is nil outside tests.
	hooks *outboxHooks
}

// NewOutbox returns an Outbox that stores events in db and relays them to
// pub. Invalid options are reported here, all at once.
//
// pub may be nil for a publish-only Outbox: a service that writes events but
// leaves relaying them to another process, or a tool that lists and requeues
// failed rows. Everything but [Outbox.Run] then works; Run returns an error
// at once.
func NewOutbox(db *bun.DB, pub message.Publisher, opts OutboxOptions) (*Outbox, error) {
	if db == nil {
		return nil, errors.New("eventgen: NewOutbox: db is nil")
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	d, err := sqlstore.DialectOf(db)
	if err != nil {
		return nil, fmt.Errorf("eventgen: NewOutbox: %w", err)
	}
	o := &Outbox{
		db:      db,
		pub:     pub,
		opts:    opts,
		dialect: d,
		owner:   newOwnerID(),
		wake:    make(chan struct{}, 1),
		tracing: newTracing(opts.TracerProvider, opts.Propagator, pub, trace.SpanKindProducer),
	}
	if !opts.NoPreparedStatements {
		o.prepared = sqlstore.NewPrepared(db, d)
		o.prepared.TraceWith(o.tracing.statementSpan(d))
	}
	o.store = tables.NewOutbox(d, opts.Table, o.prepared)
	o.keys = tables.NewOutboxKeys(d, opts.Table, o.prepared)
	o.metrics = newOutboxMetrics(o, opts.MeterProvider)
	return o, nil
}

// Close stops reporting the outbox's gauges (see
// OutboxOptions.MeterProvider) to the MeterProvider. Call it when done
// with an Outbox before the process ends, after Run has returned; an
// Outbox that is garbage collected stops them too. Close does not close
// the database or the publisher, and everything but the gauges keeps
// working after it.
func (o *Outbox) Close() error {
	if err := o.metrics.close(); err != nil {
		return fmt.Errorf("outbox: close: unregister metrics: %w", err)
	}
	return nil
}

// maxPreparedBatch is the most events a Publish call writes with a prepared
// statement; larger calls are sent through Bun, with their values inlined.
// Each batch size up to it is a statement of its own on every connection.
const maxPreparedBatch = 16

// newOwnerID returns an id for lock_owner that tells operators which process
// holds a lease: the host name, the process id and a random suffix that
// tells apart two Outboxes in one process.
func newOwnerID() string {
	host, _ := os.Hostname()
	if len(host) > 64 {
		host = host[:64]
	}
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Migrate creates the outbox table and its indexes, or upgrades them. It is
// idempotent and safe to call from several replicas at once. A table that
// was dropped while its versions stayed recorded in eventgen_migrations is
// created again.
func (o *Outbox) Migrate(ctx context.Context) error {
	if err := sqlstore.Migrate(ctx, o.db, o.opts.Table, tables.OutboxMigrations); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// OutboxSchema returns the statements that create an outbox table named
// table on dialect (postgres, mysql or sqlite), for teams that apply schema
// changes with their own migration tool. The last statements record the
// applied version, so that [Outbox.Migrate] later finds nothing to do.
func OutboxSchema(dialect, table string) ([]string, error) {
	if table == "" {
		table = DefaultOutboxTable
	}
	if err := sqlstore.ValidateTableName(table); err != nil {
		return nil, fmt.Errorf("outbox schema: %w", err)
	}
	d, err := sqlstore.DialectByName(dialect)
	if err != nil {
		return nil, fmt.Errorf("outbox schema: %w", err)
	}
	return sqlstore.SchemaSQL(d, table, tables.OutboxMigrations), nil
}

// Publish writes events to the outbox in db, in one multi-row INSERT. Pass the
// business transaction as db: the events are then published if and only if
// it commits. With a *bun.DB they are written at once, outside any
// transaction.
//
// Each event is validated and encoded as JSON first; an invalid event fails
// the whole call and nothing is written. Every event gets a new message id
// (a UUIDv7), which stays the same on every delivery attempt.
//
// Each event with a key gets the next number of its stream (its source,
// topic and key) in db: that is how consumers apply the events of one key
// in commit order. Transactions that publish on the same stream take turns
// at this point until they end, as they would for any row they both update.
//
// Publish wakes this Outbox's relay, so a commit reaches the broker without
// waiting for the poll interval.
//
// When ctx carries a valid span context or baggage, Publish stores it with
// each row, as OutboxOptions.Propagator writes it: the W3C traceparent and
// tracestate under the CloudEvents distributed-tracing extension's names
// (ce_traceparent, ce_tracestate), baggage under its own name. The relay's
// span continues that trace. A header of the same name set with WithHeader
// is kept instead.
func (o *Outbox) Publish(ctx context.Context, db bun.IDB, source string, events []Event, opts ...PublishOption) error {
	if len(events) == 0 {
		return nil
	}
	if db == nil {
		return errors.New("outbox: publish: db is nil")
	}
	if err := checkColumn("source", source); err != nil {
		return fmt.Errorf("outbox: publish: %w", err)
	}
	if err := wire.CheckValue(source); err != nil {
		return fmt.Errorf("outbox: publish: source %q %w", source, err)
	}
	cfg := newPublishConfig(opts)
	headers, err := encodeHeaders(cfg.headers, o.tracing.headers(ctx))
	if err != nil {
		return fmt.Errorf("outbox: publish: %w", err)
	}
	status := tables.StatusPending
	delay := cfg.delay.Microseconds()
	if delay > 0 {
		status = tables.StatusScheduled
	}
	rows := make([]encodedEvent, len(events))
	for i, e := range events {
		row, err := encodeEvent(e)
		if err != nil {
			return fmt.Errorf("outbox: publish: event %d: %w", i, err)
		}
		rows[i] = row
	}
	if err := o.number(ctx, db, source, rows); err != nil {
		return fmt.Errorf("outbox: publish: number the events of their keys: %w", err)
	}
	args := make([]any, 0, len(events)*11)
	for _, row := range rows {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("outbox: publish: message id: %w", err)
		}
		args = append(args, id.String(), row.name, row.version, row.topic, row.key, row.seq, source, row.payload, headers, status, delay)
	}
	q := tables.OutboxInsertSQL(o.dialect, o.opts.Table, len(events))
	if o.prepared != nil && len(events) <= maxPreparedBatch {
		_, err = o.prepared.ExecContext(ctx, db, q, args...)
	} else {
		_, err = db.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return fmt.Errorf("outbox: publish %d events: %w", len(events), err)
	}
	o.notify()
	return nil
}

// notify wakes the relay without blocking: one pending wake-up is enough.
func (o *Outbox) notify() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

type encodedEvent struct {
	name, topic, key string
	version          int
	seq              int64
	payload          []byte
}

// number gives each event with a key its sequence in its stream (source,
// topic, key): the next numbers of the stream's counter, taken in db, in
// the order of the call. The counter's row stays locked until db commits,
// so transactions that publish on one stream take turns and the numbers
// follow their commit order.
func (o *Outbox) number(ctx context.Context, db bun.IDB, source string, rows []encodedEvent) error {
	var streams []tables.StreamCount
	index := make(map[string]int) // stream id -> index in streams
	ids := make([]string, len(rows))
	for i, r := range rows {
		if r.key == "" {
			continue
		}
		id := tables.StreamID(source, r.topic, r.key)
		ids[i] = id
		if j, ok := index[id]; ok {
			streams[j].Count++
			continue
		}
		index[id] = len(streams)
		streams = append(streams, tables.StreamCount{ID: id, Source: source, Topic: r.topic, Key: r.key, Count: 1})
	}
	if len(streams) == 0 {
		return nil
	}
	next := make(map[string]int64, len(streams))
	for _, s := range streams {
		next[s.ID] = -int64(s.Count) // made first numbers below
	}
	last, err := o.keys.Take(ctx, db, streams)
	if err != nil {
		return err
	}
	for id := range next {
		next[id] += last[id] + 1
	}
	for i := range rows {
		if id := ids[i]; id != "" {
			rows[i].seq = next[id]
			next[id]++
		}
	}
	return nil
}

func encodeEvent(e Event) (encodedEvent, error) {
	if e == nil {
		return encodedEvent{}, errors.New("event is nil")
	}
	r := encodedEvent{name: e.EventName(), topic: e.Topic(), version: e.EventVersion()}
	if err := checkColumn("event name", r.name); err != nil {
		return r, err
	}
	if err := wire.CheckValue(r.name); err != nil {
		return r, fmt.Errorf("event name %q %w", r.name, err)
	}
	if err := checkColumn("topic", r.topic); err != nil {
		return r, fmt.Errorf("%s: %w", r.name, err)
	}
	if r.version < 1 {
		return r, fmt.Errorf("%s: version %d is not positive", r.name, r.version)
	}
	if k, ok := e.(Keyed); ok {
		r.key = k.Key()
		if len(r.key) > maxColumn {
			return r, fmt.Errorf("%s: key is %d bytes, over the limit of %d", r.name, len(r.key), maxColumn)
		}
		if err := wire.CheckValue(r.key); err != nil {
			return r, fmt.Errorf("%s: key %q %w", r.name, r.key, err)
		}
	}
	if err := e.Validate(); err != nil {
		return r, fmt.Errorf("%s: invalid: %w", r.name, err)
	}
	p, err := json.Marshal(e)
	if err != nil {
		return r, fmt.Errorf("%s: encode JSON: %w", r.name, err)
	}
	r.payload = p
	return r, nil
}

func checkColumn(what, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%s is empty", what)
	case len(v) > maxColumn:
		return fmt.Errorf("%s is %d bytes, over the limit of %d", what, len(v), maxColumn)
	}
	return nil
}

// encodeHeaders checks headers h from WithHeader, adds the trace context
// (checked by headerCarrier) where h has no header of the same name, and
// returns them as JSON text, or nil (SQL NULL) when there are none.
func encodeHeaders(h, traceContext map[string]string) (any, error) {
	if len(h) == 0 && len(traceContext) == 0 {
		return nil, nil
	}
	var errs []error
	for k, v := range h {
		if err := wire.CheckName(k); err != nil {
			errs = append(errs, fmt.Errorf("header name %q %w", k, err))
			continue
		}
		switch {
		case wire.IsAttributeName(k):
			errs = append(errs, fmt.Errorf("header %q is reserved for the CloudEvents attributes", k))
		case strings.HasPrefix(k, "_"):
			errs = append(errs, fmt.Errorf("header %q: keys starting with _ are reserved for brokers", k))
		}
		if err := wire.CheckValue(v); err != nil {
			errs = append(errs, fmt.Errorf("header %q: value %w", k, err))
		}
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return nil, errors.Join(errs...)
	}
	if len(h) == 0 {
		h = traceContext
	}
	for k, v := range traceContext {
		if _, set := h[k]; !set {
			h[k] = v
		}
	}
	b, err := json.Marshal(h) // sorted keys
	if err != nil {
		return nil, fmt.Errorf("encode headers: %w", err)
	}
	return string(b), nil
}

// decodeHeaders decodes headers stored by encodeHeaders (or by the
// consumer, in the same form). The relay decodes the headers of every row
// that has some, so the common form, {"name":"value",...} with nothing to
// unescape, is read directly; anything else goes to encoding/json, whose
// result is the same.
func decodeHeaders(s string) (map[string]string, error) {
	if h, ok := decodePlainHeaders(s); ok {
		return h, nil
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return nil, err
	}
	return h, nil
}

// decodePlainHeaders decodes a JSON object of strings written without
// spaces whose strings need no unescaping and are valid UTF-8. It reports
// false for any other text, which it leaves to encoding/json.
func decodePlainHeaders(s string) (map[string]string, bool) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	h := make(map[string]string, strings.Count(body, `":"`))
	for body != "" {
		k, rest, ok := plainString(body)
		if !ok || rest == "" || rest[0] != ':' {
			return nil, false
		}
		v, rest, ok := plainString(rest[1:])
		if !ok {
			return nil, false
		}
		h[k] = v
		switch {
		case rest == "":
		case rest[0] == ',' && len(rest) > 1:
			rest = rest[1:]
		default:
			return nil, false
		}
		body = rest
	}
	return h, true
}

// plainString reads a JSON string at the start of s that has no escapes
// and no control characters and is valid UTF-8, and returns its value and
// what follows it.
func plainString(s string) (string, string, bool) {
	if s == "" || s[0] != '"' {
		return "", "", false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", "", false
	}
	v := s[1 : 1+end]
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == '\\' {
			return "", "", false
		}
	}
	if !utf8.ValidString(v) {
		return "", "", false
	}
	return v, s[2+end:], true
}

// FailedEvent is an outbox row that used up its retries. It stays in the
// table until FailedRetention has passed or it is requeued.
type FailedEvent struct {
	// ID is the row's id, for [Outbox.Requeue].
	ID int64
	// MessageID is the message id consumers see.
	MessageID string
	Name      string
	Version   int
	Topic     string
	Key       string
	Source    string
	// Attempts counts publishes tried.
	Attempts int
	// CreatedAt is when the event was written, on the database's clock.
	CreatedAt time.Time
	// LastError is the last publish error.
	LastError string
}

// Failed returns up to limit failed rows, oldest first.
func (o *Outbox) Failed(ctx context.Context, limit int) ([]FailedEvent, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("outbox: list failed: limit %d is not positive", limit)
	}
	rows, err := o.store.Failed(ctx, o.db, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: list failed: %w", err)
	}
	out := make([]FailedEvent, len(rows))
	for i, r := range rows {
		out[i] = FailedEvent{
			ID: r.ID, MessageID: r.MessageID, Name: r.Name, Version: r.Version, Topic: r.Topic, Key: r.Key, Source: r.Source,
			Attempts: r.Attempts, CreatedAt: time.UnixMicro(r.CreatedAt), LastError: r.LastError.String,
		}
	}
	return out, nil
}

// Requeue returns the failed rows among ids to pending with a fresh retry
// budget, DeleteBatch rows per statement, and reports how many it
// requeued. Ids of rows that are not failed are ignored.
func (o *Outbox) Requeue(ctx context.Context, ids ...int64) (int, error) {
	n, err := o.store.Requeue(ctx, o.db, ids, o.opts.DeleteBatch)
	if n > 0 {
		o.notify()
	}
	if err != nil {
		return int(n), fmt.Errorf("outbox: requeue: %w", err)
	}
	return int(n), nil
}

// RequeueFailed returns every failed row to pending, in batches of
// DeleteBatch, and reports how many it requeued.
func (o *Outbox) RequeueFailed(ctx context.Context) (int, error) {
	n, err := o.store.RequeueFailed(ctx, o.db, o.opts.DeleteBatch)
	if n > 0 {
		o.notify()
	}
	if err != nil {
		return int(n), fmt.Errorf("outbox: requeue failed rows: %w", err)
	}
	return int(n), nil
}

// Clean deletes the rows whose retention has passed (published rows after
// PublishedRetention, failed ones after FailedRetention), at most
// DeleteBatch per statement, each in its own short transaction, and
// reports how many it deleted. Run calls it every CleanInterval. Several
// replicas may clean at once: on PostgreSQL they skip each other's rows,
// and each goes on until it finds nothing left to delete.
func (o *Outbox) Clean(ctx context.Context) (int, error) {
	n, err := o.store.Cleanup(ctx, o.db, o.opts.DeleteBatch)
	if err != nil {
		return int(n), fmt.Errorf("outbox: clean: %w", err)
	}
	return int(n), nil
}

// outboxHooks lets tests follow the relay instead of sleeping. Each hook is
// called synchronously by the relay when set.
type outboxHooks struct {
	claimed   func(n int, locked bool)      // after a batch was claimed
	published func(ids []int64)             // after rows were marked published
	ended     func(id int64, status string) // after a failed round was stored
	cleaned   func(n int)                   // after a cleanup pass
}
