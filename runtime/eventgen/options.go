package eventgen

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventgen/eventgen/runtime/internal/leased"
	"github.com/eventgen/eventgen/runtime/internal/sqlstore"
)

// OutboxOptions configures an [Outbox]. The zero value of every field means
// its documented default; a negative or otherwise invalid value is an error
// from [NewOutbox].
type OutboxOptions struct {
	// Table is the outbox table, optionally schema-qualified (schema.table).
	// Letters, digits and underscores only. Default "eventgen_outbox".
	Table string

	// LocalRetries is how many quick retries a failed publish gets, the
	// local tier. The relay makes them in memory, while it holds the row's
	// lease and other rows keep flowing, on the row's first claim only;
	// they end early when the lease would not leave room for one more.
	// Then the row goes back to the table for the persistent tier.
	// Default 3; [NoLocalRetries] (-1) turns the local tier off.
	LocalRetries int
	// LocalRetryInterval is the nominal wait before the first local retry,
	// doubled for each next one, with jitter. Default 3s.
	LocalRetryInterval time.Duration
	// MaxRetries is how many attempts a row gets in all, both tiers
	// counted, before it is marked failed. Default 10.
	MaxRetries int
	// RetryInterval is the nominal wait before the first persistent retry,
	// doubled for each next one up to 32 times its value, with jitter.
	// Default 60s.
	RetryInterval time.Duration
	// RetryMinAge is the least wait before a persistent retry. Default 60s.
	RetryMinAge time.Duration
	// RetryBatch is how many rows the persistent retrier claims at once.
	// Default 100.
	RetryBatch int

	// BatchSize is how many rows the relay claims at once. Default 100.
	BatchSize int
	// BatchBytes bounds the payload bytes of one claimed batch, so a backlog
	// of large events does not grow memory. Default 4 MiB.
	BatchBytes int
	// MaxInFlight bounds concurrent broker publishes. Default 16.
	MaxInFlight int
	// PollInterval is the safety-net poll of the relay; commits in this
	// process wake it at once. Default 1s.
	PollInterval time.Duration
	// LeaseDuration is how long a claimed row stays with one relay before
	// another may take it over. Default 30s.
	LeaseDuration time.Duration
	// PublishTimeout bounds each publish: it is the deadline of the
	// message's context, which the transports of package transport
	// honour, and the relay stops waiting for a publisher that ignores it
	// shortly after. A publish that times out fails and is retried like
	// any other failure. It must be at most half of LeaseDuration, so that
	// no publish outlives its row's lease. Default 10s, or a third of
	// LeaseDuration if that is shorter.
	PublishTimeout time.Duration

	// CleanInterval is the time between cleanup passes. Default 300s.
	CleanInterval time.Duration
	// PublishedRetention is how long published rows are kept. Default 24h.
	PublishedRetention time.Duration
	// FailedRetention is how long failed rows are kept. Default 15 days.
	FailedRetention time.Duration
	// DeleteBatch is how many rows one cleanup statement deletes. Default 1000.
	DeleteBatch int

	// NoPreparedStatements makes the outbox send its statements through
	// Bun with the values inlined, as Bun sends its own queries. By
	// default Publish's INSERT (for up to 16 events) and the relay's
	// claims and marks are statements prepared once per connection, which
	// PostgreSQL then need not parse and plan on every call; Bun's query
	// hooks do not see them. Set it when Bun hooks must trace those
	// statements, or behind a connection pooler that cannot keep prepared
	// statements (PgBouncer in transaction mode before 1.21).
	NoPreparedStatements bool

	// Logger receives the relay's logs. Default slog.Default().
	Logger *slog.Logger

	// TracerProvider makes the relay's spans: one PRODUCER span per
	// publish attempt, "send <topic>", in the trace of the context that
	// Publish was given (see docs/observability.md). Default
	// otel.GetTracerProvider(), read by NewOutbox: install an SDK's
	// provider with otel.SetTracerProvider before. Without an SDK, spans
	// cost next to nothing. To turn tracing off altogether, no spans and
	// no trace context stored or sent, set noop.NewTracerProvider() (from
	// go.opentelemetry.io/otel/trace/noop) with a Propagator that carries
	// nothing, propagation.NewCompositeTextMapPropagator().
	TracerProvider trace.TracerProvider
	// Propagator writes the trace context of Publish's context with each
	// row, and that of the relay's span on each message, as the
	// CloudEvents distributed-tracing extension (traceparent and
	// tracestate) and W3C baggage. Default otel.GetTextMapPropagator(),
	// read by NewOutbox; the global propagator propagates nothing until
	// one is set, for example with
	// otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})).
	Propagator propagation.TextMapPropagator
	// MeterProvider makes the outbox's metrics: publishes, retries and
	// failures by event, the time from an event's write to the broker's
	// acknowledgement, claim sizes, and gauges of the table's events by
	// status and of the relay's lag (see docs/observability.md). Default
	// otel.GetMeterProvider(), read by NewOutbox. The gauges run one
	// [Outbox.Stats] statement when a reader collects, at most every 5
	// seconds, and none while nothing collects; [Outbox.Close] stops
	// them. To turn metrics off altogether, set noop.NewMeterProvider()
	// (from go.opentelemetry.io/otel/metric/noop).
	MeterProvider metric.MeterProvider
}

