package transport_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport"
	"github.com/eventgen/eventgen/runtime/transport/natsjs"
)

// TestRetentionBadValues opens NATS and Redis URLs where nothing listens
// with limits that Retention does not accept: Open refuses each, naming
// the field, before it connects. No service is needed.
func TestRetentionBadValues(t *testing.T) {
	for _, tt := range []struct {
		r     transport.Retention
		field string
	}{
		{transport.Retention{MaxAge: -2}, "MaxAge"},
		{transport.Retention{MaxAge: -time.Hour}, "MaxAge"},
		{transport.Retention{MaxAge: time.Millisecond}, "MaxAge"},
		{transport.Retention{MaxBytes: -2}, "MaxBytes"},
		{transport.Retention{MaxMessages: -100}, "MaxMessages"},
	} {
		for _, u := range []string{"nats://127.0.0.1:1", "redis://127.0.0.1:1/0"} {
			_, err := transport.Open(context.Background(), u, transport.Options{Retention: tt.r})
			if err == nil || !strings.Contains(err.Error(), "Retention."+tt.field) {
				t.Errorf("Open(%s, %+v) = %v, want an error about Retention.%s", u, tt.r, err, tt.field)
			}
		}
	}
	// Both bad values are reported at once.
	_, err := transport.Open(context.Background(), "nats://127.0.0.1:1", transport.Options{Retention: transport.Retention{MaxAge: -5, MaxMessages: -5}})
	if err == nil || !strings.Contains(err.Error(), "MaxAge") || !strings.Contains(err.Error(), "MaxMessages") {
		t.Errorf("Open with two bad limits = %v, want both reported", err)
	}
}

// TestRetentionNATSStreamLimits publishes with default and with set
// limits and reads the stream's configuration back.
func TestRetentionNATSStreamLimits(t *testing.T) {
	for _, tt := range []struct {
		name                   string
		r                      transport.Retention
		maxAge                 time.Duration
		maxBytes, maxMsgs      int64
		duplicatesAtMostMaxAge bool
	}{
		{"Defaults", transport.Retention{}, 7 * 24 * time.Hour, -1, -1, false},
		{"Set", transport.Retention{MaxAge: time.Hour, MaxBytes: 1 << 20, MaxMessages: 1000}, time.Hour, 1 << 20, 1000, false},
		{"UnlimitedAgeWithACount", transport.Retention{MaxAge: transport.Unlimited, MaxBytes: transport.Unlimited, MaxMessages: 10}, 0, -1, 10, false},
		// The duplicate window (2 minutes by default) may not exceed MaxAge.
		{"ShortMaxAge", transport.Retention{MaxAge: 5 * time.Second}, 5 * time.Second, -1, -1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, logs, url := openWithRetention(t, "nats", tt.r)
			topic := testenv.Topic(t, "retention")
			testenv.DeleteTopicAtCleanup(t, tr, topic)
			publishNow(t, tr, topic, newMessages(1))
			cfg := retentionStreamInfo(t, url, topic).Config
			if cfg.MaxAge != tt.maxAge || cfg.MaxBytes != tt.maxBytes || cfg.MaxMsgs != tt.maxMsgs {
				t.Errorf("stream limits: MaxAge %s, MaxBytes %d, MaxMsgs %d; want %s, %d, %d", cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs, tt.maxAge, tt.maxBytes, tt.maxMsgs)
			}
			if cfg.Discard != jetstream.DiscardOld {
				t.Errorf("stream discard policy %v, want DiscardOld (a full stream must not refuse publishes)", cfg.Discard)
			}
			if tt.duplicatesAtMostMaxAge && cfg.Duplicates > cfg.MaxAge {
				t.Errorf("duplicate window %s is longer than MaxAge %s", cfg.Duplicates, cfg.MaxAge)
			}
			if w := logs.matching(slog.LevelWarn, "unbounded"); len(w) > 0 {
				t.Errorf("unexpected warning: %s", w[0])
			}
		})
	}
}

