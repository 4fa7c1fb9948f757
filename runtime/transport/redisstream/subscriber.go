package redisstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

const (
	// claimIdle is how long a pending entry waits before another consumer
	// of its group claims it; a stopping subscription sets its entry's
	// idle time to claimIdle, so that it is claimed at once.
	claimIdle = 30 * time.Second
	// claimInterval is how often a subscription looks for entries to claim.
	claimInterval = 2 * time.Second
	// blockTime bounds each XREADGROUP, so that a subscription notices
	// that it should stop and claims on time.
	blockTime = 100 * time.Millisecond
	// retryWait is the pause after a failed read or claim.
	retryWait = time.Second
	// ackTimeout bounds retrying an XACK, and stopGrace the hand-back of a
	// stopping subscription's entry and the wait for a subscription to
	// stop before Close closes the client under it.
	ackTimeout = 10 * time.Second
	stopGrace  = time.Second
	// staleConsumer is how long a consumer with no pending entries stays
	// idle before a starting subscription deletes it.
	staleConsumer = 10 * time.Minute
)

// subscriber is one replica of a consumer group. Each of its subscriptions
// is a Redis consumer of its own in the group.
type subscriber struct {
	b      *Broker
	client *redis.Client
	group  string
	life   support.Lifecycle
}

// Subscribe creates the group on topic if needed (at the stream's
// beginning) and delivers the group's messages, one at a time.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.life.Serve(func() error {
		return s.createGroup(ctx, topic)
	}, func(closing <-chan struct{}, out chan<- *message.Message) {
		sub := &subscription{s: s, topic: topic, consumer: watermill.NewShortUUID(), out: out,
			log: s.b.slog.With("topic", topic, "group", s.group)}
		sub.run(ctx, closing)
	})
}

// SubscribeInitialize creates the topic's stream and the group on it, at
// the stream's beginning, as the group's first Subscribe would.
func (s *subscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.createGroup(ctx, topic)
}

func (s *subscriber) createGroup(ctx context.Context, topic string) error {
	err := s.client.XGroupCreateMkStream(ctx, topic, s.group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group %s on stream %s: %w", s.group, topic, err)
	}
	return nil
}

// Close stops every subscription, each handing back the entry it holds,
// then closes the client. A subscription that has not stopped within
// stopGrace (a server that stopped answering) has the client closed under
// it, which ends it at once.
func (s *subscriber) Close() error {
	done := make(chan struct{})
	go func() {
		_ = s.life.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stopGrace):
		_ = s.client.Close()
		<-done
	}
	if err := s.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return err
	}
	return nil
}

// subscription reads one topic as one consumer of the group.
type subscription struct {
	s        *subscriber
	topic    string
	consumer string
	out      chan<- *message.Message
	log      *slog.Logger

	claimAt     time.Time // when to look for entries to claim next
	claimCursor string    // XAUTOCLAIM's cursor within a pass; "" between passes
}

// run reads and delivers entries until ctx is done or closing is closed,
// then deletes the consumer if it holds nothing.
func (sub *subscription) run(ctx context.Context, closing <-chan struct{}) {
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-closing:
		}
		close(stop)
	}()
	sub.deleteStaleConsumers(ctx)
	for {
		select {
		case <-stop:
			sub.leave(ctx)
			return
		default:
		}
		xm, err := sub.next(ctx)
		if err != nil {
			select {
			case <-stop:
				continue
			default:
			}
			sub.log.Error("redisstream: read", "error", err)
			if strings.HasPrefix(err.Error(), "NOGROUP") { // the stream was deleted
				if err := sub.s.createGroup(ctx, sub.topic); err != nil {
					sub.log.Error("redisstream: re-create group", "error", err)
				}
			}
			select {
			case <-stop:
			case <-time.After(retryWait):
			}
			continue
		}
		if xm != nil {
			sub.deliver(ctx, *xm, stop)
		}
	}
}

// next returns the next entry to deliver: one claimed from a consumer that
// left it idle for claimIdle, when a claim pass is due, or else a new one.
// It returns nil when there was none within blockTime.
func (sub *subscription) next(ctx context.Context) (*redis.XMessage, error) {
	if now := time.Now(); !now.Before(sub.claimAt) {
		if sub.claimCursor == "" {
			sub.claimCursor = "0-0"
		}
		msgs, cursor, err := sub.s.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: sub.topic, Group: sub.s.group, Consumer: sub.consumer,
			MinIdle: claimIdle, Start: sub.claimCursor, Count: 1,
		}).Result()
		if err != nil {
			sub.claimAt, sub.claimCursor = now.Add(claimInterval), ""
			return nil, fmt.Errorf("claim: %w", err)
		}
		sub.claimCursor = cursor
		if len(msgs) > 0 {
			return &msgs[0], nil
		}
		if cursor == "0-0" { // the pass is over
			sub.claimAt, sub.claimCursor = now.Add(claimInterval), ""
		}
		return nil, nil
	}
	xss, err := sub.s.client.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: sub.s.group, Consumer: sub.consumer, Streams: []string{sub.topic, ">"},
		Count: 1, Block: blockTime,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(xss) == 0 || len(xss[0].Messages) == 0 {
		return nil, nil
	}
	return &xss[0].Messages[0], nil
}

