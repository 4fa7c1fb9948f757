package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	shopevents "github.com/eventgen/eventgen/examples/generated"
)

// event is the generated event every measurement writes and reads: a
// keyed event with a nested optional type and a time, padded to the
// configured payload size through its free-text reason.
type event = shopevents.OrderCancelled

// events makes the events every measurement uses, padded so that each JSON
// payload is about the configured size.
type events struct {
	note  string
	bytes int
}

func newEvents(size int) *events {
	s := &events{note: "r"}
	base := len(s.payload(s.order()))
	if pad := size - base; pad > 0 {
		s.note += strings.Repeat("r", pad)
	}
	s.bytes = len(s.payload(s.order()))
	return s
}

// size is the JSON payload's length in bytes.
func (s *events) size() int { return s.bytes }

// order returns a valid event with a fresh order id.
func (s *events) order() event {
	return event{
		OrderID:     uuid.New(),
		Reason:      s.note,
		Refund:      &shopevents.Money{Amount: 2500, Currency: "EUR"},
		CancelledAt: time.Now().UTC(),
	}
}

// orders returns n events as the generated package's sealed Event type,
// for PublishBatch.
func (s *events) orders(n int) []shopevents.Event {
	out := make([]shopevents.Event, n)
	for i := range out {
		out[i] = s.order()
	}
	return out
}

func (s *events) payload(e event) []byte {
	b, _ := json.Marshal(e) // plain fields: cannot fail
	return b
}

// message returns the event as the relay would publish it: CloudEvents
// binary mode, the attributes in ce_ headers, with a new message id.
func (s *events) message(e event) *message.Message {
	id := uuid.Must(uuid.NewV7()).String()
	return wireMessage(id, e.Key(), time.Now(), s.payload(e))
}

// wireMessage builds the message of an event with the headers
// eventgen's relay writes and its consumer reads.
func wireMessage(id, key string, at time.Time, payload []byte) *message.Message {
	m := message.NewMessage(id, payload)
	m.Metadata.Set("ce_id", id)
	m.Metadata.Set("ce_type", event{}.EventName())
	m.Metadata.Set("ce_source", shopevents.Source)
	m.Metadata.Set("ce_specversion", "1.0")
	m.Metadata.Set("ce_time", at.UTC().Format(time.RFC3339Nano))
	m.Metadata.Set("ce_eventversion", strconv.Itoa(event{}.EventVersion()))
	m.Metadata.Set("content-type", "application/json")
	m.Metadata.Set("ce_partitionkey", key)
	return m
}

// keyOf returns the ordering key of a relayed message: the order id, which
// identifies the event in the measurements that follow each one.
func keyOf(m *message.Message) string { return m.Metadata.Get("ce_partitionkey") }

// rawOutbox writes outbox rows by hand, the way a team without eventgen
// would: encode the event, make an id, insert the row with Bun. The row is
// the one eventgen writes, with the database's clock for its times, so
// the relay can publish it.
type rawOutbox struct {
	query string
}

func newRawOutbox(d dialect, table string) *rawOutbox {
	return &rawOutbox{query: "INSERT INTO " + table +
		" (message_id, name, version, topic, msg_key, source, payload, headers, status, created_at, next_attempt_at)" +
		" VALUES (?, ?, ?, ?, ?, ?, ?, NULL, 'pending', " + d.now + ", " + d.now + ")"}
}

func (r *rawOutbox) insert(ctx context.Context, db bun.IDB, e event) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("message id: %w", err)
	}
	_, err = db.ExecContext(ctx, r.query, id.String(), e.EventName(), e.EventVersion(), e.Topic(), e.Key(), shopevents.Source, payload)
	if err != nil {
		return fmt.Errorf("insert outbox row: %w", err)
	}
	return nil
}
