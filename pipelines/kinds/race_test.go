//go:build race

package kinds_test

const raceEnabled = true
