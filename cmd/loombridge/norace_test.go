//go:build !race

package main

// raceEnabled reports a -race build of the tests (the binary they start is
// never built with -race): the test process's side of a big message then costs
// 5 to 10 times the CPU, so the 256 MiB run shrinks.
const raceEnabled = false
