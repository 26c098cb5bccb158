package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Producer is one producer session. Send may not be called concurrently with itself:
// a stream carries one message after another.
//
// The server reads a producer stream one message at a time and closes its side only
// after the last message was acknowledged by a consumer or discarded, so Close
// returning nil means the server is done with every message sent on this session.
// Over QUIC a stopping server ends its side the same way without reading the rest,
// so Close returns nil only once the server has also answered on the connection
// after that end (see ErrUnconfirmed).
type Producer struct {
	c      *Client
	s      stream
	room   string
	opened time.Time // when the hello was sent
	w      *bufio.Writer
	werr   *writeErr
	hdr    []byte

	mu      sync.Mutex // serialises Send and Close
	sent    atomic.Int64
	finSent atomic.Bool
	aborted atomic.Bool

	done   chan struct{} // closed when the server has ended its side
	srvErr error         // why, valid after done
	closed bool

	stop     chan struct{} // closed by abort
	stopOnce sync.Once
}

func newProducer(c *Client, s stream, room string, opened time.Time) *Producer {
	p := &Producer{
		c:      c,
		s:      s,
		room:   room,
		opened: opened,
		werr:   &writeErr{w: s},
		hdr:    make([]byte, 0, c.cfg.Limits.MaxKey+3*binary.MaxVarintLen64),
		done:   make(chan struct{}),
		stop:   make(chan struct{}),
	}
	// Small: it only coalesces a header with a small body; chunks pass through.
	p.w = bufio.NewWriterSize(p.werr, 4<<10)
	return p
}

// watch waits for the server to end its side. Before this side's FIN that can only
// be a refusal or a protocol error, so writes are cut off at once instead of filling
// a stream nobody reads.
func (p *Producer) watch() {
	err := p.s.Wait()
	ended := time.Now()
	fin := p.finSent.Load()
	if err == nil && p.s.PeerStopped(fin) {
		err = errStoppedReading
	}
	switch {
	case err == nil && !fin:
		// Before this side's end: the server stopped reading early.
		_, verified := p.c.verified.Load(p.room)
		err = &endedEarly{sent: p.sent.Load(), verified: verified}
		if verified {
			// Not a refusal: a server stopping (or a protocol error). Every connection
			// of this process to it is checked now, not after its own silence.
			newsFor(p.c.cfg.Addr).announce()
		}
	case err != nil && p.aborted.Load() && !isVerdict(err):
		err = fmt.Errorf("producer session aborted: %w", ErrClosed)
	case err == nil && p.c.h3 == nil:
		// A plain FIN after ours: every message handled, or a server stopping.
		if perr := p.c.proveAlive(p.room, ended, p.stop); perr != nil {
			if p.aborted.Load() {
				err = fmt.Errorf("producer session aborted: %w", ErrClosed)
			} else {
				err = fmt.Errorf("%w (%d messages sent): %w", ErrUnconfirmed, p.sent.Load(), perr)
			}
		}
	}
	if err == nil {
		p.c.verified.Store(p.room, true)
	}
	if err != nil {
		p.s.Abort()
	}
	p.srvErr = err
	p.c.forget(p.s)
	close(p.done)
}

// Send writes one message: key, declared size (0 for unknown) and body. When size is
// not 0 the body must have exactly that length. If ctx ends or anything fails midway
// the session is aborted, because a half-written message cannot be taken back: open a
// new one. Send returning nil means the message left this process, not that it
// arrived; Close says that.
func (p *Producer) Send(ctx context.Context, key string, size uint64, body io.Reader) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	h := wire.Header{Key: key, Size: size}
	if err := h.Validate(p.c.cfg.Limits); err != nil {
		return fmt.Errorf("loom: send: %w", err)
	}
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, p.abort)
	}
	p.hdr = wire.AppendHeader(p.hdr[:0], h)
	_, err := p.w.Write(p.hdr)
	if err == nil {
		chunk := p.c.chunkBuf()
		_, err = wire.WriteBody(p.w, body, size, p.c.cfg.Limits, p.c.cfg.ChunkSize, *chunk)
		p.c.chunks.Put(chunk)
	}
	if err == nil {
		err = p.w.Flush()
	}
	if !stop() && ctx.Err() != nil {
		return fmt.Errorf("loom: send %q: %w", key, ctx.Err())
	}
	if err != nil {
		if p.werr.failed() && ctx.Err() == nil {
			// The stream refused a write: the server's verdict (a 401, a reset) is
			// on its way and explains it better than the write error. Aborting now
			// could cancel the request before the verdict arrives.
			t := time.NewTimer(verdictGrace)
			select {
			case <-p.done:
			case <-t.C:
			}
			t.Stop()
		}
		p.abort()
		<-p.done
		if isVerdict(p.srvErr) {
			return fmt.Errorf("loom: send %q: %w", key, p.srvErr)
		}
		return fmt.Errorf("loom: send %q: %w", key, err)
	}
	p.sent.Add(1)
	return nil
}

