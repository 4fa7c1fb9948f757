// Package backoff computes retry delays: exponential growth from a base,
// capped, with "equal jitter" so that replicas retrying the same failure do
// not retry in lockstep, and no delay is ever shorter than half its nominal
// value.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy describes a sequence of retry delays. The zero Policy has no delay.
type Policy struct {
	// Base is the nominal delay of the first retry (attempt 1).
	Base time.Duration
	// Max caps the nominal delay. Zero means 32 times Base.
	Max time.Duration
}

// Nominal returns the delay before retry number attempt (from 1) without
// jitter: Base * 2^(attempt-1), at most Max. Attempts below 1 count as 1.
func (p Policy) Nominal(attempt int) time.Duration {
	if p.Base <= 0 {
		return 0
	}
	limit := p.Max
	if limit <= 0 {
		limit = math.MaxInt64
		if p.Base < math.MaxInt64/32 {
			limit = 32 * p.Base
		}
	}
	d := p.Base
	for i := 1; i < attempt && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// Delay returns the delay before retry number attempt: a uniformly random
// duration between half and all of Nominal(attempt).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Nominal(attempt)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
