package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Producer is one producer session. Send may not be called concurrently with itself:
// a stream carries one message after another.
//
// The server reads a producer stream one message at a time and closes its side only
// after the last message was acknowledged by a consumer or discarded, so Close
// returning nil means the server is done with every message sent on this session.
type Producer struct {
	c     *Client
	s     stream
	w     *bufio.Writer
	hdr   []byte
	chunk []byte

	mu      sync.Mutex // serialises Send and Close
	sent    atomic.Int64
	finSent atomic.Bool
	aborted atomic.Bool

	done   chan struct{} // closed when the server has ended its side
	srvErr error         // why, valid after done
	closed bool
}

func newProducer(c *Client, s stream) *Producer {
	p := &Producer{
		c:     c,
		s:     s,
		w:     bufio.NewWriterSize(s, c.cfg.ChunkSize+2*binary.MaxVarintLen64),
		hdr:   make([]byte, 0, c.cfg.Limits.MaxKey+3*binary.MaxVarintLen64),
		chunk: make([]byte, c.cfg.ChunkSize+binary.MaxVarintLen64),
		done:  make(chan struct{}),
	}
	c.wg.Go(p.watch)
	return p
}

// watch waits for the server to end its side. Before this side's FIN that can only
// be a refusal or a protocol error, so writes are cut off at once instead of filling
// a stream nobody reads.
func (p *Producer) watch() {
	err := p.s.Wait()
	if err == nil && !p.finSent.Load() {
		if p.sent.Load() == 0 {
			err = ErrRefused
		} else {
			err = fmt.Errorf("%w: the server closed the producer stream before its end", ErrProtocol)
		}
	}
	if err != nil && p.aborted.Load() {
		err = fmt.Errorf("producer session aborted: %w", ErrClosed)
	}
	if err != nil {
		p.s.Abort()
	}
	p.srvErr = err
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
		_, err = wire.WriteBody(p.w, body, size, p.c.cfg.Limits, p.c.cfg.ChunkSize, p.chunk)
	}
	if err == nil {
		err = p.w.Flush()
	}
	if !stop() && ctx.Err() != nil {
		return fmt.Errorf("loom: send %q: %w", key, ctx.Err())
	}
	if err != nil {
		p.abort()
		select {
		case <-p.done:
			if p.srvErr != nil && !errors.Is(p.srvErr, ErrClosed) {
				return fmt.Errorf("loom: send %q: %w", key, p.srvErr)
			}
		default:
		}
		return fmt.Errorf("loom: send %q: %w", key, err)
	}
	p.sent.Add(1)
	return nil
}

func (p *Producer) usable() error {
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
	p.s.Abort()
}

// Abort drops the session at once; a message being sent arrives truncated.
func (p *Producer) Abort() {
	p.abort()
	<-p.done
}

// Close ends the session (FIN) and waits, bounded by ctx, until the server has ended
// its side: then every message sent was acknowledged by a consumer or discarded by
// the server. It returns why not otherwise (refused, protocol error, connection lost,
// ctx ended). Further calls return the first result.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed && !p.aborted.Load() {
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

// Sent returns the number of messages written on this session.
func (p *Producer) Sent() int { return int(p.sent.Load()) }
