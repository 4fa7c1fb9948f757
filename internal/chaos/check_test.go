package chaos_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventgen/eventgen/internal/chaos"
)

// applied returns the effect rows of group applying the given events of
// key in this order, with ids id0, id0+10, id0+20...: events are named
// key/seq, so that one event applied twice repeats its name.
func applied(id0 int64, group, key string, seqs ...int64) []chaos.Effect {
	out := make([]chaos.Effect, len(seqs))
	for i, s := range seqs {
		out[i] = chaos.Effect{ID: id0 + 10*int64(i), Group: group, EventID: fmt.Sprintf("%s/%d", key, s), Key: key, Seq: s}
	}
	return out
}

// committedKeys returns the committed events of key with sequences 1..n,
// named as applied names them.
func committedKeys(m map[string]string, key string, n int) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	for s := 1; s <= n; s++ {
		m[fmt.Sprintf("%s/%d", key, s)] = key
	}
	return m
}

func TestCheckOrder(t *testing.T) {
	hot := committedKeys(committedKeys(nil, "hot-1", 5), "hot-2", 3)
	cases := []struct {
		name             string
		committed        map[string]string // hot if nil
		effects          []chaos.Effect
		outOfOrder, mis  int
		firstKey, detail string
	}{{
		name: "in order, two keys interleaved, two groups",
		effects: concat(applied(1, "billing", "hot-1", 1, 2, 3, 4, 5), applied(5, "billing", "hot-2", 1, 2, 3),
			applied(2, "shipping", "hot-1", 1, 2, 3, 4, 5), applied(6, "shipping", "hot-2", 1, 2, 3)),
	}, {
		name:    "rows read in another order than their ids",
		effects: reverse(applied(1, "billing", "hot-1", 1, 2, 3, 4, 5)),
	}, {
		name:       "two neighbours swapped: three pairs that do not step by one",
		effects:    applied(1, "billing", "hot-1", 1, 2, 4, 3, 5),
		outOfOrder: 3, firstKey: "hot-1", detail: "sequence 4 applied as the key's event #3",
	}, {
		name:       "reversed",
		effects:    applied(1, "shipping", "hot-2", 3, 2, 1),
		outOfOrder: 3, firstKey: "hot-2", detail: "sequence 3 applied as the key's event #1",
	}, {
		name:       "a gap: 4 applied, 3 never (lost counts 3; the order counts 4)",
		effects:    applied(1, "billing", "hot-1", 1, 2, 4, 5),
		outOfOrder: 1, firstKey: "hot-1", detail: "sequence 4 applied as the key's event #3",
	}, {
		name:    "the last events not applied yet: lost only",
		effects: applied(1, "billing", "hot-1", 1, 2, 3),
	}, {
		name:    "an event applied twice: the dup check's business",
		effects: applied(1, "billing", "hot-1", 1, 2, 2, 3, 1, 4, 5),
	}, {
		name: "two events numbered alike",
		effects: append(applied(1, "billing", "hot-2", 1, 2),
			chaos.Effect{ID: 30, Group: "billing", EventID: "other", Key: "hot-2", Seq: 2},
			chaos.Effect{ID: 40, Group: "billing", EventID: "hot-2/3", Key: "hot-2", Seq: 3}),
		outOfOrder: 1, mis: 1, firstKey: "hot-2", detail: "sequence 2 applied as the key's event #3",
	}, {
		name:    "a number past the events committed",
		effects: applied(1, "billing", "hot-2", 1, 2, 3, 4),
		mis:     1, firstKey: "hot-2", detail: "committed=3 applied=4: sequence 4",
	}, {
		name:       "a key that starts past 1",
		effects:    applied(1, "billing", "hot-1", 2, 3, 4, 5),
		outOfOrder: 1, firstKey: "hot-1", detail: "sequence 2 applied as the key's event #1",
	}, {
		name:      "events without a key are not ordered",
		committed: map[string]string{"a": "", "b": ""},
		effects:   []chaos.Effect{{ID: 2, Group: "billing", EventID: "a"}, {ID: 1, Group: "billing", EventID: "b"}},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.committed == nil {
				c.committed = hot
			}
			o := chaos.CheckOrder(c.committed, c.effects)
			if o.OutOfOrder != c.outOfOrder || o.Misnumbered != c.mis {
				t.Errorf("out_of_order=%d misnumbered=%d, want %d and %d (%s)", o.OutOfOrder, o.Misnumbered, c.outOfOrder, c.mis, o.First)
			}
			if o.FirstKey != c.firstKey || !strings.Contains(o.First, c.detail) {
				t.Errorf("first offence %q (key %q), want key %q and %q", o.First, o.FirstKey, c.firstKey, c.detail)
			}
		})
	}
	o := chaos.CheckOrder(hot, nil)
	if o.Keys != 2 || o.MaxPerKey != 5 {
		t.Errorf("keys=%d max_per_key=%d, want 2 and 5", o.Keys, o.MaxPerKey)
	}
}

