package eventgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Handle registers h as c's handler for events of type E. The event's name
// and topic are taken from E's zero value, so E must be a generated event
// struct (not a pointer or an interface).
//
// For each message named E's EventName, the payload is decoded into an E and
// validated with E.Validate, then h runs inside the inbox transaction (see
// [Tx]). A payload that cannot be decoded or does not validate is a permanent
// failure: the message is marked failed at once and h is not called.
// Decoding is lenient about what newer producers may add: unknown JSON fields
// are ignored, and an event whose version is higher than E's is decoded all
// the same. An unknown enum value fails validation and so fails the message.
//
// Registering the same event name twice, or registering after [Consumer.Run]
// started, is an error.
func Handle[E Event](c *Consumer, h func(ctx context.Context, e E, m Metadata) error) error {
	if c == nil {
		return errors.New("eventgen: Handle: nil Consumer")
	}
	if h == nil {
		return errors.New("eventgen: Handle: nil handler")
	}
	typ := reflect.TypeFor[E]()
	if k := typ.Kind(); k == reflect.Pointer || k == reflect.Interface {
		return fmt.Errorf("eventgen: Handle: event type %s must be a struct type, not a %s", typ, k)
	}
	var zero E
	name, topic, version := zero.EventName(), zero.Topic(), zero.EventVersion()
	if name == "" || topic == "" || len(name) > maxColumnBytes || len(topic) > maxColumnBytes {
		return fmt.Errorf("eventgen: Handle: event type %s: name and topic must be 1 to %d bytes", typ, maxColumnBytes)
	}
	return c.register(&handler{
		name:    name,
		topic:   topic,
		version: version,
		goType:  typ.String(),
		run: func(ctx context.Context, payload []byte, m Metadata) error {
			var e E
			if err := json.Unmarshal(payload, &e); err != nil {
				return permanent(fmt.Errorf("decode %s payload: %w", name, err))
			}
			if err := e.Validate(); err != nil {
				return permanent(fmt.Errorf("validate %s: %w", name, err))
			}
			return h(ctx, e, m)
		},
	})
}

// handler is one registered event handler, with the typed decoding erased.
type handler struct {
	name    string
	topic   string
	version int
	goType  string
	// run decodes payload and calls the user's handler. Decode and
	// validation errors are wrapped by permanent.
	run func(ctx context.Context, payload []byte, m Metadata) error
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
