package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/internal/backoff"
	"github.com/eventgen/eventgen/runtime/transport/internal/support"
)

// closeTimeout bounds the close handshake with a broker that may not
// answer; after it, the connection is dropped without one.
const closeTimeout = time.Second

// redialBackoff paces reconnects after failed dials, so that an outage
// costs one dial per step rather than one per call.
var redialBackoff = backoff.Policy{Base: 100 * time.Millisecond, Max: 5 * time.Second}

// connector keeps one connection to RabbitMQ: it dials on demand, one dial
// at a time, with backoff while dials fail, and dials again once the
// connection has closed or was dropped. amqp091 never reopens a connection
// itself.
type connector struct {
	dial func(context.Context) (*amqp091.Connection, error)
	log  *slog.Logger
	role string // publisher or subscribers, for logs

	mu        sync.Mutex
	closed    bool
	closing   chan struct{} // closed by close
	conn      *amqp091.Connection
	dialing   chan struct{} // closed when the dial in progress ends
	dialErr   error         // the last failed dial, returned until retryAt
	retryAt   time.Time
	dialFails int
	dials     int // successful dials
}

func newConnector(role string, log *slog.Logger, dial func(context.Context) (*amqp091.Connection, error)) *connector {
	return &connector{dial: dial, log: log, role: role, closing: make(chan struct{})}
}

// get returns the open connection, dialling one if there is none. While
// dials fail it returns the last dial's error at once until the next
// attempt is due.
func (c *connector) get(ctx context.Context) (*amqp091.Connection, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, support.ErrClosed
		}
		if c.conn != nil && !c.conn.IsClosed() {
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		}
		c.conn = nil
		if wait := c.dialing; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for the connection: %w", context.Cause(ctx))
			}
		}
		if time.Now().Before(c.retryAt) {
			err := c.dialErr
			c.mu.Unlock()
			return nil, &notConnectedError{err: err}
		}
		done := make(chan struct{})
		c.dialing = done
		c.mu.Unlock()

		conn, err := c.dial(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(done)
		if err != nil {
			c.dialFails++
			c.dialErr = err
			c.retryAt = time.Now().Add(redialBackoff.Delay(c.dialFails))
			c.mu.Unlock()
			return nil, fmt.Errorf("connect: %w", err)
		}
		if c.closed {
			c.mu.Unlock()
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return nil, support.ErrClosed
		}
		c.dialFails, c.dialErr, c.retryAt = 0, nil, time.Time{}
		c.dials++
		c.conn = conn
		reconnected := c.dials > 1
		c.mu.Unlock()
		if reconnected {
			c.log.Info("amqp: reconnected", slog.String("connection", c.role))
		}
		return conn, nil
	}
}

// wait is get for callers that can wait: it retries through the backoff
// until it has a connection, ctx is done, stop is closed or the connector
// is.
func (c *connector) wait(ctx context.Context, stop <-chan struct{}) (*amqp091.Connection, error) {
	for {
		conn, err := c.get(ctx)
		var nc *notConnectedError
		if !errors.As(err, &nc) {
			return conn, err
		}
		c.mu.Lock()
		delay := time.Until(c.retryAt)
		c.mu.Unlock()
		t := time.NewTimer(max(delay, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-stop:
			t.Stop()
			return nil, support.ErrClosed
		case <-c.closing:
			t.Stop()
			return nil, support.ErrClosed
		}
	}
}

// drop closes conn, if it is still the connector's, so that the next get
// dials a new one. It is for connections that stopped answering, or
// answer too slowly to trust.
func (c *connector) drop(conn *amqp091.Connection, why error) {
	c.mu.Lock()
	current := c.conn == conn
	if current {
		c.conn = nil
	}
	c.mu.Unlock()
	if !current {
		return
	}
	if !conn.IsClosed() {
		c.log.Warn("amqp: connection dropped; a new one is dialled when next needed",
			slog.String("connection", c.role), slog.Any("error", why))
	}
	_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
}

// close closes the connection; later calls to get fail with
// support.ErrClosed. It returns within about closeTimeout, and is safe to
// call more than once.
func (c *connector) close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	if err := conn.CloseDeadline(time.Now().Add(closeTimeout)); err != nil && !errors.Is(err, amqp091.ErrClosed) && !conn.IsClosed() {
		return fmt.Errorf("close %s connection: %w", c.role, err)
	}
	return nil
}

// notConnectedError is returned while dials fail and the next is not due.
type notConnectedError struct{ err error }

func (e *notConnectedError) Error() string {
	return fmt.Sprintf("not connected (reconnecting with backoff): %v", e.err)
}

func (e *notConnectedError) Unwrap() error { return e.err }
