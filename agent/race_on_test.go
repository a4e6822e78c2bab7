//go:build race

package agent

// raceEnabled shortens the longest tests under the race detector; `make test` runs them
// again at full length without it.
const raceEnabled = true