// ConsumerOptions configures a [Consumer]. Fields that share a name with
// [OutboxOptions] share its meaning and default.
type ConsumerOptions struct {
	// Group is the consumer group: each group handles every event once.
	// Required.
	Group string
	// Table is the inbox table, optionally schema-qualified. Several groups
	// may share it. Default "eventgen_inbox".
	Table string

	// Concurrency bounds the handlers running at once. Default 8.
	Concurrency int

	// MaxMessageBytes bounds the payload of a received message. A larger
	// one is recorded as failed with the reason, without its payload, and
	// acknowledged, before its payload is decoded or stored: redelivering
	// it would fail the same way for ever. The database must accept a
	// payload of this size in one statement (MySQL's max_allowed_packet,
	// 16 MiB by default on MariaDB). Default 4 MiB, at most 64 MiB.
	MaxMessageBytes int

	// LocalRetries is how many quick retries a failed handler gets, the
	// local tier. Each one goes through the inbox table like every retry,
	// so that a crash loses none, and waits LocalRetryInterval-based
	// delays; the run in the handler's transaction and the lease are the
	// same as in the persistent tier. Default 3; [NoLocalRetries] (-1)
	// turns the local tier off.
	LocalRetries int
	// LocalRetryInterval is the nominal wait before the first local retry,
	// doubled for each next one, with jitter. Default 3s.
	LocalRetryInterval time.Duration
	// MaxRetries is how many runs a message gets in all, both tiers
	// counted, before it is marked failed. Default 10.
	MaxRetries int
	// RetryInterval is the nominal wait before the first persistent retry,
	// doubled for each next one up to 32 times its value, with jitter.
	// Default 60s.
	RetryInterval time.Duration
	// RetryMinAge is the least wait before a persistent retry. Default 60s.
	RetryMinAge time.Duration
	// RetryBatch, default 100.
	RetryBatch int
	// PollInterval is how often the persistent retrier looks for due rows.
	// Default 1s.
	PollInterval time.Duration
	// LeaseDuration is how long a retried row, once claimed, waits for
	// its run to start before another replica may take it over. A run
	// that has started holds the row, however long its handler takes: it
	// renews the lease and locks the row in the handler's transaction,
	// and claims skip locked rows. Default 30s.
	LeaseDuration time.Duration

	// GapTimeout bounds how long the events of a key the group has never
	// seen wait for the ones before them. A group that starts after a
	// key's first events were published, on a broker that keeps no
	// history (RabbitMQ, the in-process broker), never receives them: its
	// first event of that key waits GapTimeout, then the group logs the
	// gap once and applies the key's events from there. A key the group
	// has seen waits for its missing event for as long as it takes, and
	// shows as blocked (see [Consumer.BlockedKeys]). Default 5 minutes,
	// well above the 30-second redelivery of the NATS and Redis
	// transports, so that a delayed first event is not mistaken for one
	// that never comes.
	GapTimeout time.Duration

	// CleanInterval, default 300s.
	CleanInterval time.Duration
	// SucceededRetention is how long handled rows are kept, so redeliveries
	// within it are recognised. Default 24h.
	SucceededRetention time.Duration
	// FailedRetention, default 15 days.
	FailedRetention time.Duration
	// KeyRetention is how long the group remembers where a key stands
	// after its last event: a key silent for longer is forgotten, and its
	// next event is taken as the first of a key the group never saw (see
	// GapTimeout). Keys with events waiting or failed are kept. Default 30
	// days; at least SucceededRetention.
	KeyRetention time.Duration
	// DeleteBatch, default 1000.
	DeleteBatch int

	// NoPreparedStatements makes the consumer send the inbox insert of
	// each handled message through Bun with its values inlined, where Bun
	// query hooks see it; see OutboxOptions.NoPreparedStatements.
	NoPreparedStatements bool

	// Logger receives the consumer's logs. Default slog.Default().
	Logger *slog.Logger

	// TracerProvider makes the consumer's spans: one CONSUMER span per
	// delivery or retry of a message, "process <topic>", whose parent is
	// the relay's span that sent it (see docs/observability.md). The
	// handler's context carries the span. Default
	// otel.GetTracerProvider(), read by NewConsumer; see
	// OutboxOptions.TracerProvider, also for turning tracing off.
	TracerProvider trace.TracerProvider
	// Propagator reads the trace context from each message, and from the
	// inbox row for a retry. Default otel.GetTextMapPropagator(), read by
	// NewConsumer; see OutboxOptions.Propagator.
	Propagator propagation.TextMapPropagator
	// MeterProvider makes the group's metrics: handled, retried, skipped
	// and failed messages by event, handler durations, the time from an
	// event's time to its handling, and gauges of the group's inbox rows
	// by status and of its retries' lag (see docs/observability.md).
	// Default otel.GetMeterProvider(), read by NewConsumer. The gauges
	// run one [Consumer.Stats] statement when a reader collects, at most
	// every 5 seconds, and none while nothing collects; [Consumer.Close]
	// stops them. See OutboxOptions.MeterProvider, also for turning
	// metrics off.
	MeterProvider metric.MeterProvider
}

