//go:build race

package console

// raceEnabled reports a -race build; see TestBrowser.
const raceEnabled = true
