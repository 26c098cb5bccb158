package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Why a confirm needs a liveness proof.
//
// Loom tells a producer nothing but the end of its stream. On SIGTERM loomd stops
// reading every producer stream, ends its side with a plain FIN whatever is left
// unread, and exits without closing the connection. A producer that had already sent
// its own FIN then sees exactly what it sees when every message was handled. What
// differs is that the server is gone right after. So a QUIC producer stream is
// confirmed only once the server has answered a probe session opened after its FIN
// arrived: a producer stream on the same room with a hello and no message, which a
// live server reads to its end and ends (FIN). A stopping server serves no new
// stream, and an exited one answers nothing, so the probe stays unanswered and the
// batch unconfirmed until the connection is found dead. Probes are shared: every
// stream whose FIN arrived before a probe was opened is confirmed by its answer.

// probe is one liveness probe of the connection.
type probe struct {
	opened   time.Time     // before the probe's hello was written
	done     chan struct{} // closed when err and answered are set
	err      error         // nil: the server answered
	answered time.Time     // when the server's answer (or the failure) came
}

// latestProbe returns the latest probe if it was opened at or after since, or if it
// is still running (the caller waits for it and asks again); otherwise it starts a
// new one on room.
func (c *Client) latestProbe(room string, since time.Time) *probe {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	pr := c.probe
	if pr == nil || (pr.opened.Before(since) && isDone(pr.done)) {
		pr = &probe{opened: time.Now(), done: make(chan struct{})}
		c.probe = pr
		if !c.goLive(func() {
			pr.err = c.runProbe(room)
			pr.answered = time.Now()
			close(pr.done)
		}) {
			pr.err, pr.answered = ErrClosed, time.Now()
			close(pr.done)
		}
	}
	return pr
}

// probeAfter returns a probe opened at or after since, once it has ended; nil if
// stop or cancel is closed first.
func (c *Client) probeAfter(room string, since time.Time, stop, cancel <-chan struct{}) *probe {
	for {
		pr := c.latestProbe(room, since)
		select {
		case <-pr.done:
		case <-stop:
			return nil
		case <-cancel:
			return nil
		}
		if !pr.opened.Before(since) {
			return pr
		}
		// It was opened before since: it proves nothing for it.
	}
}

// proveAlive returns nil once the server has answered a probe opened after since, on
// room; or why not. It returns early with ErrClosed when stop is closed.
func (c *Client) proveAlive(room string, since time.Time, stop <-chan struct{}) error {
	pr := c.probeAfter(room, since, stop, nil)
	if pr == nil {
		return ErrClosed
	}
	return pr.err
}

