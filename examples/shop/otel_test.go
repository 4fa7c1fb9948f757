package main

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/runtime/eventgen"
)

// span is a line of the printed trace, and the lines under it.
type span struct {
	name, kind string
	attrs      map[string]string
	events     []string
	children   []*span
}

func (s *span) String() string { return s.name + " " + s.attrs["eventgen.event.name"] }

var (
	spanLine  = regexp.MustCompile(`^(.+?)  +(internal|producer|consumer|server|client) +\S+(.*)$`)
	spanAttr  = regexp.MustCompile(`(?:^| )([a-z][a-z._]*)=([^ "]\S*)`)
	spanEvent = regexp.MustCompile(`\[([^\]]+)\]`)
)

// parseTrace returns the root of the trace that out prints after its
// "trace of order 1" line, up to the next blank line, and the number of spans that line announces.
func parseTrace(t *testing.T, out string) (*span, string) {
	t.Helper()
	_, after, ok := strings.Cut(out, "\ntrace of order 1 (")
	if !ok {
		t.Fatalf("no trace printed:\n%s", out)
	}
	after, _, _ = strings.Cut(after, "\n\n") // the metrics follow
	lines := strings.Split(strings.TrimSuffix(after, "\n"), "\n")
	header := lines[0]
	var roots, stack []*span
	for _, line := range lines[1:] {
		rest, ok := strings.CutPrefix(line, "  ")
		if !ok {
			t.Fatalf("trace line %q is not indented", line)
		}
		depth := 0
		for {
			var cut bool
			for _, p := range []string{"│  ", "   ", "├─ ", "└─ "} {
				if r, ok := strings.CutPrefix(rest, p); ok {
					rest, cut = r, true
					break
				}
			}
			if !cut {
				break
			}
			depth++
		}
		m := spanLine.FindStringSubmatch(rest)
		if m == nil || depth > len(stack) {
			t.Fatalf("trace line %q: not a span at depth %d or less", line, len(stack))
		}
		s := &span{name: m[1], kind: m[2], attrs: make(map[string]string)}
		for _, a := range spanAttr.FindAllStringSubmatch(m[3], -1) {
			s.attrs[a[1]] = a[2]
		}
		for _, e := range spanEvent.FindAllStringSubmatch(m[3], -1) {
			s.events = append(s.events, e[1])
		}
		stack = stack[:depth]
		if depth == 0 {
			roots = append(roots, s)
		} else {
			stack[depth-1].children = append(stack[depth-1].children, s)
		}
		stack = append(stack, s)
	}
	if len(roots) != 1 || roots[0].name != "place order" || roots[0].kind != "internal" {
		t.Fatalf("want one root, place order: %v\n%s", roots, out)
	}
	return roots[0], header
}

