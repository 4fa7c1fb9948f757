package opscli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/internal/cli"
	"github.com/eventgen/eventgen/internal/testservices"
	"github.com/eventgen/eventgen/runtime/eventgen"
	"github.com/eventgen/eventgen/runtime/transport"
)

// keyed returns event n of the order named by the byte k: the events of
// one order share its key.
func keyed(k byte, n int) shopevents.PaymentCaptured {
	p := payment(n)
	p.OrderID = [16]byte{0: k, 15: k}
	p.PaymentID = fmt.Sprintf("pay-%c-%d", k, n)
	return p
}

// TestBlockedKeySkipAndReexecute blocks two keys of a group on their first
// event (its handler fails for good), then unblocks one from the CLI with
// inbox reexecute and the other with inbox skip: a consumer whose handler
// now works applies each key's events in order, and never the skipped one.
func TestBlockedKeySkipAndReexecute(t *testing.T) {
	for _, d := range testservices.Databases(t) {
		t.Run(d.Name, func(t *testing.T) { testBlockedKeySkipAndReexecute(t, d) })
	}
}

func testBlockedKeySkipAndReexecute(t *testing.T, d testservices.Database) {
	db := d.Open(t)
	ctx := context.Background()
	inbox, outbox := tableName(t, "cli_inbox"), tableName(t, "cli_outbox")
	dropAtCleanup(t, db, inbox, inbox+"_keys", outbox, outbox+"_keys") // and the key tables of per-key ordering
	tr, err := transport.Open(ctx, "", transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	// Keys A and B fail their first event for good; key C never fails.
	var mu sync.Mutex
	var handled []string // payment ids, in the order handled
	fixed := false
	handler := func(_ context.Context, e shopevents.PaymentCaptured, m eventgen.Metadata) error {
		mu.Lock()
		defer mu.Unlock()
		if !fixed && m.Sequence == 1 && e.OrderID[0] != 'C' {
			return errors.New("ledger <locked>")
		}
		handled = append(handled, e.PaymentID)
		return nil
	}
	consumer := newBillingConsumer(t, db, tr, inbox, handler)
	ob := newOutbox(t, db, outbox, tr.Publisher())
	pub := shopevents.NewPublisher(ob)
	for n := 1; n <= 3; n++ {
		for _, k := range []byte("ABC") {
			if err := pub.PublishPaymentCaptured(ctx, db, keyed(k, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	stopRelay := startRelay(ob)
	defer stopRelay()
	runUntil(t, consumer.Run, func() bool {
		keys, err := consumer.BlockedKeys(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		done, err := consumer.Rows(ctx, eventgen.RowFilter{Status: "succeeded"})
		if err != nil {
			t.Fatal(err)
		}
		return len(keys) == 2 && keys[0].Waiting == 2 && keys[1].Waiting == 2 && keys[0].NextStatus == "failed" && keys[1].NextStatus == "failed" &&
			len(done.Rows) == 3 // C's three, committed
	})

	dir := t.TempDir()
	t.Setenv(EnvDSN, d.DSN)
	args := func(a ...string) []string { return append(a, "-table", inbox, "-group", shopevents.GroupBilling) }
	code, stdout, stderr := run(t, dir, args("inbox", "blocked", "-json")...)
	var keys []blockedJSON
	if err := json.Unmarshal([]byte(stdout), &keys); code != cli.ExitOK || err != nil || len(keys) != 2 {
		t.Fatalf("inbox blocked -json = %d, %v, %s:\n%s", code, err, stderr, stdout)
	}
	byOrder := map[byte]blockedJSON{}
	for _, k := range keys {
		if k.Applied != 0 || k.Next != 1 || k.NextStatus != "failed" || k.Waiting != 2 || k.Since == nil ||
			k.NextMessageID == "" || !strings.HasSuffix(k.LastError, "ledger <locked>") || k.Topic != shopevents.TopicPayments {
			t.Errorf("blocked key %+v", k)
		}
		byOrder[uuidFirstByte(t, k.Key)] = k
	}
	a, b := byOrder['A'], byOrder['B']
	if a.Key == "" || b.Key == "" {
		t.Fatalf("blocked keys %+v, want those of orders A and B", keys)
	}
	code, stdout, _ = run(t, dir, args("inbox", "failed", "-json")...)
	var failed []rowJSON
	if err := json.Unmarshal([]byte(stdout), &failed); code != cli.ExitOK || err != nil || len(failed) != 2 ||
		failed[0].Waiting != 2 || failed[1].Waiting != 2 || failed[0].Sequence != 1 {
		t.Fatalf("inbox failed -json = %d, %v: want both failed events blocking 2 each\n%s", code, err, stdout)
	}
	code, stdout, _ = run(t, dir, args("inbox", "blocked")...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "KEY ") || !strings.Contains(stdout, a.Key) ||
		!strings.Contains(stdout, " failed ") || !strings.Contains(stdout, "ledger <locked>") {
		t.Fatalf("inbox blocked = %d:\n%s", code, stdout)
	}

	skipArgs := args("inbox", "skip", "-source", b.Source, "-topic", b.Topic, "-key", b.Key)
	code, stdout, _ = run(t, dir, append(skipArgs, "-dry-run")...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "dry run: skip would mark event 1 (failed, message id "+b.NextMessageID+") of key") ||
		!strings.Contains(stdout, "the 2 events held behind it would run; nothing changed") {
		t.Fatalf("inbox skip -dry-run = %d, %q", code, stdout)
	}
	code, _, stderr = runIn(t, dir, "no\n", skipArgs...)
	if code != cli.ExitFailure || !strings.Contains(stderr, "Type yes to go on") || !strings.Contains(stderr, "not confirmed; nothing changed") {
		t.Fatalf("inbox skip, not confirmed = %d, %q", code, stderr)
	}
	if k, blocked, err := consumer.BlockedKey(ctx, b.Source, b.Topic, b.Key); err != nil || !blocked || k.Next.Sequence != 1 {
		t.Fatalf("after a dry run and a refusal the key is %+v, blocked %v (%v)", k, blocked, err)
	}
	code, stdout, stderr = runIn(t, dir, "yes\n", skipArgs...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "skipped event 1 (failed, message id "+b.NextMessageID+") of key") ||
		!strings.Contains(stderr, "eventgen-ops inbox skip: audit") || !strings.Contains(stderr, "action=skip-next") ||
		!strings.Contains(stderr, "key="+b.Key) || !strings.Contains(stderr, "sequence=1") ||
		!strings.Contains(stderr, "message_id="+b.NextMessageID) || !strings.Contains(stderr, "count=1") {
		t.Fatalf("inbox skip = %d, %q, %q", code, stdout, stderr)
	}
	code, _, stderr = run(t, dir, append(skipArgs, "-yes")...)
	if code != cli.ExitFailure || !strings.Contains(stderr, "is not blocked") {
		t.Fatalf("inbox skip of a key that is no longer blocked = %d, %q", code, stderr)
	}
	code, stdout, _ = run(t, dir, args("inbox", "reexecute", "-id", a.NextMessageID)...)
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "1 failed messages") {
		t.Fatalf("inbox reexecute -id = %d, %q", code, stdout)
	}

	// A consumer of the group, its handler fixed, applies A's three events
	// in order and B's last two; B's first, skipped, never runs.
	// (A handler run whose transaction did not commit before the first
	// consumer stopped runs again: handled records runs, so only A's and
	// B's are looked at.)
	mu.Lock()
	fixed, handled = true, nil
	mu.Unlock()
	ofOrder := func(got []string, order string) []string {
		return slices.DeleteFunc(slices.Clone(got), func(p string) bool { return !strings.HasPrefix(p, "pay-"+order+"-") })
	}
	again := newBillingConsumer(t, db, tr, inbox, handler)
	runUntil(t, again.Run, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ofOrder(handled, "A")) >= 3 && len(ofOrder(handled, "B")) >= 2
	})
	mu.Lock()
	got := slices.Clone(handled)
	mu.Unlock()
	if gotA, gotB := ofOrder(got, "A"), ofOrder(got, "B"); !slices.Equal(gotA, []string{"pay-A-1", "pay-A-2", "pay-A-3"}) || !slices.Equal(gotB, []string{"pay-B-2", "pay-B-3"}) {
		t.Fatalf("handled %v: want A 1, 2, 3 and B 2, 3 in order, and never B 1", got)
	}
	code, stdout, stderr = run(t, dir, args("inbox", "blocked")...)
	if code != cli.ExitOK || stdout != "" || !strings.HasPrefix(stderr, "no blocked keys of group billing") {
		t.Fatalf("inbox blocked at the end = %d, %q, %q", code, stdout, stderr)
	}
	code, stdout, _ = run(t, dir, args("inbox", "list", "-status", "skipped", "-json")...)
	var page listJSON
	if err := json.Unmarshal([]byte(stdout), &page); code != cli.ExitOK || err != nil || len(page.Rows) != 1 ||
		page.Rows[0].MessageID != b.NextMessageID || !strings.HasPrefix(page.Rows[0].LastError, "skipped by an operator") {
		t.Fatalf("inbox list -status skipped = %d, %v:\n%s", code, err, stdout)
	}
}

// uuidFirstByte returns the first byte of the UUID s.
func uuidFirstByte(t *testing.T, s string) byte {
	t.Helper()
	var b byte
	if _, err := fmt.Sscanf(s[:2], "%02x", &b); err != nil {
		t.Fatalf("key %q: %v", s, err)
	}
	return b
}
