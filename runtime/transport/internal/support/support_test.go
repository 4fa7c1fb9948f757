package support

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

const secret = "hunter2-secret"

func TestParseRedacts(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"amqp://guest:" + secret + "@h:5672/", "amqp://guest:xxxxx@h:5672/"},
		{"nats://" + secret + "@h:4222", "nats://xxxxx@h:4222"},
		{"redis://default@h:6379/0", "redis://default@h:6379/0"},
		{"postgres://u@h/db?sslmode=disable&PassWord=" + secret, "postgres://u@h/db?PassWord=xxxxx&sslmode=disable"},
		{"mysql://u:p%40" + secret + "@h/db", "mysql://u:xxxxx@h/db"},
	} {
		ep, err := Parse("test", tt.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.in, err)
		}
		if ep.Redacted != tt.want {
			t.Errorf("Parse(%q).Redacted = %q, want %q", tt.in, ep.Redacted, tt.want)
		}
		if got := ep.Redact("dial " + tt.in + " failed"); strings.Contains(got, secret) {
			t.Errorf("Redact left the secret in %q", got)
		}
	}
}

func TestErrorfMasksAndUnwraps(t *testing.T) {
	ep, err := Parse("test", "amqp://u:"+secret+"@h/")
	if err != nil {
		t.Fatal(err)
	}
	inner := fmt.Errorf("auth %s rejected: %w", secret, context.DeadlineExceeded)
	got := ep.Errorf("amqp: connect: %w", inner)
	if strings.Contains(got.Error(), secret) {
		t.Errorf("Error() = %q, shows the secret", got)
	}
	if !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, DeadlineExceeded) = false", got)
	}
}

func TestLoggerMasks(t *testing.T) {
	ep, err := Parse("test", "redis://:"+secret+"@h/0")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := ep.Logger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})))
	log = log.With("url", "redis://:"+secret+"@h/0").WithGroup("g")
	log.Error("cannot auth with "+secret,
		"error", errors.New("WRONGPASS "+secret),
		slog.Group("conn", "password", secret),
		"stringer", stringer(secret),
		"n", 3)
	wm := Watermill(log)
	wm.Error("watermill "+secret, errors.New(secret), watermill.LogFields{"f": secret})
	wm.With(watermill.LogFields{"w": secret}).Info("info", nil)
	if strings.Contains(buf.String(), secret) {
		t.Errorf("logs show the secret:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), `"n":3`) {
		t.Errorf("logs lost a number attribute:\n%s", buf.String())
	}
}

// TestLoggerSurvivesNilPointerError logs an error interface holding a nil
// pointer, as amqp091 hands watermill-amqp when a connection closes
// cleanly: the masking handler must log it, not panic.
func TestLoggerSurvivesNilPointerError(t *testing.T) {
	ep, err := Parse("test", "amqp://u:"+secret+"@h/")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var closeErr *nilError
	Watermill(ep.Logger(slog.New(slog.NewTextHandler(&buf, nil)))).Error("connection closed", closeErr, nil)
	if !strings.Contains(buf.String(), "connection closed") {
		t.Errorf("nothing logged:\n%s", buf.String())
	}
}

type nilError struct{ reason string }

func (e *nilError) Error() string { return e.reason }

type stringer string

func (s stringer) String() string { return string(s) }

func TestWatermillCancelledIsDebug(t *testing.T) {
	var buf bytes.Buffer
	wm := Watermill(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	wm.Error("read failed", fmt.Errorf("read: %w", context.Canceled), nil)
	wm.Info("connected", nil)
	if buf.Len() != 0 {
		t.Errorf("at Info level, want nothing logged; got:\n%s", buf.String())
	}
	wm.Error("read failed", errors.New("boom"), nil)
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Errorf("want an error logged; got:\n%s", buf.String())
	}
}

func TestClosersNewestFirst(t *testing.T) {
	var c Closers
	var order []int
	for i := range 3 {
		if _, err := c.Add(func() error { order = append(order, i); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	closeMiddle, err := c.Add(func() error { order = append(order, 99); return nil })
	if err != nil {
		t.Fatal(err)
	}
	closeMiddle()
	closeMiddle() // once only
	if err := c.CloseAll(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(order); got != "[99 2 1 0]" {
		t.Errorf("close order = %s, want [99 2 1 0]", got)
	}
	if _, err := c.Add(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after CloseAll = %v, want ErrClosed", err)
	}
}

func TestLifecycle(t *testing.T) {
	var l Lifecycle
	stopped := make(chan struct{})
	if err := l.Start(func() error { return nil }, func(closing <-chan struct{}) { <-closing; close(stopped) }); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := l.Start(func() error { return boom }, func(<-chan struct{}) { t.Error("run after failed setup") }); !errors.Is(err, boom) {
		t.Errorf("Start with failing setup = %v", err)
	}
	l.Close()
	select {
	case <-stopped:
	default:
		t.Error("Close returned before run did")
	}
	l.Close()
	if err := l.Start(func() error { return nil }, func(<-chan struct{}) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestValidate(t *testing.T) {
	for _, ok := range []string{"orders", "shop.orders", "a-b_c.D9", strings.Repeat("a", MaxTopicLen)} {
		if err := ValidateTopic(ok); err != nil {
			t.Errorf("ValidateTopic(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".a", "a.", "a..b", "a b", "a*", "a>", "é", strings.Repeat("a", MaxTopicLen+1)} {
		if err := ValidateTopic(bad); err == nil {
			t.Errorf("ValidateTopic(%q) = nil", bad)
		}
	}
	for _, ok := range []string{"billing", "Billing-2", "a_b"} {
		if err := ValidateGroup(ok); err != nil {
			t.Errorf("ValidateGroup(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", strings.Repeat("g", MaxGroupLen+1)} {
		if err := ValidateGroup(bad); err == nil {
			t.Errorf("ValidateGroup(%q) = nil", bad)
		}
	}
}
