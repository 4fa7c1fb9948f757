package chaos

import (
	"context"
	"fmt"
	"sort"
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
	Delivered int            // raw deliveries logged
	RawDup    int            // raw deliveries beyond the first per (group, message id)
	// Outbox counts outbox rows by status.
	Outbox map[string]int
	// Examples holds a few offending ids, for the failure message.
	Examples []string
}

// OK reports whether nothing was lost, invented or applied twice.
func (r Report) OK() bool { return r.Lost == 0 && r.Ghost == 0 && r.Dup == 0 }

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
	s := fmt.Sprintf("chaos scenario=%s backend=%s committed=%d effects=%s lost=%d ghost=%d dup=%d raw_dup=%d delivered=%d",
		scenario, backend, r.Committed, strings.Join(eff, ","), r.Lost, r.Ghost, r.Dup, r.RawDup, r.Delivered)
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
	rows, err := db.QueryContext(ctx, "SELECT event_id, kind FROM "+t.Committed)
	if err != nil {
		return r, fmt.Errorf("chaos: read committed: %w", err)
	}
	for rows.Next() {
		var id, kind string
		if err := rows.Scan(&id, &kind); err != nil {
			rows.Close()
			return r, err
		}
		if len(kinds) == 0 || contains(kinds, kind) {
			committed[id] = true
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
	rows, err = db.QueryContext(ctx, "SELECT grp, event_id FROM "+t.Effects)
	if err != nil {
		return r, fmt.Errorf("chaos: read effects: %w", err)
	}
	for rows.Next() {
		var g, id string
		if err := rows.Scan(&g, &id); err != nil {
			rows.Close()
			return r, err
		}
		if applied[g] == nil {
			applied[g] = map[string]int{}
		}
		applied[g][id]++
		r.Effects[g]++
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
