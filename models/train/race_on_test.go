//go:build race

package train

// raceEnabled marks a build with the race detector: the trainers' pixel and coreset loops
// run about 20 times slower there, so the PatchCore training test runs without -race in
// `make test` instead.
const raceEnabled = true
