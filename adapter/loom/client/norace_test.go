//go:build !race

package client_test

// raceEnabled reports whether the tests were built with -race, which makes moving
// bytes through two QUIC stacks 5 to 10 times slower.
const raceEnabled = false