// pendingProbe returns the latest probe while it has no answer, else nil.
func (c *Client) pendingProbe() *probe {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if c.probe == nil || isDone(c.probe.done) {
		return nil
	}
	return c.probe
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// runProbe opens a producer session on room without a message, ends it and waits
// for the server to end its side, or for the connection or client to end.
func (c *Client) runProbe(room string) error {
	ctx, cancel := c.lifeContext()
	defer cancel()
	s, err := c.open(ctx, wire.RoleProducer, room)
	if err != nil {
		return fmt.Errorf("liveness probe: %w", err)
	}
	defer c.forget(s)
	abort := context.AfterFunc(ctx, s.Abort)
	defer abort()
	if err := s.CloseWrite(); err != nil {
		s.Abort()
		return fmt.Errorf("liveness probe: %w", err)
	}
	err = s.Wait()
	if err == nil || errors.Is(err, errStoppedReading) {
		return nil // the server read the probe and answered, whatever it thought of it
	}
	s.Abort()
	if cause := c.Err(); cause != nil {
		return fmt.Errorf("liveness probe: connection lost: %w", cause)
	}
	return fmt.Errorf("liveness probe: %w", err)
}

// Detecting a server that vanished.
//
// A server killed, or stopped as loomd stops, sends nothing; restarted on the same
// port it knows nothing of old connections and drops their packets. QUIC alone would
// notice only at the idle timeout. The watchdog notices sooner: in a live connection
// a packet arrives at least every keep-alive period (the PING's acknowledgement), so
// a connection that heard nothing for KeepAlive plus a margin is suspect. It then
// dials the same address afresh. If that handshake succeeds, the server is up; this
// connection is then poked (a stream opened and reset at once, which the server's
// QUIC stack must acknowledge) and given a grace period. Only if it still hears
// nothing is it closed, so that its sessions fail now and are opened again on a new
// connection. A slow but live server answers the poke and keeps its connection.
//
// The grace is measured on the fresh connection, at the moment the server is known
// to be up: a few of its round trips (whose samples include the server's own
// handshake work, so they grow with its load), and at least minGrace. It used to be
// twice the time the fresh dial took, counted from its first attempt: after an outage
// that included the outage itself (up to 3 s, so up to 6 s of grace), and the longer
// the server had been down, the longer a dead connection was kept once it was back.

// watchEvery is how often the watchdog looks at the connection's packet counters.
const watchEvery = 100 * time.Millisecond

// suspectMargin is what the watchdog adds to the keep-alive period before a silent
// connection is suspect: at least this, or three probe timeouts.
const suspectMargin = 500 * time.Millisecond

// minGrace is the least a poked connection gets to answer once a fresh connection to
// the server succeeded; see graceFor.
const minGrace = 500 * time.Millisecond

// graceRTTs is how many of the fresh connection's round trips (each with four mean
// deviations and the server's largest ack delay) a poked connection gets, when that
// is more than minGrace: a server far away or loaded answers late, and must not be
// taken for dead.
const graceRTTs = 8

// maxAckDelay is QUIC's default max_ack_delay: a live server may hold the poke's
// acknowledgement this long.
const maxAckDelay = 25 * time.Millisecond

// graceFor returns how long a poked connection may stay silent while fresh, a
// connection to the same server that just completed its handshake, shows the
// server up. fresh's round-trip samples come from the packets the server answered,
// retransmitted ones included, so they do not count the time the server was down.
func graceFor(fresh *quic.Conn) time.Duration {
	st := fresh.ConnectionStats()
	return max(minGrace, graceRTTs*(st.SmoothedRTT+4*st.MeanDeviation+maxAckDelay))
}

// probeDialTimeout bounds one fresh-connection check of the watchdog.
const probeDialTimeout = 3 * time.Second

// Restarts seen in this process. When one connection finds the server gone (a
// fresh connection works, the old one stays silent when poked), or a producer
// stream is ended early as a stopping server ends it, every other connection of
// this process to the same address is checked at once rather than after its own
// silence: an idle one, such as a consumer's waiting for messages,
// would notice only after keep_alive + 0.5 s. A connection that is in fact alive
// answers its poke and stays; the news costs it one handshake.
var restartSeen sync.Map // addr -> *restartNews

// restartNews is one address's news: ch is closed when a connection to it was found
// dead, and replaced.
type restartNews struct {
	mu sync.Mutex
	ch chan struct{}
}

func newsFor(addr string) *restartNews {
	v, _ := restartSeen.LoadOrStore(addr, &restartNews{ch: make(chan struct{})})
	return v.(*restartNews)
}

func (n *restartNews) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *restartNews) announce() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}

func (c *Client) watchdog(tlsConf *tls.Config) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	st := c.conn.ConnectionStats()
	last, sentThen := st.PacketsReceived, st.PacketsSent
	heard := time.Now()
	var asked time.Time // when an unanswered ack-eliciting packet was first seen sent
	news := newsFor(c.cfg.Addr)
	told := news.wait()
	var suspected *probe // the last probe that made the connection suspect
	for {
		toldNow := false
		select {
		case <-t.C:
		case <-told:
			toldNow = true
		case <-c.conn.Context().Done():
			return
		case <-c.closed:
			return
		}
		st := c.conn.ConnectionStats()
		now := time.Now()
		if st.PacketsReceived != last {
			last, sentThen, heard, asked = st.PacketsReceived, st.PacketsSent, now, time.Time{}
			if toldNow {
				told = news.wait() // it hears the server: the news is about another one
			}
			continue
		}
		// Without a packet from the server this side sends at most one ACK-only
		// packet; a second packet asks for an acknowledgement.
		if asked.IsZero() && st.PacketsSent >= sentThen+2 {
			asked = now
		}
		pto := st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + 25*time.Millisecond
		margin := max(suspectMargin, 3*pto)
		idle := now.Sub(heard) >= c.cfg.KeepAlive+margin
		unanswered := !asked.IsZero() && now.Sub(asked) >= margin
		// A liveness probe unanswered for margin: a live server answers one within
		// a round trip, but after loomd's graceful stop its QUIC stack may still
		// have acknowledged the probe's packets before it vanished, and the
		// connection then looks merely idle. Once per probe: a slow live server
		// must not cost a fresh handshake per tick.
		pr := c.pendingProbe()
		stalled := pr != nil && pr != suspected && now.Sub(pr.opened) >= margin
		if stalled {
			suspected = pr
		}
		if !idle && !unanswered && !toldNow && !stalled {
			continue
		}
		if c.checkServer(tlsConf, last, heard) {
			news.announce()
			return
		}
		told = news.wait()
		st = c.conn.ConnectionStats()
		last, sentThen, heard, asked = st.PacketsReceived, st.PacketsSent, time.Now(), time.Time{}
	}
}

