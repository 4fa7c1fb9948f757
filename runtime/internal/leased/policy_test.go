package leased

import (
	"testing"
	"time"
)

func TestPolicyTiers(t *testing.T) {
	p := Policy{Local: 2, LocalInterval: 10 * time.Millisecond, Max: 6, Interval: time.Second, MinAge: 3 * time.Second}
	within := func(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }
	for _, c := range []struct {
		attempts int
		local    bool
		lo, hi   time.Duration
	}{
		{1, true, 5 * time.Millisecond, 10 * time.Millisecond},  // first quick retry: half to all of LocalInterval
		{2, true, 10 * time.Millisecond, 20 * time.Millisecond}, // doubled
		{3, false, 3 * time.Second, 3 * time.Second},            // first persistent retry: Interval, raised to MinAge
		{5, false, 3 * time.Second, 4 * time.Second},            // Interval * 4 with jitter, at least MinAge
	} {
		if got := p.IsLocal(c.attempts); got != c.local {
			t.Errorf("IsLocal(%d) = %v, want %v", c.attempts, got, c.local)
		}
		for range 50 {
			if d := p.Delay(c.attempts); !within(d, c.lo, c.hi) {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", c.attempts, d, c.lo, c.hi)
			}
		}
	}
	if p.Exhausted(5) || !p.Exhausted(6) {
		t.Errorf("Exhausted(5), Exhausted(6) = %v, %v; want false, true", p.Exhausted(5), p.Exhausted(6))
	}
	// Without a local tier the first retry is already persistent.
	p.Local = 0
	if p.IsLocal(1) {
		t.Error("IsLocal(1) with Local 0 = true")
	}
	if d := p.Delay(1); d < p.MinAge {
		t.Errorf("Delay(1) with Local 0 = %s, want at least MinAge %s", d, p.MinAge)
	}
}
