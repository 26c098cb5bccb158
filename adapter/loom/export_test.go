package loom

import "time"

// SetRefusalWindow sets how long a QUIC consumer stream waits for a refusal before
// Subscribe counts it as accepted, for one test; the returned func restores it. A
// test that expects a refusal sets it long, so a loaded machine cannot make the
// refusal late: the wait ends at the refusal anyway.
func SetRefusalWindow(d time.Duration) (restore func()) {
	old := refusalWindowNs.Swap(int64(d))
	return func() { refusalWindowNs.Store(old) }
}
