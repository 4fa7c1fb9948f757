package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/transport"
)

// wanted are the summary's expected counts.
type wanted struct {
	published                       int // events
	billing, shipping               int // events handled
	billingStreams, shippingStreams int // streams (topic and key) applied
}

// want returns the summary's expected counts for n orders, worked out
// from the baskets rather than taken from the program's own expect.
func want(n int) wanted {
	var lines, paid int
	skus := make(map[string]bool)
	for i := 1; i <= n; i++ {
		for _, l := range basket(i) {
			skus[l.Sku] = true
		}
		lines += len(basket(i))
		if total(basket(i)) <= creditLimit {
			paid++
		}
	}
	return wanted{
		// OrderPlaced, reservations, PaymentCaptured or OrderCancelled, OrderShipped if paid.
		published: n + lines + n + paid,
		billing:   2 * n,
		shipping:  lines + n,
		// billing: each order's stream on orders (OrderPlaced, then
		// OrderCancelled if declined) and each paid order's on payments.
		billingStreams: n + paid,
		// shipping: each SKU's stream on inventory, each paid order's on
		// payments, each declined order's on orders (OrderCancelled).
		shippingStreams: len(skus) + paid + (n - paid),
	}
}

// runShop runs the program and checks its exit code and summary.
func runShop(t *testing.T, orders int, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := run(ctx, args, &stdout, &stderr)
	out := stdout.String()
	if code != 0 {
		t.Fatalf("shop %s = %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, stderr.String())
	}
	w := want(orders)
	for _, c := range []struct {
		pattern string
		want    int
	}{
		{`(?m)^  orders +(\d+) committed, 1 rolled back$`, orders},
		{`(?m)^  published +(\d+) of \d+ events`, w.published},
		{`(?m)^  billing +(\d+) of \d+ events handled, \d+ effect rows`, w.billing},
		{`(?m)^  billing +\d+ of \d+ events handled, (\d+) effect rows`, w.billing},
		{`(?m)^  shipping +(\d+) of \d+ events handled, \d+ effect rows`, w.shipping},
		{`(?m)^  shipping +\d+ of \d+ events handled, (\d+) effect rows`, w.shipping},
		{`(?m)^  in order +billing: (\d+) of \d+ streams applied in commit order \(\d+ out of order\)$`, w.billingStreams},
		{`(?m)^  in order +billing: \d+ of (\d+) streams applied in commit order \(\d+ out of order\)$`, w.billingStreams},
		{`(?m)^  in order +billing: \d+ of \d+ streams applied in commit order \((\d+) out of order\)$`, 0},
		{`(?m)^  in order +shipping: (\d+) of \d+ streams applied in commit order \(\d+ out of order\)$`, w.shippingStreams},
		{`(?m)^  in order +shipping: \d+ of (\d+) streams applied in commit order \(\d+ out of order\)$`, w.shippingStreams},
		{`(?m)^  in order +shipping: \d+ of \d+ streams applied in commit order \((\d+) out of order\)$`, 0},
		{`(?m)^  rolled back +order [0-9a-f]{8}: (\d+) events published, 0 handled$`, 0},
	} {
		m := regexp.MustCompile(c.pattern).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("summary has no line matching %s:\n%s", c.pattern, out)
			continue
		}
		if got, _ := strconv.Atoi(m[1]); got != c.want {
			t.Errorf("%s: got %d, want %d", c.pattern, got, c.want)
		}
	}
	// How many events the relay sent early varies from run to run.
	if !regexp.MustCompile(`(?m)^  sent early +\d+ of \d+ events reached the broker before an earlier event of their stream; `).MatchString(out) {
		t.Errorf("summary has no sent early line:\n%s", out)
	}
	if strings.Contains(out, "MISMATCH") || stderr.Len() > 0 {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, stderr.String())
	}
	return out
}

