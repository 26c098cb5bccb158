package kinds

import (
	"errors"
	"testing"
	"time"
)

// Negative durations are reported in the order the keys are given, every run
// (they came from a map before, in a random order).
func TestNegativeDurationsInOrder(t *testing.T) {
	want := "a: must not be negative, got -1s\nc: must not be negative, got -2ns"
	for range 20 {
		got := errors.Join(negativeDurations(duration{"a", -time.Second}, duration{"b", 0}, duration{"c", -2})...)
		if got == nil || got.Error() != want {
			t.Fatalf("got %v, want %q", got, want)
		}
	}
}
