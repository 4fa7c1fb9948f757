package gencli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/internal/cli"
)

// baseSpec is the old spec of the compatibility cases; each case edits it
// with one replacement, so that lines stay put unless the case adds some.
const baseSpec = `package: shop
topics:
  orders: {name: shop.orders}
  other: {}
types:
  Money:
    fields:
      amount: int64
      currency: string
  Line:
    fields:
      sku: string
      unit_price: Money
  Status:
    enum: [pending, paid]
events:
  OrderPlaced:
    topic: orders
    key: order_id
    fields:
      order_id: uuid
      status: Status
      lines: "[]Line"
      note: {type: string, optional: true}
      total: {type: Money, json: sum}
  OrderShipped:
    topic: orders
    fields:
      order_id: uuid
  Refunded:
    topic: other
    fields: {id: uuid}
consumers:
  billing:
    handles: [OrderPlaced, OrderShipped]
`

func TestCheckAgainst(t *testing.T) {
	for _, tt := range []struct {
		name    string
		edits   []string // old, new pairs replaced in baseSpec
		verbose bool
		code    int
		stderr  string
	}{
		{name: "removed event",
			edits:  []string{"  OrderShipped:\n    topic: orders\n    fields:\n      order_id: uuid\n", "", ", OrderShipped]", "]"},
			code:   cli.ExitFailure,
			stderr: "events.yaml: OrderShipped: event removed; consumers that handle it never receive it again, and code that publishes it no longer compiles (was at old.yaml:26:3) [EVENT_REMOVED:OrderShipped]\n"},
		{name: "removed field",
			edits:  []string{"      note: {type: string, optional: true}\n", ""},
			code:   cli.ExitFailure,
			stderr: "events.yaml:17:3: OrderPlaced.note: field removed; consumers generated from the old spec no longer receive it (was at old.yaml:24:7) [FIELD_REMOVED:OrderPlaced.note]\n"},
		{name: "field type changed",
			edits:  []string{"currency: string", "currency: int32"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:9:17: OrderPlaced.lines[].unit_price.currency: type changed from string to int32 (was at old.yaml:9:17) [FIELD_TYPE_CHANGED:OrderPlaced.lines[].unit_price.currency]\n"},
		{name: "optional to required",
			edits:  []string{"note: {type: string, optional: true}", "note: {type: string, optional: false}"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:24:38: OrderPlaced.note: optional field made required; producers generated from the old spec may leave it out (was at old.yaml:24:38) [FIELD_MADE_REQUIRED:OrderPlaced.note]\n"},
		{name: "required to optional",
			edits:  []string{"status: Status", "status: {type: Status, optional: true}"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:22:40: OrderPlaced.status: required field made optional; consumers generated from the old spec expect it (was at old.yaml:22:7) [FIELD_MADE_OPTIONAL:OrderPlaced.status]\n"},
		{name: "enum value renamed",
			edits: []string{"[pending, paid]", "[pending, settled]"},
			code:  cli.ExitFailure,
			stderr: "events.yaml:15:5: OrderPlaced.status: enum value \"paid\" removed or renamed; consumers generated from the new spec reject it from producers generated from the old spec (was at old.yaml:15:21) [ENUM_VALUE_REMOVED:OrderPlaced.status=paid]\n" +
				"events.yaml:15:21: warning: OrderPlaced.status: enum value \"settled\" added; consumers generated from the old spec reject it until they are regenerated, so deploy consumers first\n"},
		{name: "JSON name changed",
			edits:  []string{"json: sum", "json: total"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:25:34: OrderPlaced.total: JSON name changed from \"sum\" to \"total\" (was at old.yaml:25:34) [JSON_NAME_CHANGED:OrderPlaced.total]\n"},
		{name: "wire name changed",
			edits:  []string{"  OrderShipped:\n", "  order.shipped:\n    go_name: OrderShipped\n", ", OrderShipped]", ", order.shipped]"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:26:3: order.shipped: wire name changed from \"OrderShipped\" to \"order.shipped\"; consumers generated from the old spec do not recognise it (was at old.yaml:26:3) [WIRE_NAME_CHANGED:order.shipped]\n"},
		{name: "topic changed",
			edits:  []string{"  OrderShipped:\n    topic: orders", "  OrderShipped:\n    topic: other"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:27:12: OrderShipped: topic changed from \"shop.orders\" to \"other\"; consumers subscribed to the old topic no longer receive it (was at old.yaml:27:12) [TOPIC_CHANGED:OrderShipped]\n"},
		{name: "key changed",
			edits:  []string{"key: order_id", "key: status"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:19:10: OrderPlaced: key changed from \"order_id\" to \"status\"; ordering and partitioning change (was at old.yaml:19:10) [KEY_CHANGED:OrderPlaced]\n"},
		{name: "consumer drops an event",
			edits:  []string{"handles: [OrderPlaced, OrderShipped]", "handles: [OrderPlaced]"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:34:3: consumer group \"billing\" no longer handles OrderShipped (was at old.yaml:35:28) [CONSUMER_EVENT_DROPPED:billing/OrderShipped]\n"},
		{name: "new required field",
			edits:  []string{"      order_id: uuid\n  Refunded", "      order_id: uuid\n      carrier: string\n  Refunded"},
			code:   cli.ExitFailure,
			stderr: "events.yaml:30:7: OrderShipped.carrier: required field added; producers generated from the old spec do not send it [REQUIRED_FIELD_ADDED:OrderShipped.carrier]\n"},
		{name: "breaking change with a version bump",
			edits:  []string{"  OrderShipped:\n    topic: orders\n    fields:\n      order_id: uuid\n", "  OrderShipped:\n    topic: orders\n    version: 2\n    fields:\n      order_id: string\n"},
			code:   cli.ExitOK,
			stderr: "events.yaml:30:17: warning: OrderShipped.order_id: type changed from uuid to string (allowed: version bumped) (was at old.yaml:29:17)\n"},
		{name: "enum value added",
			edits:  []string{"[pending, paid]\n", "[pending, paid, refunded]\n"},
			code:   cli.ExitOK,
			stderr: "events.yaml:15:27: warning: OrderPlaced.status: enum value \"refunded\" added; consumers generated from the old spec reject it until they are regenerated, so deploy consumers first\n"},
		{name: "compatible changes are quiet",
			edits: []string{"      note: {type: string, optional: true}\n", "      note: {type: string, optional: true}\n      coupon: {type: string, optional: true}\n", "Money:", "Amount:", "unit_price: Money", "unit_price: Amount", "type: Money", "type: Amount"},
			code:  cli.ExitOK, stderr: ""},
		{name: "compatible changes listed",
			edits:   []string{"      note: {type: string, optional: true}\n", "      note: {type: string, optional: true}\n      coupon: {type: string, optional: true}\n"},
			verbose: true, code: cli.ExitOK,
			stderr: "events.yaml:25:7: compatible: OrderPlaced.coupon: optional field added\n"},
		{name: "new event",
			edits:   []string{"consumers:", "  OrderPaid:\n    topic: other\n    fields: {id: uuid}\nconsumers:"},
			verbose: true, code: cli.ExitOK,
			stderr: "events.yaml:33:3: compatible: OrderPaid: event added\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			newSpec := strings.NewReplacer(tt.edits...).Replace(baseSpec)
			if newSpec == baseSpec {
				t.Fatalf("edits %q change nothing", tt.edits)
			}
			dir := specDir(t, newSpec)
			if err := os.WriteFile(filepath.Join(dir, "old.yaml"), []byte(baseSpec), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"check", "--against", "old.yaml"}
			if tt.verbose {
				args = append(args, "-v")
			}
			code, stdout, stderr := run(t, dir, args...)
			if tt.code == cli.ExitFailure {
				if !strings.HasSuffix(stderr, " against old.yaml\n") {
					t.Errorf("stderr does not end with the summary:\n%s", stderr)
				}
				if i := strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n"); i >= 0 {
					stderr = stderr[:i+1]
				} else {
					stderr = ""
				}
			}
			if code != tt.code || stdout != "" || stderr != tt.stderr {
				t.Errorf("check --against = %d, stdout %q\nstderr:\n%s\nwant:\n%s", code, stdout, stderr, tt.stderr)
			}
			ids := checkJSONMatchesText(t, dir, args, tt.code, stderr)
			if tt.code == cli.ExitFailure {
				checkAllowed(t, dir, ids)
			}
		})
	}
}

// checkJSONMatchesText runs the command line again with -json, checks that
// each change it lists is the text output's line, field for field, and
// returns the ids of the breaking changes.
func checkJSONMatchesText(t *testing.T, dir string, args []string, wantCode int, text string) (breaking []string) {
	t.Helper()
	code, stdout, stderr := run(t, dir, append(args, "-json")...)
	var doc changesJSON
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != wantCode || doc.Spec != "events.yaml" || doc.Against != "old.yaml" {
		t.Fatalf("-json = %d, %v, stderr %q, stdout:\n%s", code, err, stderr, stdout)
	}
	var lines []string
	for _, c := range doc.Changes {
		if c.ID != c.Rule+":"+c.Subject {
			t.Errorf("id %q is not rule %q and subject %q", c.ID, c.Rule, c.Subject)
		}
		line := c.New.File
		if c.New.Line > 0 {
			line += fmt.Sprintf(":%d:%d", c.New.Line, c.New.Column)
		}
		switch c.Severity {
		case "breaking":
			breaking = append(breaking, c.ID)
			line += ": " + c.Message
		case "warning":
			line += ": warning: " + c.Message
		case "compatible":
			if !slices.Contains(args, "-v") {
				continue
			}
			line += ": compatible: " + c.Message
		default:
			t.Errorf("severity %q", c.Severity)
		}
		if c.Old != nil {
			line += fmt.Sprintf(" (was at %s:%d:%d)", c.Old.File, c.Old.Line, c.Old.Column)
		}
		if c.Severity == "breaking" {
			line += " [" + c.ID + "]"
		}
		lines = append(lines, line+"\n")
	}
	if got := strings.Join(lines, ""); got != text {
		t.Errorf("-json holds\n%s\nthe text output is\n%s", got, text)
	}
	if doc.Breaking != len(breaking) {
		t.Errorf("-json counts %d breaking changes and lists %d", doc.Breaking, len(breaking))
	}
	return breaking
}

// checkAllowed checks that --allow with the ids of the breaking changes
// lets the check pass, each change becoming a warning, and that allowing
// all but one still fails.
func checkAllowed(t *testing.T, dir string, ids []string) {
	t.Helper()
	var allow []string
	for _, id := range ids {
		allow = append(allow, "--allow", id)
	}
	code, stdout, stderr := run(t, dir, append([]string{"check", "--against", "old.yaml"}, allow...)...)
	if code != cli.ExitOK || stdout != "" || strings.Count(stderr, ": warning: ") < len(ids) || strings.Count(stderr, "(allowed: --allow)") != len(ids) {
		t.Errorf("check --against %q = %d, stdout %q, stderr:\n%s", allow, code, stdout, stderr)
	}
	code, _, stderr = run(t, dir, append([]string{"check", "--against", "old.yaml"}, allow[2:]...)...)
	if code != cli.ExitFailure || !strings.Contains(stderr, "["+ids[0]+"]") {
		t.Errorf("check --against %q = %d, stderr:\n%s", allow[2:], code, stderr)
	}
}

// TestCheckAgainstGitRevision reads the old spec from a commit of a
// temporary repository, with -o checking the output as well.
func TestCheckAgainstGitRevision(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := specDir(t, baseSpec)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	git("init", "-q", "-b", "main")
	git("add", "events.yaml")
	git("commit", "-q", "-m", "spec")
	if err := os.WriteFile(filepath.Join(dir, "events.yaml"), []byte(strings.Replace(baseSpec, "currency: string", "currency: int32", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "events.yaml:9:17: OrderPlaced.lines[].unit_price.currency: type changed from string to int32 (was at main:events.yaml:9:17) [FIELD_TYPE_CHANGED:OrderPlaced.lines[].unit_price.currency]\n" +
		"eventgen: events.yaml has 1 breaking change against main:events.yaml\n"
	if code, stdout, stderr := run(t, dir, "check", "-against", "main:events.yaml"); code != cli.ExitFailure || stdout != "" || stderr != want {
		t.Errorf("check -against main:events.yaml = %d, stdout %q\nstderr:\n%s\nwant:\n%s", code, stdout, stderr, want)
	}
	// The same revision and spec: compatible, and -o checks the output too.
	if code, _, stderr := run(t, dir, "generate", "-f", "events.yaml", "-o", "shop"); code != cli.ExitOK {
		t.Fatalf("generate = %d: %s", code, stderr)
	}
	git("commit", "-q", "-am", "int32")
	if code, stdout, stderr := run(t, dir, "check", "--against", "HEAD:events.yaml", "-o", "shop"); code != cli.ExitOK || stdout != "" || stderr != "" {
		t.Errorf("check against HEAD with -o = %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if err := os.Remove(filepath.Join(dir, "shop", "catalog.go")); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(t, dir, "check", "--against", "HEAD:events.yaml", "-o", "shop"); code != cli.ExitFailure || !strings.Contains(stderr, "shop is not up to date") {
		t.Errorf("check against HEAD with a stale -o = %d, stderr %q", code, stderr)
	}
	code, _, stderr := run(t, dir, "check", "--against", "nope:events.yaml")
	if code != cli.ExitFailure || !strings.HasPrefix(stderr, `eventgen: read old spec: git show revision "nope" path "events.yaml": fatal: `) {
		t.Errorf("bad revision = %d, %q", code, stderr)
	}
}

func TestCheckAgainstBadInput(t *testing.T) {
	dir := specDir(t, baseSpec)
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("package: shop\nevents: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		against string
		stderr  string // prefix
	}{
		{"missing.yaml", "eventgen: old spec: read spec: open missing.yaml: "},
		{"bad.yaml", "bad.yaml: spec declares no events: add at least one under events:\neventgen: the old spec bad.yaml is not valid\n"},
		{"-main:events.yaml", `eventgen: read old spec -main:events.yaml: git revision "-main" must not start with -`},
		{":events.yaml", "eventgen: read old spec :events.yaml: no such file, and no git revision before the colon"},
		{"main:", `eventgen: read old spec main:: no path after the git revision "main"`},
	} {
		code, stdout, stderr := run(t, dir, "check", "--against", tt.against)
		if code != cli.ExitFailure || stdout != "" || !strings.HasPrefix(stderr, tt.stderr) {
			t.Errorf("check --against %s = %d, stdout %q, stderr:\n%s\nwant prefix:\n%s", tt.against, code, stdout, stderr, tt.stderr)
		}
	}
}

func TestCheckAgainstAllowAndJSON(t *testing.T) {
	dir := specDir(t, strings.Replace(baseSpec, "currency: string", "currency: int32", 1))
	if err := os.WriteFile(filepath.Join(dir, "old.yaml"), []byte(baseSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	const id = "FIELD_TYPE_CHANGED:OrderPlaced.lines[].unit_price.currency"
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string // a line of it
	}{
		{[]string{"--allow", "FIELD_REMOVED"}, cli.ExitUsage, `invalid value "FIELD_REMOVED" for flag -allow: "FIELD_REMOVED" is not RULE:SUBJECT`},
		{[]string{"--allow", "NO_SUCH_RULE:x"}, cli.ExitUsage, `unknown rule "NO_SUCH_RULE"; the rules are EVENT_REMOVED, FIELD_REMOVED`},
		{[]string{"--allow", "FIELD_REMOVED:OrderPlaced.note", "--allow", id}, cli.ExitOK,
			"events.yaml: warning: --allow FIELD_REMOVED:OrderPlaced.note matches no breaking change against old.yaml; remove it"},
		{[]string{"--allow", "FIELD_TYPE_CHANGED:OrderPlaced.lines[].unit_price"}, cli.ExitFailure, "[" + id + "]"},
	} {
		code, stdout, stderr := run(t, dir, append([]string{"check", "--against", "old.yaml"}, tt.args...)...)
		if code != tt.code || stdout != "" || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("check --against old.yaml %q = %d, stdout %q, stderr:\n%s\nwant a line with %q", tt.args, code, stdout, stderr, tt.stderr)
		}
	}
	if code, _, stderr := run(t, dir, "check", "-json"); code != cli.ExitUsage || !strings.Contains(stderr, "-json and --allow need --against") {
		t.Errorf("check -json = %d, %q", code, stderr)
	}

	// With -o, a stale directory's diff goes to standard error, so that
	// standard output is the JSON alone.
	code, stdout, stderr := run(t, dir, "check", "--against", "old.yaml", "-json", "--allow", id, "--allow", "KEY_CHANGED:OrderPlaced", "-o", "missing")
	var doc changesJSON
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != cli.ExitFailure || doc.Breaking != 0 ||
		!slices.Equal(doc.UnusedAllows, []string{"KEY_CHANGED:OrderPlaced"}) || len(doc.Changes) != 1 ||
		doc.Changes[0].Allowed != "allow" || doc.Changes[0].Severity != "warning" || !strings.Contains(stderr, "+++ b/missing/events.go") {
		t.Errorf("check -json -o stale = %d, %v, stdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
}
