package support

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Unlimited, in a field of Retention, lifts that limit.
const Unlimited = -1

// DefaultMaxAge is the age limit of a Retention whose MaxAge is 0: long
// enough that a consumer group that is down for a day, or a long weekend,
// loses nothing.
const DefaultMaxAge = 7 * 24 * time.Hour

// minMaxAge is the shortest MaxAge accepted.
const minMaxAge = time.Second

// Retention bounds how much of each topic a broker keeps, messages that
// every group has acknowledged included: a message is removed once it is
// past any one of the limits, whether or not every group has read it. NATS
// JetStream honours all three limits, Redis Streams MaxAge and MaxMessages
// (it has no limit by bytes: bound its memory with maxmemory); the other
// brokers ignore Retention (RabbitMQ queues are emptied as their group
// consumes them, and the SQL transport's tables are never trimmed).
//
// The zero value keeps messages for DefaultMaxAge, with no limit by count
// or size.
type Retention struct {
	// MaxAge removes messages older than this: DefaultMaxAge (7 days)
	// when 0, none when Unlimited (-1). Otherwise at least a second.
	MaxAge time.Duration
	// MaxBytes bounds the bytes a topic's stream holds, removing its
	// oldest messages to make room (NATS). 0 or Unlimited: no limit.
	MaxBytes int64
	// MaxMessages bounds the messages a topic's stream holds, removing
	// its oldest ones to make room (NATS, and Redis approximately). 0 or
	// Unlimited: no limit.
	MaxMessages int64
}

// Limits is a checked Retention with its defaults applied: a limit that is
// not set is 0.
type Limits struct {
	MaxAge      time.Duration
	MaxBytes    int64
	MaxMessages int64
}

// Check applies r's defaults, or reports every field that holds a value
// that Retention does not accept.
func (r Retention) Check(pkg string) (Limits, error) {
	var errs []error
	l := Limits{MaxAge: r.MaxAge, MaxBytes: r.MaxBytes, MaxMessages: r.MaxMessages}
	switch {
	case r.MaxAge == 0:
		l.MaxAge = DefaultMaxAge
	case r.MaxAge == Unlimited:
		l.MaxAge = 0
	case r.MaxAge < minMaxAge:
		errs = append(errs, fmt.Errorf("%s: Retention.MaxAge is %s; want 0 (the default, %s), Unlimited (-1) or at least %s", pkg, r.MaxAge, DefaultMaxAge, minMaxAge))
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"MaxBytes", &l.MaxBytes}, {"MaxMessages", &l.MaxMessages}} {
		switch {
		case *f.v == Unlimited:
			*f.v = 0
		case *f.v < 0:
			errs = append(errs, fmt.Errorf("%s: Retention.%s is %d; want 0 or Unlimited (-1) for no limit, or a positive limit", pkg, f.name, *f.v))
		}
	}
	if len(errs) > 0 {
		return Limits{}, errors.Join(errs...)
	}
	return l, nil
}

// WarnUnbounded logs a warning on log when l sets none of the limits that
// the broker honours (bytes tells whether it honours MaxBytes): its
// topics then grow until they are deleted.
func (l Limits) WarnUnbounded(log *slog.Logger, pkg, broker string, bytes bool) {
	if l.MaxAge > 0 || l.MaxMessages > 0 || bytes && l.MaxBytes > 0 {
		return
	}
	limits := "Retention.MaxMessages"
	if bytes {
		limits = "Retention.MaxBytes or " + limits
	}
	log.Warn(pkg+": broker storage is unbounded: Retention.MaxAge is Unlimited and no "+limits+" is set, so "+broker+" keeps every message of every topic until the topic is deleted",
		"broker", broker)
}
