package backoff

import (
	"math"
	"testing"
	"time"
)

func TestNominal(t *testing.T) {
	p := Policy{Base: time.Second, Max: 10 * time.Second}
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for attempt, w := range want {
		if got := p.Nominal(attempt); got != w {
			t.Errorf("Nominal(%d) = %s, want %s", attempt, got, w)
		}
	}
	if got := (Policy{Base: time.Second}).Nominal(100); got != 32*time.Second {
		t.Errorf("default cap: Nominal(100) = %s, want 32s", got)
	}
	if got := (Policy{Base: time.Duration(1 << 62)}).Nominal(1); got != time.Duration(1<<62) {
		t.Errorf("huge base: Nominal(1) = %s, want the base", got)
	}
	if got := (Policy{Base: time.Duration(1 << 62)}).Nominal(5); got != math.MaxInt64 {
		t.Errorf("huge base: Nominal(5) = %s, want MaxInt64", got)
	}
	if got := (Policy{}).Delay(3); got != 0 {
		t.Errorf("zero policy: Delay = %s, want 0", got)
	}
}

func TestDelayJitterBounds(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond}
	for attempt := 1; attempt <= 8; attempt++ {
		n := p.Nominal(attempt)
		seen := map[time.Duration]bool{}
		for range 200 {
			d := p.Delay(attempt)
			if d < n/2 || d > n {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", attempt, d, n/2, n)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Errorf("Delay(%d): %d distinct values in 200, want jitter", attempt, len(seen))
		}
	}
}
