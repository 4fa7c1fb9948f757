package transport_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/eventgen/eventgen/runtime/internal/testenv"
	"github.com/eventgen/eventgen/runtime/transport"
)

// TestOpenFailureHidesPassword opens every kind of URL with a password at
// an address where nothing listens (port 1), or malformed, and checks that
// neither the error nor the logs show the password. No service is needed.
func TestOpenFailureHidesPassword(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	urls := []string{
		"amqp://user:" + secret + "@127.0.0.1:1/",
		"amqps://user:" + secret + "@127.0.0.1:1/vhost",
		"nats://user:" + secret + "@127.0.0.1:1",
		"nats://" + secret + "@127.0.0.1:1", // token
		"redis://user:" + secret + "@127.0.0.1:1/0",
		"redis://:" + secret + "@127.0.0.1:1/0",
		"postgres://user:" + secret + "@127.0.0.1:1/db?sslmode=disable",
		"postgres://user@127.0.0.1:1/db?sslmode=disable&password=" + secret,
		"mysql://user:" + secret + "@127.0.0.1:1/db",
		"ftp://user:" + secret + "@127.0.0.1:1/",
		"amqp://user:" + secret + "%zz@127.0.0.1:1/", // malformed escape
		"amqp://user:" + secret + "@127.0.0.1:port/", // malformed port
		"nats://user:" + secret + "@[::1/",           // malformed host
	}
	for _, u := range urls {
		t.Run(strings.SplitN(u, ":", 2)[0], func(t *testing.T) {
			var logs bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tr, err := transport.Open(ctx, u, transport.Options{
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug - 4})),
			})
			if err == nil {
				tr.Close()
				t.Fatalf("Open(%s) succeeded, want an error", transport.Redact(u))
			}
			if text := err.Error() + fmt.Sprintf("%+v %#v", err, err); strings.Contains(text, secret) {
				t.Errorf("error shows the password: %s", text)
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs show the password:\n%s", logs.String())
			}
			t.Logf("%v", err)
		})
	}
}

func TestRedact(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"amqp://guest:guest@localhost:5672/", "amqp://guest:xxxxx@localhost:5672/"},
		{"nats://localhost:4222", "nats://localhost:4222"},
		{"postgres://u@h/db?password=p&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"redis://:pw@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"amqp://u:p%zz@h/", "(malformed URL)"},
	} {
		if got := transport.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestOpenDefaultIsInProcess(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, u := range []string{"", "mem://", "gochannel://"} {
		tr, err := transport.Open(context.Background(), u, transport.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if tr.Scheme() != "mem" && tr.Scheme() != "gochannel" {
			t.Errorf("Open(%q).Scheme() = %q", u, tr.Scheme())
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// TestNames checks the topic and group rules on every transport: the same
// names are accepted or refused everywhere, before the broker is asked.
func TestNames(t *testing.T) {
	badTopics := []string{"", "shop orders", ".orders", "shop.", "shop..orders", "shop.*", "shop.>", "shop/orders", "shöp", strings.Repeat("a", 201)}
	badGroups := []string{"", "bill.ing", "bill ing", "bill*", strings.Repeat("g", 65)}
	for _, tc := range append(testenv.Transports(t), testenv.SQLTransports(t)...) {
		t.Run(tc.Name, func(t *testing.T) {
			tr := tc.Open(t)
			for _, g := range badGroups {
				if sub, err := tr.Subscriber(g); err == nil {
					sub.Close()
					t.Errorf("Subscriber(%q) succeeded", g)
				}
			}
			sub, err := tr.Subscriber("billing")
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			for _, topic := range badTopics {
				if err := tr.Publisher().Publish(topic, message.NewMessage("id", nil)); err == nil {
					t.Errorf("Publish(%q) succeeded", topic)
				}
				if _, err := sub.Subscribe(context.Background(), topic); err == nil {
					t.Errorf("Subscribe(%q) succeeded", topic)
				}
				if err := tr.DeleteTopic(context.Background(), topic); err == nil {
					t.Errorf("DeleteTopic(%q) succeeded", topic)
				}
			}
		})
	}
}

// TestSQLTopicLength checks that the SQL transport refuses a topic whose
// offsets table name the database would truncate, rather than let two long
// topics share a table.
func TestSQLTopicLength(t *testing.T) {
	for _, tc := range testenv.SQLTransports(t) {
		t.Run(tc.Name, func(t *testing.T) {
			tr := tc.Open(t)
			long := "test." + strings.Repeat("x", 60)
			if err := tr.Publisher().Publish(long, message.NewMessage("id", nil)); err == nil || !strings.Contains(err.Error(), "longer than") {
				t.Errorf("Publish(%d-character topic) = %v, want a length error", len(long), err)
			}
		})
	}
}

// TestNATSStreamNameCollision checks that two topics mapping to one stream
// name (dots become underscores) are reported instead of mixed.
func TestNATSStreamNameCollision(t *testing.T) {
	for _, tc := range testenv.Transports(t) {
		if tc.Name != "nats" {
			continue
		}
		tr := tc.Open(t)
		dotted := testenv.Topic(t, "collide")
		underscored := strings.ReplaceAll(dotted, ".", "_")
		testenv.DeleteTopicAtCleanup(t, tr, dotted)
		if err := tr.Publisher().Publish(dotted, message.NewMessage("a", nil)); err != nil {
			t.Fatal(err)
		}
		err := tr.Publisher().Publish(underscored, message.NewMessage("b", nil))
		if err == nil || !strings.Contains(err.Error(), "cannot share") {
			t.Errorf("Publish(%s) after Publish(%s) = %v, want a collision error", underscored, dotted, err)
		}
	}
}