// NoLocalRetries, as OutboxOptions.LocalRetries or
// ConsumerOptions.LocalRetries, turns the local retry tier off: every retry
// waits the persistent tier's delays.
const NoLocalRetries = -1

// Defaults shared by both sides.
const (
	DefaultOutboxTable        = "eventgen_outbox"
	DefaultInboxTable         = "eventgen_inbox"
	DefaultLocalRetries       = 3
	DefaultLocalRetryInterval = 3 * time.Second
	DefaultMaxRetries         = 10
	DefaultRetryInterval      = 60 * time.Second
	DefaultRetryMinAge        = 60 * time.Second
	DefaultRetryBatch         = 100
	DefaultBatchSize          = 100
	DefaultBatchBytes         = 4 << 20
	DefaultMaxInFlight        = 16
	DefaultPollInterval       = time.Second
	DefaultLeaseDuration      = 30 * time.Second
	DefaultPublishTimeout     = 10 * time.Second
	DefaultCleanInterval      = 300 * time.Second
	DefaultRetention          = 24 * time.Hour
	DefaultFailedRetention    = 15 * 24 * time.Hour
	DefaultDeleteBatch        = 1000
	DefaultConcurrency        = 8
	DefaultGapTimeout         = 5 * time.Minute
	DefaultKeyRetention       = 30 * 24 * time.Hour
	DefaultMaxMessageBytes    = 4 << 20
)

