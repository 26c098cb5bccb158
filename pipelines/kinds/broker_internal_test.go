package kinds

import (
	"errors"
	"fmt"
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

// Both forms of the too-large error (the brokers' TooLargeError, the redis
// and sql sinks' wrapped errTooLarge) are found by errors.Is(err, errTooLarge);
// the struct stays reachable through errors.As.
func TestTooLargeErrorsAreOne(t *testing.T) {
	broker := fmt.Errorf("to.out: %w", &TooLargeError{Backend: "nats", UUID: "u", Size: 2, Limit: 1, Setting: "s"})
	wrapped := fmt.Errorf("%w: message u has a 2-byte payload", errTooLarge)
	for _, err := range []error{broker, wrapped} {
		if !errors.Is(err, errTooLarge) {
			t.Errorf("%v: not errTooLarge", err)
		}
	}
	var tl *TooLargeError
	if !errors.As(broker, &tl) || tl.Backend != "nats" {
		t.Errorf("%v: errors.As found no TooLargeError", broker)
	}
	if errors.Is(errors.New("other"), errTooLarge) || errors.Is(broker, errors.New("message too large")) {
		t.Error("an unrelated error matched")
	}
}
