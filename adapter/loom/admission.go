package loom

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/loombridge/loombridge/adapter/loom/client"
)

// Waiting for a consumer (client.Config.AdminURL).
//
// loomd reads and discards every message that reaches a room without a consumer
// stream, and tells the producer nothing (QUIC: nothing at all; HTTP/3: 200). After a
// restart producers are usually back before consumers, so what they send first is
// lost though it counts as sent. With admin_url set, a sender connection takes no
// batch of a room until a check that began after that connection was made found a
// consumer stream in the room (loom_streams{role="consumer"} on the admin listener).
// Meanwhile the room's messages stay in the buffer, under its bounds and policy;
// other rooms are not held. One poller reads the metrics for every waiting room at
// once, right away when a room starts waiting and then every admissionInterval.
//
// What it cannot close: a consumer that leaves between the check and the message
// (or the server restarting then, if no connection noticed it yet) still makes the
// server discard the message.

// admissionInterval is how often the metrics are read again while a room waits.
const admissionInterval = 200 * time.Millisecond

// admission is the publisher's gate; nil without admin_url.
type admission struct {
	admin  *client.Admin
	logger watermill.LoggerAdapter
	kick   chan struct{} // capacity 1: a room started waiting

	mu    sync.Mutex
	rooms map[string]*roomAdmission
	held  time.Duration // of waits that ended

	checks, failures atomic.Uint64
}

// roomAdmission is one room's state at the gate.
type roomAdmission struct {
	// seen is when the latest check that found a consumer stream began; zero: never.
	seen time.Time
	// waiting is when the room started waiting; zero while it does not.
	waiting time.Time
	// asked is when a sender last asked for it: rooms nobody asks for have no
	// message waiting, and stop waiting.
	asked time.Time
}

func newAdmission(adminURL string, logger watermill.LoggerAdapter) (*admission, error) {
	a, err := client.NewAdmin(adminURL)
	if err != nil {
		return nil, err
	}
	return &admission{admin: a, logger: logger, kick: make(chan struct{}, 1), rooms: map[string]*roomAdmission{}}, nil
}

// admitted reports whether a sender whose connection was made at connected may send
// to room: a check that began at or after connected found a consumer stream there.
// If not, the room waits and the poller is told. Called by the buffer with its lock
// held (through the sender's eligible function): it never blocks.
func (a *admission) admitted(room string, connected time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.rooms[room]
	if r == nil {
		r = &roomAdmission{}
		a.rooms[room] = r
	}
	now := time.Now()
	r.asked = now
	if !r.seen.IsZero() && !r.seen.Before(connected) {
		return true
	}
	if r.waiting.IsZero() {
		r.waiting = now
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	return false
}

// waitingRooms returns the rooms waiting now.
func (a *admission) waitingRooms() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for name, r := range a.rooms {
		if !r.waiting.IsZero() {
			out = append(out, name)
		}
	}
	return out
}

// update records a check that began at began: rooms with a consumer stream stop
// waiting. Rooms still waiting that no sender asked for since before, the previous
// check, stop waiting too: their messages are gone (sent by an admitted sender,
// dropped), and a sender asking again starts a new wait.
func (a *admission) update(began time.Time, consumers map[string]int, before time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for name, r := range a.rooms {
		if consumers[name] > 0 {
			r.seen = began
		}
		if r.waiting.IsZero() {
			if r.asked.Before(now.Add(-time.Hour)) {
				delete(a.rooms, name) // forget rooms long unused
			}
			continue
		}
		if consumers[name] > 0 || (!before.IsZero() && r.asked.Before(before)) {
			a.held += now.Sub(r.waiting)
			r.waiting = time.Time{}
		}
	}
}

// run is the poller: while any room waits it reads the metrics, and wakes the
// senders after each read. It returns when ctx ends.
func (a *admission) run(ctx context.Context, wake func()) {
	var before time.Time // when the previous read began
	failing := false
	for {
		rooms := a.waitingRooms()
		if len(rooms) == 0 {
			before = time.Time{}
			select {
			case <-a.kick:
				continue
			case <-ctx.Done():
				return
			}
		}
		began := time.Now()
		consumers, err := a.admin.ConsumerStreams(ctx, rooms)
		if ctx.Err() != nil {
			return
		}
		a.checks.Add(1)
		if err != nil {
			a.failures.Add(1)
			if !failing {
				// Once per streak: the rooms stay held, their messages buffered.
				a.logger.Error("Loom admin listener unreadable: rooms wait for a consumer until it answers", err, watermill.LogFields{"rooms_waiting": len(rooms)})
			}
			failing = true
		} else {
			if failing {
				a.logger.Info("Loom admin listener readable again", nil)
			}
			failing = false
			a.update(began, consumers, before)
			before = began
		}
		wake()
		t := time.NewTimer(admissionInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// stats returns how many rooms wait now and how long rooms have been held in all,
// waits under way included.
func (a *admission) stats() (waiting int, held time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	held = a.held
	now := time.Now()
	for _, r := range a.rooms {
		if !r.waiting.IsZero() {
			waiting++
			held += now.Sub(r.waiting)
		}
	}
	return waiting, held
}

func (a *admission) close() { a.admin.Close() }