// maxMaxMessageBytes is the largest MaxMessageBytes accepted.
const maxMaxMessageBytes = 64 << 20

// withDefaults validates o and fills in defaults.
func (o OutboxOptions) withDefaults() (OutboxOptions, error) {
	var errs []error
	o.Table = defaultString(o.Table, DefaultOutboxTable)
	if err := sqlstore.ValidateTableName(o.Table); err != nil {
		errs = append(errs, fmt.Errorf("Table: %w", err))
	}
	errs = localRetriesOpt(errs, &o.LocalRetries)
	errs = durOpt(errs, "LocalRetryInterval", &o.LocalRetryInterval, DefaultLocalRetryInterval)
	errs = intOpt(errs, "MaxRetries", &o.MaxRetries, DefaultMaxRetries)
	errs = durOpt(errs, "RetryInterval", &o.RetryInterval, DefaultRetryInterval)
	errs = durOpt(errs, "RetryMinAge", &o.RetryMinAge, DefaultRetryMinAge)
	errs = intOpt(errs, "RetryBatch", &o.RetryBatch, DefaultRetryBatch)
	errs = intOpt(errs, "BatchSize", &o.BatchSize, DefaultBatchSize)
	errs = intOpt(errs, "BatchBytes", &o.BatchBytes, DefaultBatchBytes)
	errs = intOpt(errs, "MaxInFlight", &o.MaxInFlight, DefaultMaxInFlight)
	errs = durOpt(errs, "PollInterval", &o.PollInterval, DefaultPollInterval)
	errs = durOpt(errs, "LeaseDuration", &o.LeaseDuration, DefaultLeaseDuration)
	errs = durOpt(errs, "PublishTimeout", &o.PublishTimeout, min(DefaultPublishTimeout, o.LeaseDuration/3))
	if o.PublishTimeout > o.LeaseDuration/2 {
		errs = append(errs, fmt.Errorf("PublishTimeout (%s) must be at most half of LeaseDuration (%s), so that a publish ends before its row's lease", o.PublishTimeout, o.LeaseDuration))
	}
	errs = durOpt(errs, "CleanInterval", &o.CleanInterval, DefaultCleanInterval)
	errs = durOpt(errs, "PublishedRetention", &o.PublishedRetention, DefaultRetention)
	errs = durOpt(errs, "FailedRetention", &o.FailedRetention, DefaultFailedRetention)
	errs = intOpt(errs, "DeleteBatch", &o.DeleteBatch, DefaultDeleteBatch)
	if o.LocalRetries >= o.MaxRetries {
		errs = append(errs, fmt.Errorf("LocalRetries (%d) must be less than MaxRetries (%d)", o.LocalRetries, o.MaxRetries))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("eventgen: invalid OutboxOptions: %w", err)
	}
	return o, nil
}