// TestDefaults runs the program as the README does: no flags, SQLite in a
// temporary directory and the in-process broker.
func TestDefaults(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	out := runShop(t, 20)
	for _, s := range []string{
		"database  sqlite ", "(deleted at exit", "broker    mem:// (in process)\n",
		"shop     order  1 ", "OrderPlaced and 2 inventory.stock-reserved committed",
		"shop     order 21 ", ": out of stock, rolled back with its ",
		"relay    OrderPlaced ", "billing  OrderPlaced ", "→ PaymentCaptured", "declined → OrderCancelled",
		"shipping PaymentCaptured ", "shipped → OrderShipped", "shipping OrderCancelled ",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestQuietWithAFile(t *testing.T) {
	path := t.TempDir() + "/shop.db"
	out := runShop(t, 3, "-q", "-orders", "3", "-db", path)
	if strings.Contains(out, "relay ") || !strings.HasPrefix(out, "database  sqlite "+path+"\n") {
		t.Errorf("-q printed:\n%s", out)
	}
	// A second run on the same file counts only its own orders.
	runShop(t, 2, "-q", "-orders", "2", "-db", path)
}

// TestServices runs the program on PostgreSQL with RabbitMQ and with NATS
// JetStream, when their variables are set.
func TestServices(t *testing.T) {
	for _, broker := range []string{"amqp", "nats"} {
		t.Run("postgres+"+broker, func(t *testing.T) {
			db := testservices.Database{Name: "postgres", DSN: testservices.Require(t, "postgres")}
			db.Open(t) // skips if unreachable
			url := testservices.Require(t, broker)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tr, err := transport.Open(ctx, url, transport.Options{})
			if err != nil {
				testservices.Unavailable(t, broker, err)
			}
			tr.Close()
			out := runShop(t, 20, "-q", "-db", db.DSN, "-broker", url)
			if !strings.Contains(out, "database  postgres ") || !strings.Contains(out, "broker    "+transport.Redact(url)+"\n") {
				t.Errorf("header:\n%s", out)
			}
		})
	}
}

func TestPasswordsAreNotPrinted(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-db", "postgres://u:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"}, &stdout, &stderr)
	if code != 1 || strings.Contains(stdout.String()+stderr.String(), "s3cret") || !strings.Contains(stderr.String(), "u:xxxxx@") {
		t.Errorf("shop -db with a password = %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"-broker", "amqp://u:s3cret@127.0.0.1:1/"}, &stdout, &stderr)
	if code != 1 || strings.Contains(stdout.String()+stderr.String(), "s3cret") {
		t.Errorf("shop -broker with a password = %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
}

// TestUnrecognisedDSN checks that a -db value of no known form, such as
// PostgreSQL's keyword/value form, is refused without being printed, and
// is not taken for the name of a SQLite file to create.
func TestUnrecognisedDSN(t *testing.T) {
	t.Chdir(t.TempDir())
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-db", "host=db user=u password=secret dbname=shop"}, &stdout, &stderr)
	if code != 1 || strings.Contains(stdout.String()+stderr.String(), "secret") || !strings.Contains(stderr.String(), "unrecognised -db value: want postgres://") {
		t.Errorf("shop -db keyword/value = %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	if entries, err := os.ReadDir("."); err != nil || len(entries) > 0 {
		t.Errorf("files created: %v, %v", entries, err)
	}
}

func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"-h"}, 0, "-orders int"},
		{[]string{"-orders", "0"}, 2, "shop: -orders must be at least 1"},
		{[]string{"-timeout", "0s"}, 2, "shop: -timeout must be positive"},
		{[]string{"extra"}, 2, `shop: unexpected argument "extra"`},
		{[]string{"-nope"}, 2, "flag provided but not defined: -nope"},
		{[]string{"-db", "oracle://x"}, 1, `unsupported database DSN scheme "oracle"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("shop %s = %d, stderr:\n%s", strings.Join(tt.args, " "), code, stderr.String())
		}
	}
}
