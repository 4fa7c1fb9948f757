package main

import (
	"io"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

func TestOrdered(t *testing.T) {
	row := func(topic, key string, seq int64) effect {
		return effect{Topic: topic, EventKey: key, Seq: seq}
	}
	for _, tt := range []struct {
		name string
		rows []effect
		want ordering
	}{
		{"none", nil, ordering{}},
		{"one stream in order", []effect{row("orders", "a", 1), row("orders", "a", 2), row("orders", "a", 3)}, ordering{streams: 1, inOrder: 1}},
		{"gaps rise too", []effect{row("inventory", "TEA-1", 4), row("inventory", "TEA-1", 9)}, ordering{streams: 1, inOrder: 1}},
		{"streams interleaved", []effect{row("orders", "a", 1), row("orders", "b", 1), row("payments", "a", 1), row("orders", "a", 2), row("orders", "b", 2)}, ordering{streams: 3, inOrder: 3}},
		{"same key, other topic", []effect{row("orders", "a", 2), row("payments", "a", 1)}, ordering{streams: 2, inOrder: 2}},
		{"swapped", []effect{row("orders", "a", 2), row("orders", "a", 1), row("orders", "b", 1)}, ordering{streams: 2, inOrder: 1, outOfOrder: 1}},
		{"twice", []effect{row("orders", "a", 1), row("orders", "a", 1)}, ordering{streams: 1, outOfOrder: 1}},
		{"each pair counts", []effect{row("orders", "a", 3), row("orders", "a", 2), row("orders", "a", 1)}, ordering{streams: 1, outOfOrder: 2}},
		{"no sequence", []effect{row("orders", "a", 0), row("orders", "a", 1)}, ordering{streams: 1, unsequenced: 1}},
	} {
		if got := ordered(tt.rows); got != tt.want {
			t.Errorf("%s: ordered = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestOutOfOrderIsAMismatch checks that the summary fails when a group
// applied a stream out of order, even with every event applied once.
func TestOutOfOrderIsAMismatch(t *testing.T) {
	want := expect(2)
	got := want
	got.billing.order = ordering{streams: 4, inOrder: 4}
	got.shipping.order = ordering{streams: 5, inOrder: 5}
	if !printSummary(io.Discard, 2, uuid.New(), want, got, counts{}, 0) {
		t.Fatal("printSummary reports a mismatch with every stream in order")
	}
	got.shipping.order = ordering{streams: 5, inOrder: 4, outOfOrder: 1}
	if printSummary(io.Discard, 2, uuid.New(), want, got, counts{}, 0) {
		t.Error("printSummary reports no mismatch with a stream out of order")
	}
	got.shipping.order = ordering{streams: 5, inOrder: 4, unsequenced: 1}
	if printSummary(io.Discard, 2, uuid.New(), want, got, counts{}, 0) {
		t.Error("printSummary reports no mismatch with an event without a sequence")
	}
}

// discard is a publisher that takes every message.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Close() error                              { return nil }

func TestSentEarly(t *testing.T) {
	trace := newRelayTrace(discard{}, &eventLog{quiet: true})
	send := func(topic, key, order string, seq int64) {
		m := message.NewMessage(uuid.NewString(), nil)
		m.Metadata.Set("ce_type", "E")
		m.Metadata.Set("ce_source", "shop")
		m.Metadata.Set(correlationHeader, order)
		if key != "" {
			m.Metadata.Set("ce_partitionkey", key)
			m.Metadata.Set("ce_sequence", strconv.FormatInt(seq, 10))
		}
		if err := trace.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	send("orders", "a", "a", 2) // early: 1 comes after it
	send("orders", "a", "a", 3) // early too
	send("orders", "a", "a", 1)
	send("payments", "a", "a", 1)  // another topic: another stream
	send("inventory", "S", "a", 7) // early: 5 comes after it
	send("inventory", "S", "b", 6) // another order's, in the stream of SKU S
	send("inventory", "S", "a", 5)
	send("inventory", "S", "x", 1) // not one of the orders asked about
	send("orders", "", "a", 0)     // no key: not ordered
	for _, tt := range []struct {
		orders       []string
		early, keyed int
	}{
		{[]string{"a", "b"}, 4, 7},
		{[]string{"a"}, 3, 6},
		{[]string{"b"}, 0, 1},
		{nil, 0, 0},
	} {
		if early, keyed := trace.early(tt.orders); early != tt.early || keyed != tt.keyed {
			t.Errorf("early(%q) = %d, %d; want %d, %d", tt.orders, early, keyed, tt.early, tt.keyed)
		}
	}
}
