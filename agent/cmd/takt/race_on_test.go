//go:build race

package main

// raceEnabled: training runs many times slower under the race detector; the train-and-eval test
// runs without it in make test.
const raceEnabled = true