// TestRetentionNATSExistingStream checks what the transport does with a
// topic's stream that exists with other limits: one that eventgen created
// (as a version without retention did, keeping everything) is updated to
// the configured limits, with a warning; one created by someone else is
// left as it is, with a warning.
func TestRetentionNATSExistingStream(t *testing.T) {
	for _, tt := range []struct {
		name        string
		description func(topic string) string
		updated     bool
		warning     string
	}{
		{"CreatedByEventgen", func(topic string) string { return "eventgen topic " + topic }, true, "updated the stream's limits"},
		{"CreatedByAnOperator", func(string) string { return "" }, false, "not created by eventgen"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := testenv.TransportURL(t, "nats")
			topic := testenv.Topic(t, "retention")
			js := retentionJetStream(t, url)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: natsjs.StreamName(topic), Description: tt.description(topic), Subjects: []string{topic},
				Storage: jetstream.FileStorage, MaxAge: 10 * time.Minute,
			}); err != nil {
				t.Fatal(err)
			}
			tr, logs, _ := openWithRetention(t, "nats", transport.Retention{MaxAge: time.Hour, MaxMessages: 500})
			testenv.DeleteTopicAtCleanup(t, tr, topic)
			publishNow(t, tr, topic, newMessages(1))

			info := retentionStreamInfo(t, url, topic)
			cfg := info.Config
			want := jetstream.StreamConfig{MaxAge: 10 * time.Minute, MaxBytes: -1, MaxMsgs: -1}
			if tt.updated {
				want = jetstream.StreamConfig{MaxAge: time.Hour, MaxBytes: -1, MaxMsgs: 500}
			}
			if cfg.MaxAge != want.MaxAge || cfg.MaxBytes != want.MaxBytes || cfg.MaxMsgs != want.MaxMsgs {
				t.Errorf("stream limits: MaxAge %s, MaxBytes %d, MaxMsgs %d; want %s, %d, %d", cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs, want.MaxAge, want.MaxBytes, want.MaxMsgs)
			}
			if info.State.Msgs != 1 {
				t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
			}
			w := logs.matching(slog.LevelWarn, tt.warning)
			if len(w) != 1 {
				t.Fatalf("%d warnings saying %q, want 1; logs:\n%s", len(w), tt.warning, logs)
			}
			for _, a := range []string{"stream=" + natsjs.StreamName(topic), "max_age=10m0s", "retention_max_age=1h0m0s", "retention_max_msgs=500"} {
				if !strings.Contains(w[0], a) {
					t.Errorf("warning %s does not say %s", w[0], a)
				}
			}

			// Once per stream and process: the next publish asks nothing.
			publishNow(t, tr, topic, newMessages(1))
			if n := len(logs.matching(slog.LevelWarn, tt.warning)); n != 1 {
				t.Errorf("%d warnings after the second publish, want still 1", n)
			}
		})
	}
}

