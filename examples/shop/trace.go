package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventgen/eventgen/runtime/eventgen"
)

// eventLog prints one line per step, from any goroutine, stamped with the
// time since the program started.
type eventLog struct {
	w     io.Writer
	quiet bool
	start time.Time
	mu    sync.Mutex
}

func (l *eventLog) printf(who, format string, args ...any) {
	if l.quiet {
		return
	}
	line := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%7.3fs %-8s %s\n", time.Since(l.start).Seconds(), who, line)
}

// handled logs what a handler did with the event m, or that it failed.
func (l *eventLog) handled(m eventgen.Metadata, err error, format string, args ...any) {
	what := fmt.Sprintf("%-24s %s", m.Name, shortCorrelation(m.Headers[correlationHeader]))
	if err != nil {
		l.printf(m.Group, "%s: failed (attempt %d, retried later): %v", what, m.Attempt, err)
		return
	}
	l.printf(m.Group, "%s: %s", what, fmt.Sprintf(format, args...))
}

func shortCorrelation(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// relayTrace is the publisher the outbox relays to: it passes messages on
// to the broker, and logs and counts those the broker took.
type relayTrace struct {
	next message.Publisher
	log  *eventLog

	mu      sync.Mutex
	ids     map[string]bool           // message ids published
	byOrder map[string]map[string]int // correlation id -> event name -> count
	dups    int                       // messages published more than once
	streams map[stream][]sent         // the keyed messages of each stream, first publish only, as the broker took them
}

// stream names the events that are ordered together: one source, topic
// and key (docs/ordering.md).
//
// An order's OrderPlaced (topic orders, keyed by the order's id) and its
// inventory.stock-reserved (topic inventory, keyed by SKU) are in
// different streams, so the broker may take a reservation before its
// OrderPlaced: nothing orders them, and that counts nowhere here. A
// consumer that needed them in order would need them on one topic with
// one key.
type stream struct{ source, topic, key string }

// sent is a keyed message as the broker took it.
type sent struct {
	seq   int64
	order string // correlation id
}

func newRelayTrace(next message.Publisher, log *eventLog) *relayTrace {
	return &relayTrace{next: next, log: log, ids: make(map[string]bool), byOrder: make(map[string]map[string]int), streams: make(map[stream][]sent)}
}

// Publish implements message.Publisher.
func (t *relayTrace) Publish(topic string, msgs ...*message.Message) error {
	if err := t.next.Publish(topic, msgs...); err != nil {
		return err
	}
	for _, m := range msgs {
		name, corr := m.Metadata.Get("ce_type"), m.Metadata.Get(correlationHeader)
		t.log.printf("relay", "%-24s %s: published to %s", name, shortCorrelation(corr), topic)
		t.mu.Lock()
		if t.ids[m.UUID] {
			t.dups++
		} else {
			t.ids[m.UUID] = true
			if t.byOrder[corr] == nil {
				t.byOrder[corr] = make(map[string]int)
			}
			t.byOrder[corr][name]++
			// The relay's CloudEvents attributes, before the broker's
			// binding renames them.
			if key := m.Metadata.Get("ce_partitionkey"); key != "" {
				seq, _ := strconv.ParseInt(m.Metadata.Get("ce_sequence"), 10, 64)
				s := stream{m.Metadata.Get("ce_source"), topic, key}
				t.streams[s] = append(t.streams[s], sent{seq, corr})
			}
		}
		t.mu.Unlock()
	}
	return nil
}

// Close implements message.Publisher.
func (t *relayTrace) Close() error { return t.next.Close() }

// MessagingSystem passes on the broker's name for the relay's spans
// (attribute messaging.system), which the relay finds only on the
// publisher it is given.
func (t *relayTrace) MessagingSystem() string {
	if s, ok := t.next.(interface{ MessagingSystem() string }); ok {
		return s.MessagingSystem()
	}
	return ""
}

// published returns how many distinct messages of the given orders were
// published, in all and by event name, and how many were published again.
func (t *relayTrace) published(orders []string) (total int, byName map[string]int, dups int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byName = make(map[string]int)
	for _, o := range orders {
		for name, n := range t.byOrder[o] {
			byName[name] += n
			total += n
		}
	}
	return total, byName, t.dups
}

// early returns how many keyed messages of the given orders the broker
// took before an earlier message of their stream, and how many it took.
// The relay starts its publishes in outbox order but runs them
// concurrently, so a stream's events mostly reach the broker in sequence,
// not always; the consumer groups put them back in order.
func (t *relayTrace) early(orders []string) (early, keyed int) {
	ours := make(map[string]bool, len(orders))
	for _, o := range orders {
		ours[o] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, msgs := range t.streams {
		var seqs []int64
		for _, m := range msgs {
			if ours[m.order] {
				seqs = append(seqs, m.seq)
			}
		}
		keyed += len(seqs)
		// A message was early if one taken after it has a smaller
		// sequence.
		least := int64(math.MaxInt64)
		for i := len(seqs) - 1; i >= 0; i-- {
			if seqs[i] > least {
				early++
			}
			least = min(least, seqs[i])
		}
	}
	return early, keyed
}