// concat joins effect lists; their ids may interleave.
func concat(lists ...[]chaos.Effect) []chaos.Effect {
	var out []chaos.Effect
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func reverse(es []chaos.Effect) []chaos.Effect {
	out := make([]chaos.Effect, len(es))
	for i, e := range es {
		out[len(es)-1-i] = e
	}
	return out
}

// TestCheckReadsApplyOrder checks Check on real tables (SQLite): effect
// rows inserted in the wrong order count as out of order, in the right
// order not, and a gap is reported both as lost and as out of order.
func TestCheckReadsApplyOrder(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name           string
		insert         []int64 // the sequences of key k, in insert order
		outOfOrder     int
		lost           int
		wantFirstInMsg string
	}{
		{name: "right order", insert: []int64{1, 2, 3, 4}},
		{name: "wrong order", insert: []int64{1, 3, 2, 4}, outOfOrder: 3, wantFirstInMsg: `key="k"`},
		{name: "gap", insert: []int64{1, 2, 4}, outOfOrder: 1, lost: 1, wantFirstInMsg: "sequence 4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, err := chaos.OpenDB("sqlite", filepath.Join(t.TempDir(), "check.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			tb := chaos.NewTables("check")
			if err := chaos.CreateTables(ctx, db, tb); err != nil {
				t.Fatal(err)
			}
			for s := 1; s <= 4; s++ {
				if _, err := db.ExecContext(ctx, "INSERT INTO "+tb.Committed+" (event_id, kind, msg_key, written_us) VALUES (?, ?, ?, 0)",
					fmt.Sprint("e", s), chaos.KindGood, "k"); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range c.insert {
				if _, err := db.ExecContext(ctx, "INSERT INTO "+tb.Effects+" (grp, event_id, message_id, msg_key, seq, applied_us) VALUES (?, ?, ?, ?, ?, 0)",
					"billing", fmt.Sprint("e", s), fmt.Sprint("m", s), "k", s); err != nil {
					t.Fatal(err)
				}
			}
			r, err := chaos.Check(ctx, db, tb, []string{"billing"}, "")
			if err != nil {
				t.Fatal(err)
			}
			if r.Order.OutOfOrder != c.outOfOrder || r.Lost != c.lost || r.Order.Misnumbered != 0 {
				t.Errorf("out_of_order=%d lost=%d misnumbered=%d, want %d, %d and 0", r.Order.OutOfOrder, r.Lost, r.Order.Misnumbered, c.outOfOrder, c.lost)
			}
			if r.OK() != (c.outOfOrder == 0 && c.lost == 0) {
				t.Errorf("OK() = %v with %s", r.OK(), r.Problem())
			}
			if !strings.Contains(r.Problem(), c.wantFirstInMsg) {
				t.Errorf("problem %q does not say %q", r.Problem(), c.wantFirstInMsg)
			}
			if line := r.Line("s", "b"); !strings.Contains(line, fmt.Sprintf(" out_of_order=%d ", c.outOfOrder)) {
				t.Errorf("line %q lacks out_of_order=%d", line, c.outOfOrder)
			}
		})
	}
}