// TestRetentionNATSGroupBehind lets a message expire before its group
// reads it: the group's subscription goes on with the first message still
// in the stream.
func TestRetentionNATSGroupBehind(t *testing.T) {
	tr, _, url := openWithRetention(t, "nats", transport.Retention{MaxAge: time.Second})
	topic := testenv.Topic(t, "retention")
	testenv.DeleteTopicAtCleanup(t, tr, topic)
	sub, err := tr.Subscriber("billing")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	publishNow(t, tr, topic, newMessages(3))
	deadline := time.Now().Add(10 * time.Second)
	for retentionStreamInfo(t, url, topic).State.Msgs > 0 {
		if time.Now().After(deadline) {
			t.Fatal("messages older than MaxAge (1s) still in the stream after 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fresh := newMessages(1)
	publishNow(t, tr, topic, fresh)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	m := nextWithin(t, ch, 10*time.Second)
	checkSame(t, fresh[0], m)
	m.Ack()
}

// TestRetentionRedisMaxMessages publishes ten times MaxMessages to a
// stream: it is trimmed to about MaxMessages (approximately: Redis removes
// whole nodes of the stream, of at most 100 entries), with an age limit
// beside (XADD MINID, then XTRIM MAXLEN) or without (XADD MAXLEN).
func TestRetentionRedisMaxMessages(t *testing.T) {
	const maxMessages, node = 100, 100
	for _, tt := range []struct {
		name string
		r    transport.Retention
	}{
		{"WithDefaultMaxAge", transport.Retention{MaxMessages: maxMessages}},
		{"WithoutMaxAge", transport.Retention{MaxAge: transport.Unlimited, MaxMessages: maxMessages}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, logs, url := openWithRetention(t, "redis", tt.r)
			topic := testenv.Topic(t, "retention")
			testenv.DeleteTopicAtCleanup(t, tr, topic)
			msgs := newMessages(10 * maxMessages)
			for _, m := range msgs {
				publishNow(t, tr, topic, []*message.Message{m})
			}
			rc := retentionRedis(t, url)
			ctx := context.Background()
			n, err := rc.XLen(ctx, topic).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n < maxMessages || n > maxMessages+node {
				t.Errorf("XLEN %d after %d publishes, want %d to %d", n, len(msgs), maxMessages, maxMessages+node)
			}
			last, err := rc.XRevRangeN(ctx, topic, "+", "-", 1).Result()
			if err != nil || len(last) != 1 || last[0].Values["_watermill_message_uuid"] != msgs[len(msgs)-1].UUID {
				t.Errorf("the last entry is %v (%v), want the last message published", last, err)
			}
			if w := logs.matching(slog.LevelWarn, ""); len(w) > 0 {
				t.Errorf("unexpected warning: %s", w[0])
			}
		})
	}
}

// TestRetentionRedisMaxAge fills a stream with entries whose ids say they
// were added 61 minutes ago, and a few 59 minutes ago, then publishes with
// a MaxAge of an hour: the older entries are trimmed (but for those that
// share a node with newer ones), the newer ones stay.
func TestRetentionRedisMaxAge(t *testing.T) {
	tr, _, url := openWithRetention(t, "redis", transport.Retention{MaxAge: time.Hour})
	topic := testenv.Topic(t, "retention")
	testenv.DeleteTopicAtCleanup(t, tr, topic)
	rc := retentionRedis(t, url)
	ctx := context.Background()
	now := time.Now()
	const old, recent = 300, 5
	add := func(at time.Time, n int) {
		for i := range n {
			id := fmt.Sprintf("%d-%d", at.UnixMilli(), i+1)
			if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: topic, ID: id, Values: []string{"f", "v"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(now.Add(-61*time.Minute), old)
	recentAt := now.Add(-59 * time.Minute)
	add(recentAt, recent)
	fresh := newMessages(1)
	publishNow(t, tr, topic, fresh)

	entries, err := rc.XRange(ctx, topic, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var stale, kept int
	for _, e := range entries {
		if strings.HasPrefix(e.ID, fmt.Sprintf("%d-", recentAt.UnixMilli())) {
			kept++
		} else if e.Values["_watermill_message_uuid"] == nil {
			stale++
		}
	}
	if stale >= 100 {
		t.Errorf("%d of %d entries older than MaxAge are left, want fewer than a node (100)", stale, old)
	}
	if kept != recent {
		t.Errorf("%d of %d entries younger than MaxAge are left, want all", kept, recent)
	}
	if last := entries[len(entries)-1]; last.Values["_watermill_message_uuid"] != fresh[0].UUID {
		t.Errorf("the last entry is %v, want the message published", last)
	}
	t.Logf("after the publish: %d entries, %d stale", len(entries), stale)
}

// TestRetentionRedisGroupBehind has a group hold an entry unacked (handed
// back by a subscriber that stopped) and lets its whole node be trimmed by
// age: the group's next subscriber neither stops nor loops nor delivers
// an empty message; it goes on with the entries that are left, and the
// trimmed one leaves the group's pending list.
func TestRetentionRedisGroupBehind(t *testing.T) {
	tr, logs, url := openWithRetention(t, "redis", transport.Retention{MaxAge: time.Second})
	topic := testenv.Topic(t, "retention")
	testenv.DeleteTopicAtCleanup(t, tr, topic)
	first, ch := subscribe(t, tr, "billing", topic)
	old := newMessages(300)
	publishNow(t, tr, topic, old)
	held := nextWithin(t, ch, 10*time.Second)
	if err := first.Close(); err != nil { // hands the entry back, pending
		t.Fatal(err)
	}
	rc := retentionRedis(t, url)
	ctx := context.Background()
	pending := func() int64 {
		p, err := rc.XPending(ctx, topic, "billing").Result()
		if err != nil {
			t.Fatal(err)
		}
		return p.Count
	}
	if n := pending(); n != 1 {
		t.Fatalf("%d entries pending after the subscriber stopped, want 1", n)
	}
	time.Sleep(1100 * time.Millisecond)
	fresh := newMessages(1)
	publishNow(t, tr, topic, fresh) // trims the old entries' full nodes
	first1, err := rc.XRangeN(ctx, topic, "-", "+", 1).Result()
	if err != nil || len(first1) != 1 || first1[0].Values["_watermill_message_uuid"] == held.UUID {
		t.Fatalf("first entry after the trimming publish: %v (%v), want the held entry trimmed", first1, err)
	}

	_, ch = subscribe(t, tr, "billing", topic)
	for {
		m := nextWithin(t, ch, 10*time.Second)
		if m.UUID == "" || m.UUID == held.UUID {
			t.Fatalf("delivered %q: a trimmed entry came back", m.UUID)
		}
		m.Ack()
		if m.UUID == fresh[0].UUID {
			break
		}
	}
	// The last ack reaches Redis just after Ack returns.
	for deadline := time.Now().Add(5 * time.Second); pending() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			p, _ := rc.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: topic, Group: "billing", Start: "-", End: "+", Count: 10}).Result()
			t.Fatalf("entries still pending 5s after the group caught up: %v (the trimmed one was %s)", p, held.UUID)
		}
	}
	if e := logs.matching(slog.LevelError, ""); len(e) > 0 {
		t.Errorf("unexpected error: %s", e[0])
	}
}

// TestRetentionUnboundedWarning opens NATS and Redis with no limit that
// the broker honours, and checks that Open warns, naming the broker and
// the setting; with a limit, it does not. Redis also warns that it
// ignores MaxBytes.
func TestRetentionUnboundedWarning(t *testing.T) {
	for _, tt := range []struct {
		name     string
		r        transport.Retention
		warnings []string
	}{
		{"nats/Unlimited", transport.Retention{MaxAge: transport.Unlimited}, []string{"broker storage is unbounded: Retention.MaxAge is Unlimited and no Retention.MaxBytes or Retention.MaxMessages is set, so NATS JetStream keeps"}},
		{"nats/MaxBytes", transport.Retention{MaxAge: transport.Unlimited, MaxBytes: 1 << 30}, nil},
		{"redis/Unlimited", transport.Retention{MaxAge: transport.Unlimited}, []string{"broker storage is unbounded: Retention.MaxAge is Unlimited and no Retention.MaxMessages is set, so Redis keeps"}},
		{"redis/MaxBytes", transport.Retention{MaxAge: transport.Unlimited, MaxBytes: 1 << 30}, []string{"Retention.MaxBytes is ignored", "broker storage is unbounded"}},
		{"redis/MaxMessages", transport.Retention{MaxAge: transport.Unlimited, MaxMessages: 1000}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, logs, _ := openWithRetention(t, strings.Split(tt.name, "/")[0], tt.r)
			got := logs.matching(slog.LevelWarn, "")
			if len(got) != len(tt.warnings) {
				t.Fatalf("%d warnings, want %d; logs:\n%s", len(got), len(tt.warnings), logs)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %s does not say %q", got[i], w)
				}
			}
		})
	}
}

