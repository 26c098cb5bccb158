package server

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Stats counts messages and sessions. Server.Stats gives the totals, Server.RoomStats
// one room's share.
type Stats struct {
	Received         uint64 // message headers read from producers
	Delivered        uint64 // messages written whole (end chunk included) to a consumer
	Acked            uint64 // delivered messages the consumer acknowledged
	Discarded        uint64 // no consumer in the room: read and dropped
	DroppedFull      uint64 // dropped because a consumer's backlog was full
	DroppedTooLarge  uint64 // declared or actual size above Limits.MaxMessage
	LostOnDisconnect uint64 // in flight or queued when their consumer stream went away
	ProtocolErrors   uint64 // malformed hellos, headers, chunks or frames
	Refused          uint64 // sessions refused by Auth
}

type stat int

const (
	statReceived stat = iota
	statDelivered
	statAcked
	statDiscarded
	statDroppedFull
	statDroppedTooLarge
	statLost
	statProtocolErrors
	statRefused
	numStats
)

type counters [numStats]atomic.Uint64

func (c *counters) snapshot() Stats {
	return Stats{
		Received:         c[statReceived].Load(),
		Delivered:        c[statDelivered].Load(),
		Acked:            c[statAcked].Load(),
		Discarded:        c[statDiscarded].Load(),
		DroppedFull:      c[statDroppedFull].Load(),
		DroppedTooLarge:  c[statDroppedTooLarge].Load(),
		LostOnDisconnect: c[statLost].Load(),
		ProtocolErrors:   c[statProtocolErrors].Load(),
		Refused:          c[statRefused].Load(),
	}
}

// message is one message on its way from a producer to a consumer. The producer owns
// the sending side of chunks and closes it at the end of the body; settled closes once
// the producer may read its next header.
type message struct {
	hdr     wire.Header  // ID is the room's
	chunks  chan *[]byte // pooled buffers: chunkRoom bytes of headroom, then the chunk
	ended   bool         // chunks is closed; producer-owned
	settled chan struct{}
	once    sync.Once
}

// settle releases the producer; it reports whether this call did it, so that exactly
// one outcome is counted per message.
func (m *message) settle() bool {
	first := false
	m.once.Do(func() { first = true; close(m.settled) })
	return first
}

// end closes the body towards the consumer; the producer calls it at most once
// effectively.
func (m *message) end() {
	if !m.ended {
		m.ended = true
		close(m.chunks)
	}
}

// consumer is one consumer stream registered in a room. backlog, spaceWait and space
// are guarded by the room's mutex.
type consumer struct {
	id        uint64 // server-wide sequence number: QUIC stream ids repeat across connections
	client    string // the hello's client name
	rm        *room
	backlog   []*message    // queued, not in flight
	space     chan struct{} // closed when a blocked producer may retry (spaceWait set)
	spaceWait bool
	wake      chan struct{} // capacity 1: the backlog got a message
	done      chan struct{} // closed when the consumer leaves the room
	leaveOnce sync.Once
	abort     func() // unblocks the session's pending reads and writes
}

// room routes one room's messages.
type room struct {
	name  string
	stats counters

	mu        sync.Mutex
	consumers []*consumer
	lastID    uint64
	changed   chan struct{} // closed and replaced whenever consumers changes
}

func newRoom(name string) *room {
	return &room{name: name, changed: make(chan struct{})}
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// partitionOf is FNV-1a 64 of the key, modulo the partition count.
func partitionOf(key string, partitions int) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= fnvPrime
	}
	return h % uint64(partitions)
}

// score is the rendezvous weight of a consumer for a partition: FNV-1a 64 over both
// numbers (little endian), finished with the splitmix64 mixer so that neighbouring ids
// spread evenly.
func score(partition, consumerID uint64) uint64 {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], partition)
	binary.LittleEndian.PutUint64(b[8:], consumerID)
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// pick returns the consumer that wins the key's partition, or nil. Caller holds mu.
func (rm *room) pick(key string, partitions int) *consumer {
	p := partitionOf(key, partitions)
	var best *consumer
	var bestScore uint64
	for _, c := range rm.consumers {
		if sc := score(p, c.id); best == nil || sc > bestScore || (sc == bestScore && c.id < best.id) {
			best, bestScore = c, sc
		}
	}
	return best
}

