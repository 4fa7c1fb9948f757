package eventgen

import (
	"time"
)

// PublishOption changes how [Outbox.Publish] writes events.
type PublishOption func(*publishConfig)

type publishConfig struct {
	delay     time.Duration
	deliverAt time.Time
	headers   map[string]string
}

// WithDelay schedules delivery d after the write, measured on the database's
// clock. The row stays scheduled until then.
func WithDelay(d time.Duration) PublishOption {
	return func(c *publishConfig) { c.delay = d; c.deliverAt = time.Time{} }
}

// WithDeliverAt schedules delivery at t. Because the outbox keeps time on the
// database's clock, t is converted to a delay from the application's clock at
// the moment of the call.
func WithDeliverAt(t time.Time) PublishOption {
	return func(c *publishConfig) { c.deliverAt = t; c.delay = 0 }
}

// WithHeader adds a header to the published message. Names that a broker
// binding uses for the CloudEvents attributes (starting with ce_, ce- or
// cloudEvents_, in any case, and content-type) are reserved, as are names
// starting with _ (the brokers'): Publish rejects them.
func WithHeader(key, value string) PublishOption {
	return func(c *publishConfig) {
		if c.headers == nil {
			c.headers = make(map[string]string)
		}
		c.headers[key] = value
	}
}

func newPublishConfig(opts []PublishOption) publishConfig {
	var c publishConfig
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if !c.deliverAt.IsZero() {
		c.delay = time.Until(c.deliverAt)
	}
	if c.delay < 0 {
		c.delay = 0
	}
	return c
}
