//go:build race

package main

// raceEnabled: training runs ~20x slower under the race detector; the train-and-eval test
// runs without it in make test.
const raceEnabled = true