// changedLocked wakes WaitConsumers callers. Caller holds mu.
func (rm *room) changedLocked() {
	close(rm.changed)
	rm.changed = make(chan struct{})
}

// countLocked counts the consumers that match. Caller holds mu.
func (rm *room) countLocked(match func(*consumer) bool) int {
	n := 0
	for _, c := range rm.consumers {
		if match(c) {
			n++
		}
	}
	return n
}

func (rm *room) join(c *consumer) {
	rm.mu.Lock()
	rm.consumers = append(rm.consumers, c)
	rm.changedLocked()
	rm.mu.Unlock()
}

// leave removes c from the room once: its queued messages are lost (loomd drops them
// too), their producers released, and the session's carrier aborted so that its
// reader and writer return. The writer settles its own in-flight message.
func (s *Server) leave(c *consumer) {
	c.leaveOnce.Do(func() {
		rm := c.rm
		rm.mu.Lock()
		for i, x := range rm.consumers {
			if x == c {
				rm.consumers = append(rm.consumers[:i], rm.consumers[i+1:]...)
				break
			}
		}
		queued := c.backlog
		c.backlog = nil
		close(c.done)
		rm.changedLocked()
		rm.mu.Unlock()
		for _, m := range queued {
			if m.settle() {
				s.inc(rm, statLost)
			}
		}
		c.abort()
	})
}

// next pops the consumer's next message, waiting for one; nil once it left.
func (c *consumer) next() *message {
	rm := c.rm
	for {
		rm.mu.Lock()
		if len(c.backlog) > 0 {
			m := c.backlog[0]
			c.backlog[0] = nil
			c.backlog = c.backlog[1:]
			if c.spaceWait {
				close(c.space)
				c.space, c.spaceWait = make(chan struct{}), false
			}
			rm.mu.Unlock()
			return m
		}
		rm.mu.Unlock()
		select {
		case <-c.wake:
		case <-c.done:
			return nil
		}
	}
}

// admit routes a header to its consumer and queues it there. It returns nil when the
// message is to be read and discarded: no consumer (counted Discarded), a full backlog
// under drop_newest (DroppedFull), or the producer gone while blocked.
func (s *Server) admit(ctx context.Context, rm *room, hdr wire.Header) *message {
	for {
		rm.mu.Lock()
		c := rm.pick(hdr.Key, s.cfg.PartitionCount)
		if c == nil {
			rm.mu.Unlock()
			s.inc(rm, statDiscarded)
			return nil
		}
		if len(c.backlog) >= s.cfg.MaxBacklogDepth {
			switch s.cfg.PartitionFull {
			case FullDropOldest:
				// The oldest queued (not in flight) message goes. Its producer is released
				// at once, where loomd may leave it waiting for an ACK that never comes.
				old := c.backlog[0]
				c.backlog[0] = nil
				c.backlog = c.backlog[1:]
				if old.settle() {
					s.inc(rm, statDroppedFull)
				}
			case FullBlock:
				if !c.spaceWait {
					c.space, c.spaceWait = make(chan struct{}), true
				}
				space, done := c.space, c.done
				rm.mu.Unlock()
				select {
				case <-space:
				case <-done:
				case <-ctx.Done():
					return nil
				}
				continue // route again: the room may have changed meanwhile
			default: // FullDropNewest
				rm.mu.Unlock()
				s.inc(rm, statDroppedFull)
				return nil
			}
		}
		rm.lastID++
		hdr.ID = rm.lastID
		m := &message{hdr: hdr, chunks: make(chan *[]byte, s.chunkSlots), settled: make(chan struct{})}
		c.backlog = append(c.backlog, m)
		rm.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return m
	}
}
