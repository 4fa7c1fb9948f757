package redisstream_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// oversizeTopic is the topic of sizedEvent, unique to this test process
// so that runs on a shared Redis do not read each other's entries.
var oversizeTopic = func() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test.oversize." + hex.EncodeToString(b[:])
}()

// sizedEvent is an event whose size the test chooses by its padding.
type sizedEvent struct {
	N   int    `json:"n"`
	Pad string `json:"pad,omitempty"`
}

func (sizedEvent) EventName() string { return "Sized" }
func (sizedEvent) EventVersion() int { return 1 }
func (sizedEvent) Topic() string     { return oversizeTopic }
func (sizedEvent) Validate() error   { return nil }

// TestOversizedEntries has an eventgen Consumer with four subscriptions
// read six entries over its MaxMessageBytes, one after another, then
// events of the usual size. Each oversized entry is recorded failed, with
// the reason and without its payload, and acknowledged: once the Consumer
// has stopped, the group has nothing pending and nothing left to read, so
// nothing is delivered again. Every event after them is handled, once.
func TestOversizedEntries(t *testing.T) {
	const (
		maxBytes  = 1024
		oversized = 6
		normal    = 20
	)
	b, rc, _ := open(t)
	ctx := context.Background()
	t.Cleanup(func() { b.DeleteTopic(context.Background(), oversizeTopic) })
	group := "oversize-" + uuid.NewString()[:8]
	sub, err := b.Subscriber(group)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	if err := sub.SubscribeInitialize(oversizeTopic); err != nil {
		t.Fatal(err)
	}

	publish := func(e sizedEvent) string {
		t.Helper()
		payload, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.NewString()
		m := wire.Encode(wire.Envelope{ID: id, Name: e.EventName(), Version: e.EventVersion(), Source: "test", Time: time.Now(), Payload: payload})
		if err := b.Publisher().Publish(oversizeTopic, m); err != nil {
			t.Fatal(err)
		}
		return id
	}
	var big, small []string
	for i := range oversized {
		big = append(big, publish(sizedEvent{N: i, Pad: strings.Repeat("x", 64<<10)}))
	}
	for i := range normal {
		small = append(small, publish(sizedEvent{N: oversized + i}))
	}

	c, err := eventgen.NewConsumer(testenv.OpenSQLite(t), sub, eventgen.ConsumerOptions{
		Group: group, Concurrency: 4, MaxMessageBytes: maxBytes, Logger: testenv.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		handled []string
	)
	allHandled := make(chan struct{})
	err = eventgen.Handle(c, func(ctx context.Context, e sizedEvent, m eventgen.Metadata) error {
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, m.ID)
		if len(handled) == normal {
			close(allHandled)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()

	deadline := time.After(time.Minute)
	select {
	case <-allHandled:
	case err := <-done:
		t.Fatalf("Run returned before the events were handled: %v", err)
	case <-deadline:
		t.Fatal("the events after the oversized entries were not all handled within a minute")
	}
	var failed []eventgen.FailedMessage
	for len(failed) < oversized {
		if failed, err = c.Failed(ctx, 100); err != nil {
			t.Fatal(err)
		}
		select {
		case <-deadline:
			t.Fatalf("%d of %d oversized entries recorded failed within a minute", len(failed), oversized)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Close acks what the Consumer acked before it returns.
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	slices.Sort(handled)
	mu.Unlock()
	slices.Sort(small)
	if !slices.Equal(handled, small) {
		t.Errorf("handled %d events %v,\nwant the %d after the oversized entries, once each: %v", len(handled), handled, normal, small)
	}
	var failedIDs []string
	for _, f := range failed {
		failedIDs = append(failedIDs, f.ID)
		if want := "over MaxMessageBytes (1024); not stored"; !strings.Contains(f.Error, want) || len(f.Payload) != 0 {
			t.Errorf("entry %s failed with %q and %d payload bytes kept, want %q and none", f.ID, f.Error, len(f.Payload), want)
		}
	}
	slices.Sort(failedIDs)
	slices.Sort(big)
	if !slices.Equal(failedIDs, big) {
		t.Errorf("failed %v, want the oversized entries %v", failedIDs, big)
	}

	groups, err := rc.XInfoGroups(ctx, oversizeTopic).Result()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(groups, func(g redis.XInfoGroup) bool { return g.Name == group })
	if i < 0 {
		t.Fatalf("group %s is not on the stream: %+v", group, groups)
	}
	if g := groups[i]; g.Pending != 0 || g.Lag != 0 || g.EntriesRead != oversized+normal {
		t.Errorf("group after the Consumer stopped: %d entries pending, %d not read, %d read; want 0, 0 and %d (each entry read once and acked)",
			g.Pending, g.Lag, g.EntriesRead, oversized+normal)
	}
}

// TestForeignEntryPayload reads an entry that another producer wrote
// without Watermill's fields: the message carries the entry's payload
// field, for the consumer to reject.
func TestForeignEntryPayload(t *testing.T) {
	b, rc, topic := open(t)
	_, ch := subscribe(t, b, topic)
	if err := rc.XAdd(context.Background(), &redis.XAddArgs{Stream: topic, Values: []string{"payload", "foreign body"}}).Err(); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 10*time.Second)
	m.Ack()
	if string(m.Payload) != "foreign body" {
		t.Errorf("payload %q, want %q", m.Payload, "foreign body")
	}
}