// TestTrace runs the program with -trace and checks its metrics snapshot
// against the summary's counts, and the shape of the first order's trace, worked out from the spec's groups and the shop's
// handlers rather than from the program's output: one "place order" root
// with a send span per event of the order; under each send, one process
// span per group subscribed to its topic; under each process, the
// handler's span, or a skipped event when the group has no handler; and
// under each handler's span, the sends of the events it publishes.
func TestTrace(t *testing.T) {
	out := runShop(t, 3, "-q", "-orders", "3", "-trace")
	root, header := parseTrace(t, out)

	// The groups' subscriptions and handlers, and what the handlers
	// publish for order 1.
	subscribed := map[string][]string{}
	type handler struct {
		span      string
		publishes []eventgen.Event
	}
	handlers := map[string]handler{}
	// Billing declines an order over its credit limit.
	var billed eventgen.Event = shopevents.PaymentCaptured{}
	if total(basket(1)) > creditLimit {
		billed = shopevents.OrderCancelled{}
	}
	type handles struct {
		event eventgen.Event
		handler
	}
	for _, g := range []struct {
		group   string
		handles []handles
	}{
		{shopevents.GroupBilling, []handles{
			{shopevents.OrderPlaced{}, handler{"invoice order", []eventgen.Event{billed}}},
			{shopevents.PaymentCaptured{}, handler{"book payment", nil}},
			{shopevents.OrderCancelled{}, handler{"close invoice", nil}},
		}},
		{shopevents.GroupShipping, []handles{
			{shopevents.InventoryStockReserved{}, handler{"reserve stock", nil}},
			{shopevents.PaymentCaptured{}, handler{"ship order", []eventgen.Event{shopevents.OrderShipped{}}}},
			{shopevents.OrderCancelled{}, handler{"release stock", nil}},
		}},
	} {
		for _, h := range g.handles {
			if !slices.Contains(subscribed[h.event.Topic()], g.group) {
				subscribed[h.event.Topic()] = append(subscribed[h.event.Topic()], g.group)
			}
			handlers[g.group+"/"+h.event.EventName()] = h.handler
		}
	}

	spans := 1
	// work returns the children of s other than the spans of eventgen's
	// prepared statements (INSERT <table> and so on, CLIENT spans), which
	// appear under the span that runs them once they are prepared, and
	// counts those.
	statement := regexp.MustCompile(`^(INSERT|UPDATE|SELECT|DELETE) \w+$`)
	work := func(s *span) []*span {
		var rest []*span
		for _, c := range s.children {
			if c.kind != "client" {
				rest = append(rest, c)
				continue
			}
			spans++
			if !statement.MatchString(c.name) || c.attrs["db.system.name"] == "" || len(c.children) > 0 {
				t.Errorf("under %s: statement span %s %v with %d children", s, c.name, c.attrs, len(c.children))
			}
		}
		return rest
	}
	// sends checks that parent's children are the send spans of events,
	// in any order, and what is under them.
	var sends func(parent *span, events []eventgen.Event)
	sends = func(parent *span, events []eventgen.Event) {
		var got, want []string
		parent.children = work(parent)
		for _, s := range parent.children {
			got = append(got, s.name+" "+s.kind+" "+s.attrs["eventgen.event.name"])
		}
		for _, e := range events {
			want = append(want, "send "+e.Topic()+" producer "+e.EventName())
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("under %s: got %q, want %q", parent, got, want)
			return
		}
		for _, send := range parent.children {
			spans++
			topic := strings.TrimPrefix(send.name, "send ")
			event := send.attrs["eventgen.event.name"]
			if send.attrs["messaging.destination.name"] != topic || send.attrs["eventgen.attempt"] == "" {
				t.Errorf("%s under %s: attributes %v", send, parent, send.attrs)
			}
			var groups []string
			for _, p := range send.children {
				spans++
				if p.name != "process "+topic || p.kind != "consumer" || p.attrs["messaging.destination.name"] != topic || p.attrs["eventgen.event.name"] != event {
					t.Errorf("under %s: %s %s %v", send, p.name, p.kind, p.attrs)
					continue
				}
				if slices.Contains(p.events, "retry scheduled") {
					continue // a failed attempt; another process span follows
				}
				group := p.attrs["messaging.consumer.group.name"]
				groups = append(groups, group)
				p.children = work(p)
				h, ok := handlers[group+"/"+event]
				switch {
				case !ok:
					if len(p.children) > 0 || !slices.Contains(p.events, "skipped") {
						t.Errorf("%s of group %s, which has no handler for %s: children %v, events %q", p, group, event, p.children, p.events)
					}
				case len(p.children) != 1 || p.children[0].name != h.span || p.children[0].kind != "internal":
					t.Errorf("%s of group %s: children %v, want one %s span", p, group, p.children, h.span)
				default:
					spans++
					sends(p.children[0], h.publishes)
				}
			}
			slices.Sort(groups)
			if want := slices.Sorted(slices.Values(subscribed[topic])); !slices.Equal(groups, want) {
				t.Errorf("%s: processed by groups %q, want %q", send, groups, want)
			}
		}
	}
	placed := []eventgen.Event{shopevents.OrderPlaced{}}
	for range basket(1) {
		placed = append(placed, shopevents.InventoryStockReserved{})
	}
	sends(root, placed)

	if !regexp.MustCompile(`^[0-9a-f]{8}\): \d+ spans, trace ID [0-9a-f]{32}, messaging.system in_process$`).MatchString(header) {
		t.Errorf("trace header %q", header)
	}
	if want := regexp.MustCompile(` \d+ spans`).FindString(header); want != " "+strconv.Itoa(spans)+" spans" {
		t.Errorf("header says%s, the tree has %d", want, spans)
	}

	// The metrics snapshot counts what the summary counts.
	w := want(3)
	for _, c := range []struct {
		metric, attr string
		want         int
	}{
		{"messaging.client.sent.messages", "", w.published},
		{"eventgen.consumer.handled.messages", "messaging.consumer.group.name=billing", w.billing},
		{"eventgen.consumer.handled.messages", "messaging.consumer.group.name=shipping", w.shipping},
		{"eventgen.consumer.failed.messages", "", 0},
	} {
		if got := sumMetric(out, c.metric, c.attr); got != c.want {
			t.Errorf("metrics: %s{%s} add up to %d, want %d", c.metric, c.attr, got, c.want)
		}
	}
	for _, gauge := range []string{"eventgen.outbox.lag{", "eventgen.inbox.lag{", "eventgen.outbox.messages{eventgen.status=pending,"} {
		if !strings.Contains(out, "\n  "+gauge) {
			t.Errorf("metrics: no %s...} point", gauge)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// sumMetric adds up the values of the points of metric in the metrics
// snapshot in out whose attributes include attr (all of them for "").
func sumMetric(out, metric, attr string) int {
	sum := 0
	re := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(metric) + `\{(.*)\} (\d+) `)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if attr == "" || slices.Contains(strings.Split(m[1], ","), attr) {
			n, _ := strconv.Atoi(m[2])
			sum += n
		}
	}
	return sum
}

// TestNoTraceByDefault checks that without -trace nothing is traced or printed.
func TestNoTraceByDefault(t *testing.T) {
	if out := runShop(t, 1, "-q", "-orders", "1"); strings.Contains(out, "trace of order") {
		t.Errorf("a trace without -trace:\n%s", out)
	}
}
