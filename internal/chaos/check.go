package chaos

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// Report compares what was committed with what was applied and delivered.
type Report struct {
	Committed int            // event ids in the committed table (of the kinds checked)
	Effects   map[string]int // effect rows by group
	Lost      int            // committed, but not applied in some group (summed over groups)
	Ghost     int            // applied, but never committed (summed over groups)
	Dup       int            // effect rows beyond the first per (group, event id)
	// Order is the ordering check of the keyed events (see CheckOrder).
	Order     OrderReport
	Delivered int // raw deliveries logged
	RawDup    int // raw deliveries beyond the first per (group, message id)
	// Outbox counts outbox rows by status.
	Outbox map[string]int
	// Examples holds a few offending ids, for the failure message.
	Examples []string
}

// OK reports whether nothing was lost, invented, applied twice, applied
// out of order or numbered wrong.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Ghost == 0 && r.Dup == 0 && r.Order.OutOfOrder == 0 && r.Order.Misnumbered == 0
}

// Problem describes what is wrong in r, for a failure message: the counts
// and a few examples, and the first key applied out of order.
func (r Report) Problem() string {
	s := fmt.Sprintf("lost=%d ghost=%d dup=%d out_of_order=%d misnumbered=%d; examples: %v",
		r.Lost, r.Ghost, r.Dup, r.Order.OutOfOrder, r.Order.Misnumbered, r.Examples)
	if r.Order.First != "" {
		s += "; first key out of order: " + r.Order.First
	}
	return s
}