// openWithRetention opens the broker named name (nats or redis) with r,
// logging to the returned retentionLogs, and returns its URL.
func openWithRetention(t *testing.T, name string, r transport.Retention) (*transport.Transport, *retentionLogs, string) {
	t.Helper()
	url := testenv.TransportURL(t, name)
	logs := newRetentionLogs()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tr, err := transport.Open(ctx, url, transport.Options{Logger: slog.New(logs), Retention: r})
	if err != nil {
		testenv.Unavailable(t, name, err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, logs, url
}

func retentionJetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// retentionStreamInfo reads topic's stream from the server.
func retentionStreamInfo(t *testing.T, url, topic string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := retentionJetStream(t, url).Stream(ctx, natsjs.StreamName(topic))
	if err != nil {
		t.Fatalf("stream of %s: %v", topic, err)
	}
	return s.CachedInfo()
}

func retentionRedis(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	t.Cleanup(func() { rc.Close() })
	return rc
}

// retentionLogs is a slog.Handler that keeps every record, with its
// attributes, as text.
type retentionLogs struct {
	mu    *sync.Mutex
	recs  *[]retentionLog
	attrs []slog.Attr
}

type retentionLog struct {
	level slog.Level
	text  string
}

func newRetentionLogs() *retentionLogs {
	return &retentionLogs{mu: &sync.Mutex{}, recs: &[]retentionLog{}}
}

func (r *retentionLogs) Enabled(context.Context, slog.Level) bool { return true }

func (r *retentionLogs) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	attr := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range r.attrs {
		attr(a)
	}
	rec.Attrs(attr)
	r.mu.Lock()
	*r.recs = append(*r.recs, retentionLog{rec.Level, b.String()})
	r.mu.Unlock()
	return nil
}

func (r *retentionLogs) WithAttrs(as []slog.Attr) slog.Handler {
	return &retentionLogs{mu: r.mu, recs: r.recs, attrs: append(slices.Clip(r.attrs), as...)}
}

func (r *retentionLogs) WithGroup(string) slog.Handler { return r }

// matching returns the records at level that contain s, as text.
func (r *retentionLogs) matching(level slog.Level, s string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range *r.recs {
		if rec.level == level && strings.Contains(rec.text, s) {
			out = append(out, rec.text)
		}
	}
	return out
}

func (r *retentionLogs) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, rec := range *r.recs {
		fmt.Fprintf(&b, "%s %s\n", rec.level, rec.text)
	}
	return b.String()
}
