//go:build race

package kinds_test

// raceEnabled reports whether the tests were built with -race, under which moving a
// message through the adapter, two QUIC stacks and the router costs 5 to 10 times
// more CPU.
const raceEnabled = true