func (p *Producer) usable() error {
	select {
	case <-p.done:
		if isVerdict(p.srvErr) {
			return fmt.Errorf("loom: producer: %w", p.srvErr)
		}
	default:
	}
	if p.closed || p.aborted.Load() {
		return ErrClosed
	}
	select {
	case <-p.done:
		return fmt.Errorf("loom: producer: %w", p.srvErr)
	default:
		return nil
	}
}

func (p *Producer) abort() {
	p.aborted.Store(true)
	p.stopOnce.Do(func() { close(p.stop) })
	p.s.Abort()
}

// Abort drops the session at once; a message being sent arrives truncated.
func (p *Producer) Abort() {
	p.abort()
	<-p.done
}

// Close ends the session (FIN) and waits, bounded by ctx, until the server has ended
// its side: then every message sent was acknowledged by a consumer or discarded by
// the server. Over QUIC it also waits until the server has answered a probe session
// opened after that end (shared by the streams of the connection; one round trip
// when the server is live), because a stopping server ends producer streams the same
// way without reading them; if the connection dies first it returns ErrUnconfirmed.
// It returns why not otherwise (ErrStreamEnded, refused, protocol error, connection
// lost, ctx ended). Further calls return the first result.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed && !p.aborted.Load() {
		p.awaitRefusal(ctx)
		p.closed = true
		p.finSent.Store(true)
		err := p.w.Flush()
		if err == nil {
			err = p.s.CloseWrite()
		}
		if err != nil {
			p.mu.Unlock()
			p.abort()
			<-p.done
			if isVerdict(p.srvErr) {
				err = p.srvErr
			}
			return fmt.Errorf("loom: producer close: %w", err)
		}
	}
	p.closed = true
	p.mu.Unlock()
	select {
	case <-p.done:
		if p.srvErr != nil {
			return fmt.Errorf("loom: producer close: %w", p.srvErr)
		}
		return nil
	case <-ctx.Done():
		p.abort()
		<-p.done
		return fmt.Errorf("loom: producer close: the server did not end the stream in time: %w", ctx.Err())
	}
}

// awaitRefusal holds the FIN of a stream on a room not yet verified on this
// connection until a refusal would have arrived; see Client.refusalWindow. A server
// refuses a QUIC stream by closing it when it reads the hello; if this side's FIN is
// already there by then, a server may read hello, messages and FIN at once and the
// close looks like a confirm. So the FIN waits for evidence that the server has read
// the hello: a liveness probe opened after it (a later stream of this connection)
// answered, and then as long again as that probe took, since the server serves each
// stream on its own and may have served the probe first; and at least the fixed
// window. On an idle server that is the fixed window; on a loaded one it grows with
// the server's own delay, where a fixed window would let refusals pass for confirms.
func (p *Producer) awaitRefusal(ctx context.Context) {
	if p.c.h3 != nil {
		return // HTTP/3 answers with a status
	}
	if _, ok := p.c.verified.Load(p.room); ok {
		return
	}
	until := p.opened.Add(p.c.refusalWindow())
	pr := p.c.probeAfter(p.room, p.opened, p.done, ctx.Done())
	if pr == nil {
		return // refused or ended meanwhile, or ctx ended: Close sees which
	}
	if pr.err == nil {
		if late := pr.answered.Add(pr.answered.Sub(pr.opened)); late.After(until) {
			until = late
		}
	}
	wait := time.Until(until)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.done:
	case <-ctx.Done():
	}
}

// Sent returns the number of messages written on this session.
func (p *Producer) Sent() int { return int(p.sent.Load()) }

// verdictGrace bounds the wait for the server's verdict after a failed write.
const verdictGrace = time.Second

// writeErr tells a failed stream write from a failed body source.
type writeErr struct {
	w   io.Writer
	err atomic.Bool
}

func (w *writeErr) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		w.err.Store(true)
	}
	return n, err
}

func (w *writeErr) failed() bool { return w.err.Load() }

// endedEarly: the server ended a producer stream before this side's end.
type endedEarly struct {
	sent     int64
	verified bool // a stream on this room was confirmed before: not a refusal
}

func (e *endedEarly) Error() string {
	switch {
	case e.sent == 0 && !e.verified:
		return "the server ended the stream right after the hello, before any message: the token was refused, the hello rejected, or the server is stopping"
	case e.verified:
		return fmt.Sprintf("%s (%d sent; this side had not ended the stream): the server is stopping or found a protocol error", ErrStreamEnded, e.sent)
	default:
		return fmt.Sprintf("%s (%d sent; this side had not ended the stream): the server is stopping, found a protocol error, or refused the token or hello", ErrStreamEnded, e.sent)
	}
}

// Is matches ErrStreamEnded, and ErrRefused while a refusal is possible (the room
// not confirmed on this client).
func (e *endedEarly) Is(target error) bool {
	return target == ErrStreamEnded || (target == ErrRefused && !e.verified)
}