// silentSince reports whether the connection has received no packet since the
// count was last.
func (c *Client) silentSince(last uint64) bool {
	return c.conn.ConnectionStats().PacketsReceived == last
}

// checkServer runs while the connection is silent: it dials the server afresh until
// the connection hears something again (false alarm), the client closes, or a fresh
// connection succeeds while this one stays silent after a poke, in which case it
// closes this connection and returns true.
func (c *Client) checkServer(tlsConf *tls.Config, last uint64, heard time.Time) bool {
	ctx, cancel := c.lifeContext()
	defer cancel()
	for c.silentSince(last) && ctx.Err() == nil {
		start := time.Now()
		dctx, dcancel := context.WithTimeout(ctx, probeDialTimeout)
		fresh, err := dialStaggered(dctx, c.cfg.Addr, tlsConf, c.quicConfig())
		dcancel()
		if err != nil {
			if ctx.Err() == nil && time.Since(start) < watchEvery {
				// Failing fast (say, no route): do not spin.
				select {
				case <-time.After(watchEvery):
				case <-ctx.Done():
				}
			}
			continue
		}
		dead := c.pokeAndWait(ctx, last, graceFor(fresh))
		_ = fresh.CloseWithError(0, "loom: liveness check")
		if !dead {
			c.logger.Debug("Loom connection was silent but answered once poked", watermill.LogFields{"addr": c.cfg.Addr, "silent": time.Since(heard).String()})
			return false
		}
		reason := fmt.Sprintf("loom: no packet from the server for %s while a new connection to it succeeded: the server restarted or lost this connection", time.Since(heard).Round(time.Millisecond))
		c.logger.Info("Loom connection dead, closing it", watermill.LogFields{"addr": c.cfg.Addr, "reason": reason})
		c.gone.Store(true)
		_ = c.conn.CloseWithError(0, reason)
		return true
	}
	return false
}

// pokeAndWait makes the connection send an ack-eliciting packet, a stream opened and
// reset at once (which a live server's QUIC stack acknowledges, and its application
// sees as a session that ended before its hello), then waits up to grace for any
// packet. It reports whether none came.
func (c *Client) pokeAndWait(ctx context.Context, last uint64, grace time.Duration) bool {
	if str, err := c.conn.OpenStream(); err == nil {
		code := quic.StreamErrorCode(0)
		if c.h3 != nil {
			code = 0x10c // H3_REQUEST_CANCELLED
		}
		str.CancelRead(code)
		str.CancelWrite(code)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !c.silentSince(last) {
			return false
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
	return c.silentSince(last)
}

// redialEvery is how often dialStaggered starts another handshake while none has
// succeeded: a handshake retransmits its first packet with a growing back-off (0.3,
// 0.9, 2.1 s after its start...), so one attempt started while the server was down
// would notice it back only seconds later. Every 500 ms, the attempts running
// together send a first packet at least every 300 ms or so; every second (as
// before) left gaps of 600 ms.
const redialEvery = 500 * time.Millisecond

// laterAttemptTimeout bounds each handshake after the first, which lasts as long as
// ctx: with redialEvery, at most five run at once.
const laterAttemptTimeout = 2 * time.Second

// dialStaggered dials addr, starting a new handshake every redialEvery until one
// succeeds or ctx ends. The first success wins; the others are cancelled or closed.
func dialStaggered(ctx context.Context, addr string, tlsConf *tls.Config, qconf *quic.Config) (*quic.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		conn *quic.Conn
		err  error
	}
	results := make(chan result)
	running := 0
	attempt := func(first bool) {
		running++
		go func() {
			actx, acancel := ctx, context.CancelFunc(func() {})
			if !first {
				actx, acancel = context.WithTimeout(ctx, laterAttemptTimeout)
			}
			conn, err := quic.DialAddr(actx, addr, tlsConf.Clone(), qconf.Clone())
			acancel()
			results <- result{conn, err}
		}()
	}
	attempt(true)
	tick := time.NewTicker(redialEvery)
	defer tick.Stop()
	var won *quic.Conn
	var firstErr error
	for running > 0 {
		select {
		case r := <-results:
			running--
			switch {
			case r.err == nil && won == nil:
				won = r.conn
				cancel()
			case r.err == nil:
				_ = r.conn.CloseWithError(0, "loom: another handshake won")
			case firstErr == nil:
				firstErr = r.err
			}
		case <-tick.C:
			if won == nil && ctx.Err() == nil {
				attempt(false)
			}
		}
	}
	if won != nil {
		return won, nil
	}
	return nil, firstErr
}

// lifeContext returns a context that ends with the connection, when the client
// closes, or when cancel is called.
func (c *Client) lifeContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(c.conn.Context(), cancel)
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { stop(); cancel() }
}