// Line formats r as the stable one-line result of scenario on backend.
func (r Report) Line(scenario, backend string, extra ...string) string {
	groups := make([]string, 0, len(r.Effects))
	for g := range r.Effects {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	eff := make([]string, len(groups))
	for i, g := range groups {
		eff[i] = fmt.Sprintf("%s:%d", g, r.Effects[g])
	}
	s := fmt.Sprintf("chaos scenario=%s backend=%s committed=%d effects=%s lost=%d ghost=%d dup=%d out_of_order=%d misnumbered=%d raw_dup=%d delivered=%d keys=%d max_per_key=%d",
		scenario, backend, r.Committed, strings.Join(eff, ","), r.Lost, r.Ghost, r.Dup, r.Order.OutOfOrder, r.Order.Misnumbered,
		r.RawDup, r.Delivered, r.Order.Keys, r.Order.MaxPerKey)
	for _, e := range extra {
		s += " " + e
	}
	return s
}

// Check builds the report of groups from the database and the raw
// delivery logs in rawDir. Only committed events of the given kinds are
// expected to be applied (all kinds when none is given).
func Check(ctx context.Context, db *bun.DB, t Tables, groups []string, rawDir string, kinds ...string) (Report, error) {
	r := Report{Effects: map[string]int{}, Outbox: map[string]int{}}
	committed := map[string]bool{}
	keys := map[string]string{} // event id -> key, of the committed events checked
	rows, err := db.QueryContext(ctx, "SELECT event_id, kind, msg_key FROM "+t.Committed)
	if err != nil {
		return r, fmt.Errorf("chaos: read committed: %w", err)
	}
	for rows.Next() {
		var id, kind, key string
		if err := rows.Scan(&id, &kind, &key); err != nil {
			rows.Close()
			return r, err
		}
		if len(kinds) == 0 || contains(kinds, kind) {
			committed[id] = true
			keys[id] = key
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	r.Committed = len(committed)

	applied := map[string]map[string]int{}
	for _, g := range groups {
		applied[g] = map[string]int{}
		r.Effects[g] = 0
	}
	var effects []Effect
	rows, err = db.QueryContext(ctx, "SELECT id, grp, event_id, msg_key, seq FROM "+t.Effects+" ORDER BY id")
	if err != nil {
		return r, fmt.Errorf("chaos: read effects: %w", err)
	}
	for rows.Next() {
		var e Effect
		if err := rows.Scan(&e.ID, &e.Group, &e.EventID, &e.Key, &e.Seq); err != nil {
			rows.Close()
			return r, err
		}
		effects = append(effects, e)
		if applied[e.Group] == nil {
			applied[e.Group] = map[string]int{}
		}
		applied[e.Group][e.EventID]++
		r.Effects[e.Group]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	for g, ids := range applied {
		for id, n := range ids {
			if !committed[id] {
				r.Ghost++
				r.example("ghost " + g + " " + id)
			}
			if n > 1 {
				r.Dup += n - 1
				r.example(fmt.Sprintf("dup %s %s x%d", g, id, n))
			}
		}
		for id := range committed {
			if ids[id] == 0 {
				r.Lost++
				r.example("lost " + g + " " + id)
			}
		}
	}
	r.Order = CheckOrder(keys, effects)

	if rawDir != "" {
		raw, err := ReadRawLogs(rawDir)
		if err != nil {
			return r, err
		}
		for _, ids := range raw {
			for _, n := range ids {
				r.Delivered += n
				r.RawDup += n - 1
			}
		}
	}

	rows, err = db.QueryContext(ctx, "SELECT status, COUNT(*) FROM "+t.Outbox+" GROUP BY status")
	if err != nil {
		return r, fmt.Errorf("chaos: read outbox: %w", err)
	}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return r, err
		}
		r.Outbox[s] = n
	}
	rows.Close()
	return r, rows.Err()
}

// Effect is an effect row as CheckOrder reads it.
type Effect struct {
	ID      int64  // the row's auto-increment id: the order of the inserts
	Group   string // the consumer group that applied it
	EventID string
	Key     string // Metadata.Key: "" for an event without a key
	Seq     int64  // Metadata.Sequence
}

// OrderReport is the ordering check of the keyed events.
type OrderReport struct {
	// Keys counts the keys of the committed events, and MaxPerKey the
	// committed events of the busiest one.
	Keys, MaxPerKey int
	// OutOfOrder counts, over every group and key, the applied events
	// whose sequence is not the sequence applied before them + 1 (0
	// before the key's first): see CheckOrder.
	OutOfOrder int
	// Misnumbered counts applied sequences outside 1..N, N the events
	// committed under their key, or applied for two events of one key.
	Misnumbered int
	// First describes the first offence, in apply order: its group, key
	// and the key's applied sequences around it. FirstGroup and FirstKey
	// name them.
	First                string
	FirstGroup, FirstKey string
}

// CheckOrder checks the order in which each group applied the events of
// each key. committed maps the id of every committed event checked to its
// key; effects are the effect rows, in any order.
//
// Within a group, an event with a sequence runs only in the transaction
// that moves its key from the sequence before it to its own, so a key's
// next event inserts its effect after the previous one committed: the
// effect ids of a group and key are their apply order. Only the first
// effect of each event counts (a second one is the dup check's business).
// Walking them in id order from 0, an applied sequence that is not the
// previous one + 1 is out of order: two events applied the wrong way
// round, an event applied before an event it should follow was applied
// (a gap; in the chaos suite nothing is skipped, so every gap is an
// offence, even one left by an event that is lost for good), the same
// sequence applied for two events, or a key that did not start at 1.
//
// Misnumbered compares the applied sequences of a key with 1..N, N being
// the events committed under that key: every applied sequence outside
// 1..N or applied twice. Numbers of 1..N that were not applied are not
// counted here: they are the key's lost events, which lost counts. So
// once lost = ghost = dup = 0, out_of_order = 0 holds exactly when every
// key's applied sequences are 1, 2, ..., N in apply order, and then
// misnumbered is 0 too; misnumbered > 0 says that the outbox numbered a
// key wrong rather than that a group applied it in the wrong order.
func CheckOrder(committed map[string]string, effects []Effect) OrderReport {
	var o OrderReport
	perKey := map[string]int64{}
	for _, k := range committed {
		if k != "" {
			perKey[k]++
		}
	}
	o.Keys = len(perKey)
	for _, n := range perKey {
		o.MaxPerKey = max(o.MaxPerKey, int(n))
	}
	effects = slices.Clone(effects)
	slices.SortStableFunc(effects, func(a, b Effect) int { return cmp.Compare(a.ID, b.ID) })
	type stream struct{ group, key string }
	seen := map[[2]string]bool{}
	applied := map[stream][]int64{}
	used := map[stream]map[int64]bool{}
	var first stream
	firstAt := -1
	for _, e := range effects {
		ev := [2]string{e.Group, e.EventID}
		if seen[ev] || e.Key == "" {
			continue
		}
		seen[ev] = true
		s := stream{e.Group, e.Key}
		prev := int64(0)
		if a := applied[s]; len(a) > 0 {
			prev = a[len(a)-1]
		}
		applied[s] = append(applied[s], e.Seq)
		bad := false
		if e.Seq != prev+1 {
			o.OutOfOrder++
			bad = true
		}
		if used[s] == nil {
			used[s] = map[int64]bool{}
		}
		if e.Seq < 1 || e.Seq > perKey[e.Key] || used[s][e.Seq] {
			o.Misnumbered++
			bad = true
		}
		used[s][e.Seq] = true
		if bad && firstAt < 0 {
			first, firstAt = s, len(applied[s])-1
		}
	}
	if firstAt >= 0 {
		a := applied[first]
		lo, hi := max(firstAt-8, 0), min(firstAt+9, len(a))
		window := fmt.Sprint(a[lo:hi])
		if lo > 0 {
			window = "[... " + window[1:]
		}
		if hi < len(a) {
			window = window[:len(window)-1] + " ...]"
		}
		o.FirstGroup, o.FirstKey = first.group, first.key
		o.First = fmt.Sprintf("group=%s key=%s committed=%d applied=%d: sequence %d applied as the key's event #%d; applied sequences in apply order: %s",
			first.group, strconv.Quote(first.key), perKey[first.key], len(a), a[firstAt], firstAt+1, window)
	}
	return o
}

func (r *Report) example(s string) {
	if len(r.Examples) < 5 {
		r.Examples = append(r.Examples, s)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Converged reports whether every committed event is applied in every
// group and the outbox holds only published rows.
func (r Report) Converged() bool {
	pending := 0
	for s, n := range r.Outbox {
		if s != "published" {
			pending += n
		}
	}
	return r.Lost == 0 && pending == 0
}

// WaitConverged checks every interval until the report converges or
// timeout passes, and returns the last report.
func WaitConverged(ctx context.Context, db *bun.DB, t Tables, groups []string, rawDir string, timeout time.Duration, kinds ...string) (Report, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		r, err := Check(ctx, db, t, groups, rawDir, kinds...)
		if err != nil {
			return r, false, err
		}
		if r.Converged() {
			return r, true, nil
		}
		if time.Now().After(deadline) {
			return r, false, nil
		}
		select {
		case <-ctx.Done():
			return r, false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
