package main

import (
	"net"
	"sync"
	"testing"
)

// udpRelay forwards UDP datagrams between the clients that send to its own
// address and a target that can be changed. A test holds the relay's port for
// its whole life, so a server can go away and come back (on a new port of its
// own) behind one address, without anyone having to bind a port that was just
// freed, which another process may have taken meanwhile.
type udpRelay struct {
	pc net.PacketConn
	wg sync.WaitGroup

	mu     sync.Mutex
	target string                  // "" drops every datagram
	peers  map[string]*net.UDPConn // client address -> its socket towards target
	closed bool
}

func startRelay(t *testing.T, target string) *udpRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{pc: pc, target: target, peers: map[string]*net.UDPConn{}}
	r.wg.Go(r.serve)
	t.Cleanup(r.close)
	return r
}

func (r *udpRelay) addr() string { return r.pc.LocalAddr().String() }

// retarget sends from now on to target ("" drops everything); the sockets
// towards the old target are closed, so nothing more comes back from it.
func (r *udpRelay) retarget(target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = target
	for k, up := range r.peers {
		up.Close()
		delete(r.peers, k)
	}
}

func (r *udpRelay) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		up := r.upstream(from)
		if up != nil {
			_, _ = up.Write(buf[:n])
		}
	}
}

// upstream returns the socket towards the target for a client, opening it and
// its reader on first use; nil when datagrams are dropped.
func (r *udpRelay) upstream(from net.Addr) *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.target == "" {
		return nil
	}
	if up, ok := r.peers[from.String()]; ok {
		return up
	}
	ta, err := net.ResolveUDPAddr("udp", r.target)
	if err != nil {
		return nil
	}
	up, err := net.DialUDP("udp", nil, ta)
	if err != nil {
		return nil
	}
	r.peers[from.String()] = up
	r.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return // closed by retarget or close
			}
			_, _ = r.pc.WriteTo(buf[:n], from)
		}
	})
	return up
}

func (r *udpRelay) close() {
	r.mu.Lock()
	r.closed = true
	for k, up := range r.peers {
		up.Close()
		delete(r.peers, k)
	}
	r.mu.Unlock()
	r.pc.Close()
	r.wg.Wait()
}