// deliver hands the entry's message to the subscription's channel, again
// after each nack, until it is acked or the subscription stops; it then
// acks the entry, or hands it back.
func (sub *subscription) deliver(ctx context.Context, xm redis.XMessage, stop <-chan struct{}) {
	m0 := sub.decode(xm.Values)
	for {
		// Each delivery gets a context of its own, cancelled once the
		// message is acked or nacked or the subscription stops.
		mctx, cancel := context.WithCancel(ctx)
		m := m0.Copy()
		m.SetContext(mctx)
		acked, settled := sub.offer(m, stop)
		cancel()
		if acked {
			sub.ack(ctx, xm.ID, stop)
			return
		}
		if !settled {
			sub.handBack(ctx, xm.ID)
			return
		}
	}
}

// decode returns the message of an entry's fields. Its payload is the
// payload field's memory, not a copy of it as watermill-redisstream's
// unmarshaller makes, so that an entry is in memory once while it is
// delivered, not twice: a 64 MiB entry costs 64 MiB, which matters most for
// the entries a consumer rejects as too large after reading them whole.
// This is safe because go-redis reads each field into a buffer of its own
// and hands that out as a string, and the field is removed from values, so
// nothing else refers to that memory; a handler that changes the payload in
// place changes only its message.
func (sub *subscription) decode(values map[string]any) *message.Message {
	payload, _ := values[payloadField].(string)
	delete(values, payloadField)
	m, _ := unmarshaller{log: sub.log}.Unmarshal(values)
	m.Payload = unsafe.Slice(unsafe.StringData(payload), len(payload))
	return m
}

// payloadField is the field of an entry that holds the message's payload
// in watermill-redisstream's format.
const payloadField = "payload"

// offer sends m and waits for its ack or nack. settled is false if the
// subscription stopped first; a message acked just then counts as acked.
func (sub *subscription) offer(m *message.Message, stop <-chan struct{}) (acked, settled bool) {
	select {
	case sub.out <- m:
	case <-stop:
		return false, false
	}
	select {
	case <-m.Acked():
		return true, true
	case <-m.Nacked():
		return false, true
	case <-stop:
		if m.Nack() {
			return false, false
		}
		return true, true
	}
}

// ack acknowledges the entry, retrying for ackTimeout (stopGrace once the
// subscription stops): a lost ack would redeliver the message after
// claimIdle.
func (sub *subscription) ack(ctx context.Context, id string, stop <-chan struct{}) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	var err error
	for {
		if err = sub.s.client.XAck(actx, sub.topic, sub.s.group, id).Err(); err == nil {
			return
		}
		select {
		case <-actx.Done():
			sub.log.Error("redisstream: ack", "id", id, "error", err)
			return
		case <-stop:
			sub.log.Error("redisstream: ack while stopping", "id", id, "error", err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// handBack makes the entry claimable by the group's other consumers at
// once, by setting its idle time to claimIdle. If that fails, the entry is
// claimed once it has been idle that long anyway.
func (sub *subscription) handBack(ctx context.Context, id string) {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
	defer cancel()
	err := sub.s.client.Do(hctx, "XCLAIM", sub.topic, sub.s.group, sub.consumer, 0, id,
		"IDLE", claimIdle.Milliseconds(), "JUSTID").Err()
	if err != nil {
		sub.log.Warn("redisstream: hand back an unacked message; it is redelivered after the claim delay", "id", id, "error", err)
	}
}

// leave deletes the subscription's consumer from the group, unless it
// still has pending entries (handed back, or whose ack failed), which the
// deletion would make unclaimable.
func (sub *subscription) leave(ctx context.Context) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
	defer cancel()
	pending, err := sub.s.client.XPendingExt(lctx, &redis.XPendingExtArgs{
		Stream: sub.topic, Group: sub.s.group, Consumer: sub.consumer, Start: "-", End: "+", Count: 1,
	}).Result()
	if err != nil || len(pending) > 0 {
		return
	}
	_ = sub.s.client.XGroupDelConsumer(lctx, sub.topic, sub.s.group, sub.consumer).Err()
}

// deleteStaleConsumers deletes the group's consumers that have had no
// pending entry and no activity for staleConsumer: those of subscribers
// that crashed, or stopped with entries that were claimed since.
func (sub *subscription) deleteStaleConsumers(ctx context.Context) {
	cs, err := sub.s.client.XInfoConsumers(ctx, sub.topic, sub.s.group).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Pending == 0 && c.Idle >= staleConsumer {
			_ = sub.s.client.XGroupDelConsumer(ctx, sub.topic, sub.s.group, c.Name).Err()
		}
	}
}
