package eventgen

import (
	"context"
	"time"

	"github.com/uptrace/bun"
)

// Event is implemented by every generated event struct.
type Event interface {
	// EventName returns the event's wire name, as written in the spec.
	EventName() string
	// EventVersion returns the event's schema version.
	EventVersion() int
	// Topic returns the broker topic the event is published to.
	Topic() string
	// Validate reports missing required fields and unknown enum values.
	Validate() error
}

// Keyed is implemented by generated events that declare a key. Every
// consumer group applies the events of one key (of one source and topic)
// in the order their transactions committed; events of different keys run
// in parallel.
type Keyed interface {
	Key() string
}

// Metadata describes a received event. It is passed to every handler.
type Metadata struct {
	// ID is the message id: the same on every delivery and every retry.
	ID string
	// Name is the event's wire name.
	Name string
	// Version is the event's schema version as published.
	Version int
	// Topic is the broker topic the event arrived on.
	Topic string
	// Key is the event's ordering key, empty if it has none.
	Key string
	// Sequence is the event's position among the events of its Source,
	// Topic and Key, from 1, in commit order; 0 for an event without a
	// key. The group applies them in this order.
	Sequence int64
	// Source names the producer, from the spec's source.
	Source string
	// Time is when the event was written to the outbox.
	Time time.Time
	// Attempt counts handler runs for this message in this group, from 1.
	Attempt int
	// Group is the consumer group handling the event.
	Group string
	// Headers holds the message's extra headers: not the CloudEvents
	// attributes, nor the trace context (traceparent, tracestate), which
	// is in the handler's context instead. W3C baggage is in both.
	Headers map[string]string
}

type txKey struct{}

// Tx returns the inbox transaction that a handler runs in. Writes made
// through it, including further publishes, commit together with the message's
// "handled" mark, so they are applied exactly once per consumer group.
// Outside a handler it returns the zero Tx, which must not be used.
func Tx(ctx context.Context) bun.Tx {
	tx, _ := ctx.Value(txKey{}).(bun.Tx)
	return tx
}

// withTx returns a context that carries tx for [Tx].
func withTx(ctx context.Context, tx bun.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}
