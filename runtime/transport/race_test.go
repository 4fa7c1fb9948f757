//go:build race

package transport_test

// raceEnabled is true under -race.
const raceEnabled = true
