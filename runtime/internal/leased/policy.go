package leased

import (
	"time"

	"github.com/eventgen/eventgen/runtime/internal/backoff"
)

// Policy is the two retry tiers of a leased table, in one place for both
// sides. After a failed attempt a row is retried quickly at first (the
// local tier), then after longer waits (the persistent tier), until it has
// used up its attempts.
type Policy struct {
	// Local is how many retries after the first failure are quick; 0 turns
	// the local tier off.
	Local int
	// LocalInterval is the nominal wait before the first quick retry,
	// doubled for each next one (with jitter).
	LocalInterval time.Duration
	// Max is how many attempts a row gets in all before it fails for good.
	Max int
	// Interval is the nominal wait before the first persistent retry,
	// doubled for each next one up to 32 times Interval (with jitter).
	Interval time.Duration
	// MinAge is the least wait before a persistent retry.
	MinAge time.Duration
}

// Exhausted reports whether a row that has failed attempts times has used
// up its attempts.
func (p Policy) Exhausted(attempts int) bool { return attempts >= p.Max }

// IsLocal reports whether the retry after the attempts-th failed attempt is
// in the local tier.
func (p Policy) IsLocal(attempts int) bool { return attempts <= p.Local }

// Delay returns the wait before the next attempt of a row that has failed
// attempts times: LocalDelay in the local tier, Persistent after it.
func (p Policy) Delay(attempts int) time.Duration {
	if p.IsLocal(attempts) {
		return p.LocalDelay(attempts)
	}
	return p.PersistentDelay(attempts)
}

// LocalDelay is the wait of the attempts-th quick retry.
func (p Policy) LocalDelay(attempts int) time.Duration {
	return backoff.Policy{Base: p.LocalInterval}.Delay(attempts)
}

// PersistentDelay is the wait of a persistent retry after the attempts-th
// failed attempt: Interval grown by the attempts past the local tier (the
// first persistent retry waits about Interval), and at least MinAge.
func (p Policy) PersistentDelay(attempts int) time.Duration {
	return max(p.MinAge, backoff.Policy{Base: p.Interval}.Delay(max(1, attempts-p.Local)))
}