// withDefaults validates o and fills in defaults.
func (o ConsumerOptions) withDefaults() (ConsumerOptions, error) {
	var errs []error
	if o.Group == "" {
		errs = append(errs, errors.New("Group is required"))
	} else if len(o.Group) > 255 {
		errs = append(errs, fmt.Errorf("Group is %d bytes, over the limit of 255", len(o.Group)))
	}
	o.Table = defaultString(o.Table, DefaultInboxTable)
	if err := sqlstore.ValidateTableName(o.Table); err != nil {
		errs = append(errs, fmt.Errorf("Table: %w", err))
	}
	errs = intOpt(errs, "Concurrency", &o.Concurrency, DefaultConcurrency)
	errs = durOpt(errs, "GapTimeout", &o.GapTimeout, DefaultGapTimeout)
	errs = intOpt(errs, "MaxMessageBytes", &o.MaxMessageBytes, DefaultMaxMessageBytes)
	if o.MaxMessageBytes > maxMaxMessageBytes {
		errs = append(errs, fmt.Errorf("MaxMessageBytes is %d, over the limit of %d", o.MaxMessageBytes, maxMaxMessageBytes))
	}
	errs = localRetriesOpt(errs, &o.LocalRetries)
	errs = durOpt(errs, "LocalRetryInterval", &o.LocalRetryInterval, DefaultLocalRetryInterval)
	errs = intOpt(errs, "MaxRetries", &o.MaxRetries, DefaultMaxRetries)
	errs = durOpt(errs, "RetryInterval", &o.RetryInterval, DefaultRetryInterval)
	errs = durOpt(errs, "RetryMinAge", &o.RetryMinAge, DefaultRetryMinAge)
	errs = intOpt(errs, "RetryBatch", &o.RetryBatch, DefaultRetryBatch)
	errs = durOpt(errs, "PollInterval", &o.PollInterval, DefaultPollInterval)
	errs = durOpt(errs, "LeaseDuration", &o.LeaseDuration, DefaultLeaseDuration)
	errs = durOpt(errs, "CleanInterval", &o.CleanInterval, DefaultCleanInterval)
	errs = durOpt(errs, "SucceededRetention", &o.SucceededRetention, DefaultRetention)
	errs = durOpt(errs, "FailedRetention", &o.FailedRetention, DefaultFailedRetention)
	errs = durOpt(errs, "KeyRetention", &o.KeyRetention, DefaultKeyRetention)
	if o.KeyRetention < o.SucceededRetention {
		errs = append(errs, fmt.Errorf("KeyRetention (%s) is shorter than SucceededRetention (%s): a redelivered event could run again in another order", o.KeyRetention, o.SucceededRetention))
	}
	errs = intOpt(errs, "DeleteBatch", &o.DeleteBatch, DefaultDeleteBatch)
	if o.LocalRetries >= o.MaxRetries {
		errs = append(errs, fmt.Errorf("LocalRetries (%d) must be less than MaxRetries (%d)", o.LocalRetries, o.MaxRetries))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("eventgen: invalid ConsumerOptions: %w", err)
	}
	return o, nil
}

// policy returns the retry tiers of o, which has its defaults.
func (o OutboxOptions) policy() leased.Policy {
	return retryPolicy(o.LocalRetries, o.LocalRetryInterval, o.MaxRetries, o.RetryInterval, o.RetryMinAge)
}

// policy returns the retry tiers of o, which has its defaults.
func (o ConsumerOptions) policy() leased.Policy {
	return retryPolicy(o.LocalRetries, o.LocalRetryInterval, o.MaxRetries, o.RetryInterval, o.RetryMinAge)
}

func retryPolicy(local int, localInterval time.Duration, maxRetries int, interval, minAge time.Duration) leased.Policy {
	return leased.Policy{Local: max(0, local), LocalInterval: localInterval, Max: maxRetries, Interval: interval, MinAge: minAge}
}

// localRetriesOpt is intOpt for LocalRetries, which also takes
// NoLocalRetries.
func localRetriesOpt(errs []error, v *int) []error {
	if *v == NoLocalRetries {
		return errs
	}
	if *v < 0 {
		return append(errs, fmt.Errorf("LocalRetries is %d: must not be negative, but for NoLocalRetries (-1) to turn the local tier off (0 means the default, %d)", *v, DefaultLocalRetries))
	}
	return intOpt(errs, "LocalRetries", v, DefaultLocalRetries)
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func intOpt(errs []error, name string, v *int, def int) []error {
	switch {
	case *v < 0:
		return append(errs, fmt.Errorf("%s is %d: must not be negative (0 means the default, %d)", name, *v, def))
	case *v == 0:
		*v = def
	}
	return errs
}

func durOpt(errs []error, name string, v *time.Duration, def time.Duration) []error {
	switch {
	case *v < 0:
		return append(errs, fmt.Errorf("%s is %s: must not be negative (0 means the default, %s)", name, *v, def))
	case *v == 0:
		*v = def
	}
	return errs
}
