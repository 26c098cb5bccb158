// Package client speaks the Loom wire protocol over QUIC (ALPN loom/1) and HTTP/3
// (POST /stream). One Client is one connection; each Producer or Consumer is one
// stream on it, and many may run at once.
//
// Loom tells a client nothing on success, and on QUIC it refuses a hello by silently
// closing the stream, so a refusal surfaces at the first call that can see it:
// Consumer.Next, Producer.Send or Producer.Close. No error or log line carries the
// token.
package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Errors callers may test for with errors.Is.
var (
	// ErrRefused: the server closed the stream right after the hello: the token was
	// refused or the hello rejected. On HTTP/3 a 401 also matches ErrUnauthorized and
	// a 400 ErrProtocol.
	ErrRefused = errors.New("server closed the stream after the hello (token refused or hello rejected)")
	// ErrUnauthorized: HTTP/3 401, the server refused the token.
	ErrUnauthorized = errors.New("unauthorised: the server refused the token (HTTP 401)")
	// ErrProtocol: the server rejected what this client sent (HTTP/3 400, or a QUIC
	// producer stream closed by the server before its end).
	ErrProtocol = errors.New("protocol error reported by the server")
	// ErrNotLoom: the HTTP/3 endpoint answered 404 or 405: it is not a Loom server.
	ErrNotLoom = errors.New("not a Loom endpoint")
	// ErrClosed: the session or client was closed by this side.
	ErrClosed = errors.New("loom: closed")
	// ErrStreamEnded: the server ended a producer stream before this side had ended
	// it, so before reading every message sent: a server stopping (loomd's graceful
	// stop ends producer streams this way), a protocol error, or, right after the
	// hello, a refusal. The messages may or may not have arrived.
	ErrStreamEnded = errors.New("the server ended the stream before reading every message")
	// ErrUnconfirmed: the server ended a QUIC producer stream after this side's end,
	// as it does once every message was handled, but did not prove alive afterwards
	// (see Producer.Close): a server stopping ends its streams the same way without
	// reading what is left, so the messages may or may not have arrived.
	ErrUnconfirmed = errors.New("the server ended the stream but did not answer on the connection afterwards, as a stopping server would: messages may be lost")
)

// Client is one connection to a Loom server.
type Client struct {
	cfg    Config
	token  *tokenSource
	logger watermill.LoggerAdapter
	conn   *quic.Conn
	h3     *http3.ClientConn
	wg     sync.WaitGroup // every goroutine this client or its sessions start
	// verified holds the rooms a producer stream was confirmed on: auth depends only
	// on token, room and role, so later streams there need not wait for a refusal.
	verified sync.Map

	closeOnce sync.Once
	closed    chan struct{}

	smu     sync.Mutex
	streams map[stream]struct{} // open sessions, aborted by Close

	// chunks holds Send's chunk buffers, so a stream per batch costs no 64 KiB each.
	chunks sync.Pool

	pmu   sync.Mutex
	probe *probe // the latest liveness probe; see proveAlive

	gone atomic.Bool // the watchdog closed the connection: see Gone
}

// Gone reports whether the connection was closed because the server restarted or
// lost it: a fresh connection to the server worked while this one stayed silent
// when poked. Every other connection to that server is then most likely dead too.
func (c *Client) Gone() bool { return c.gone.Load() }

// chunkBuf returns a buffer for wire.WriteBody; put it back in c.chunks.
func (c *Client) chunkBuf() *[]byte {
	if b, ok := c.chunks.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, c.cfg.ChunkSize+binary.MaxVarintLen64)
	return &b
}

// Dial connects to the server in cfg. The context bounds the handshake only.
func Dial(ctx context.Context, cfg Config, logger watermill.LoggerAdapter) (*Client, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loom client config: %w", err)
	}
	tok, err := newTokenSource(cfg, logger)
	if err != nil {
		return nil, fmt.Errorf("loom client config: %w", err)
	}
	alpn := ALPNLoom
	if cfg.Transport == TransportH3 {
		alpn = ALPNH3
	}
	tlsConf, err := cfg.tlsConfig(alpn, logger)
	if err != nil {
		return nil, fmt.Errorf("loom client config: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	c := &Client{cfg: cfg, token: tok, logger: logger, closed: make(chan struct{}), streams: map[stream]struct{}{}}
	conn, err := dialStaggered(dctx, cfg.Addr, tlsConf, c.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("loom: dial %s over %s: %w", cfg.Addr, cfg.Transport, err)
	}
	c.conn = conn
	if cfg.Transport == TransportH3 {
		c.h3 = (&http3.Transport{}).NewClientConn(conn)
	}
	c.wg.Go(func() { c.watchdog(tlsConf) })
	return c, nil
}

func (c *Client) quicConfig() *quic.Config {
	return &quic.Config{KeepAlivePeriod: c.cfg.KeepAlive, MaxIdleTimeout: c.cfg.IdleTimeout}
}

// Done is closed when the connection has ended, by Close or by failure.
func (c *Client) Done() <-chan struct{} { return c.conn.Context().Done() }

// Err says why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	if c.conn.Context().Err() == nil {
		return nil
	}
	return context.Cause(c.conn.Context())
}

// Close closes the connection and every session on it, and waits for their
// goroutines. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.smu.Lock()
		close(c.closed)
		// Sessions nobody closed: abort them, or an HTTP/3 request body pipe would
		// keep the transport's copy goroutine waiting.
		for s := range c.streams {
			s.Abort()
		}
		c.smu.Unlock()
		_ = c.conn.CloseWithError(0, "client closed")
	})
	c.wg.Wait()
	return nil
}

// Produce opens a producer session on room.
func (c *Client) Produce(ctx context.Context, room string) (*Producer, error) {
	s, err := c.open(ctx, wire.RoleProducer, room)
	if err != nil {
		return nil, err
	}
	p := newProducer(c, s, room, time.Now())
	if !c.goLive(p.watch) {
		s.Abort()
		c.forget(s)
		return nil, ErrClosed
	}
	return p, nil
}

// Consume opens a consumer session on room. On HTTP/3 it waits for the server's
// answer, so a refused token fails here; on QUIC the refusal surfaces at Next.
func (c *Client) Consume(ctx context.Context, room string) (*Consumer, error) {
	s, err := c.open(ctx, wire.RoleConsumer, room)
	if err != nil {
		return nil, err
	}
	if hs, ok := s.(*h3Stream); ok {
		if err := hs.waitResponse(ctx); err != nil {
			hs.Abort()
			c.forget(hs)
			return nil, fmt.Errorf("loom: consume %q: %w", room, err)
		}
	}
	k := newConsumer(c, s)
	if !c.goLive(k.readHeaders) {
		s.Abort()
		c.forget(s)
		return nil, ErrClosed
	}
	return k, nil
}

// refusalWindow is the least time after its hello a producer stream on a room not
// yet verified waits before its FIN. On QUIC a refusal is a silent close; if the
// whole stream, FIN included, is at the server before it reads the hello, the
// refusal is lost and the close would look like a confirm. One round trip is enough
// in principle; the fixed part covers a server slow to read the hello, and
// Producer.awaitRefusal adds what a liveness probe shows of the server's delay.
func (c *Client) refusalWindow() time.Duration {
	if c.h3 != nil {
		return 0 // HTTP/3 answers with a status
	}
	return 50*time.Millisecond + 2*c.conn.ConnectionStats().SmoothedRTT
}

// stream is one session's byte streams, whatever the carrier.
type stream interface {
	io.Reader // the server's bytes
	io.Writer // the client's bytes
	// CloseWrite ends the client's side (QUIC FIN, end of the request body).
	CloseWrite() error
	// Abort resets both directions; blocked calls return at once.
	Abort()
	// Wait blocks until the server has ended its side: nil for a clean end, else why.
	Wait() error
	// PeerStopped reports whether the server stopped reading before the end; see
	// quicStream.PeerStopped. HTTP/3 says so in its status instead.
	PeerStopped(probe bool) bool
}

func (c *Client) open(ctx context.Context, role wire.Role, room string) (stream, error) {
	tok, changed := c.token.get()
	if changed {
		c.verified.Clear() // confirmed for the old token, not for this one
	}
	h := wire.Hello{Role: role, Name: c.cfg.Name, Room: room, Token: tok}
	if err := h.Validate(c.cfg.Limits); err != nil {
		return nil, err
	}
	select {
	case <-c.closed:
		return nil, ErrClosed
	default:
	}
	var (
		s   stream
		err error
	)
	if c.h3 != nil {
		s, err = c.openH3(ctx)
	} else {
		s, err = c.openQUIC(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("loom: open %s stream on room %q: %w", role, room, err)
	}
	if !c.track(s) {
		s.Abort()
		return nil, ErrClosed
	}
	stop := context.AfterFunc(ctx, s.Abort)
	_, err = s.Write(wire.AppendHello(nil, h))
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		s.Abort()
		c.forget(s)
		return nil, fmt.Errorf("loom: send %s hello on room %q: %w", role, room, err)
	}
	return s, nil
}

// goLive starts f as one of the client's goroutines, which Close waits for; false,
// and f not started, once Close has begun: no goroutine is added while Close waits
// (a WaitGroup must not grow once its Wait may have returned).
func (c *Client) goLive(f func()) bool { return c.whileOpen(func() { c.wg.Go(f) }) }

// track registers an open session; false once the client is closed.
func (c *Client) track(s stream) bool { return c.whileOpen(func() { c.streams[s] = struct{}{} }) }

// whileOpen runs f under smu, where Close marks the client closed, unless it is
// closed already; it reports whether f ran.
func (c *Client) whileOpen(f func()) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	select {
	case <-c.closed:
		return false
	default:
		f()
		return true
	}
}

// forget drops a session that has ended.
func (c *Client) forget(s stream) {
	c.smu.Lock()
	delete(c.streams, s)
	c.smu.Unlock()
}

func (c *Client) openQUIC(ctx context.Context) (stream, error) {
	// OpenStreamSync waits while the server's concurrent-stream limit is reached.
	str, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{str}, nil
}

// quicStream is a session on one bidirectional QUIC stream.
type quicStream struct{ *quic.Stream }

func (s quicStream) CloseWrite() error { return s.Stream.Close() }

func (s quicStream) Abort() {
	s.CancelWrite(0)
	s.CancelRead(0)
}

func (s quicStream) Wait() error {
	// The server sends a producer nothing: anything until EOF is ignored.
	var buf [512]byte
	for {
		if _, err := s.Read(buf[:]); err != nil {
			var se *quic.StreamError
			if errors.As(err, &se) && se.Remote {
				return errStoppedReading
			}
			if !errors.Is(err, io.EOF) {
				return err
			}
			return nil
		}
	}
}

// PeerStopped reports whether the server stopped reading (STOP_SENDING): a server
// that ends a stream cleanly has read it to its end, one that refuses it has not.
// probe may only be set when no Write can be running: after our FIN, the context's
// cause is fixed, but a zero-length Write still reports the reset.
func (s quicStream) PeerStopped(probe bool) bool {
	var se *quic.StreamError
	if errors.As(context.Cause(s.Context()), &se) && se.Remote {
		return true
	}
	if probe {
		_, err := s.Write(nil)
		return errors.As(err, &se) && se.Remote
	}
	return false
}

// errStoppedReading: the server closed a QUIC stream without reading it to its end.
// QUIC does not say why, so it matches both ErrRefused and ErrProtocol.
var errStoppedReading = fmt.Errorf("%w; or a %w", ErrRefused, ErrProtocol)

// isVerdict reports whether err is the server's answer rather than a local failure.
func isVerdict(err error) bool {
	return errors.Is(err, ErrRefused) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrNotLoom) || errors.Is(err, ErrStreamEnded)
}

// h3Stream is a session as one POST /stream request. The request body is a pipe the
// transport reads from; RoundTrip runs in its own goroutine before the hello is
// written, so the hello never waits for a request that has not started.
type h3Stream struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{} // closed when RoundTrip returned
	resp   *http.Response
	err    error // RoundTrip's error or the status as an error
	once   sync.Once
}

func (c *Client) openH3(ctx context.Context) (stream, error) {
	pr, pw := io.Pipe()
	// The request lives as long as the session, not as long as ctx.
	reqCtx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, "https://"+c.cfg.Addr+"/stream", pr)
	if err != nil {
		cancel()
		return nil, err
	}
	req.ContentLength = -1
	s := &h3Stream{pw: pw, cancel: cancel, done: make(chan struct{})}
	started := c.goLive(func() {
		defer close(s.done)
		resp, err := c.h3.RoundTrip(req)
		if err != nil && errors.Is(err, io.EOF) && !errors.Is(err, ErrClosed) {
			// The server ended the request stream without a response: what loomd's
			// graceful stop does to a producer request (a cut response). Said so, the
			// publisher replaces its connections at once rather than sending again on
			// one that looks alive until the watchdog finds it dead.
			err = fmt.Errorf("%w (no response): %w", ErrStreamEnded, err)
			newsFor(c.cfg.Addr).announce() // the server may be going: check the others
		}
		if err == nil {
			err = statusError(resp.StatusCode)
			if err != nil {
				resp.Body.Close()
			}
		}
		s.resp, s.err = resp, err
		if err != nil {
			// A refusal before the body ended: make the writer fail now, not hang.
			_ = pr.CloseWithError(err)
		}
	})
	if !started {
		cancel()
		_ = pw.CloseWithError(ErrClosed)
		return nil, ErrClosed
	}
	return s, nil
}

// statusError maps Loom's HTTP/3 answers to errors.
func statusError(code int) error {
	switch code {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized:
		return fmt.Errorf("%w (%w)", ErrUnauthorized, ErrRefused)
	case http.StatusBadRequest:
		return fmt.Errorf("%w: HTTP 400", ErrProtocol)
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("%w: HTTP %d for POST /stream", ErrNotLoom, code)
	}
	return fmt.Errorf("loom: unexpected HTTP status %d", code)
}

func (s *h3Stream) Write(p []byte) (int, error) { return s.pw.Write(p) }
func (s *h3Stream) PeerStopped(bool) bool       { return false }
func (s *h3Stream) CloseWrite() error           { return s.pw.Close() }

func (s *h3Stream) Abort() {
	s.once.Do(func() {
		_ = s.pw.CloseWithError(ErrClosed)
		s.cancel()
	})
}

// waitResponse waits for the response headers.
func (s *h3Stream) waitResponse(ctx context.Context) error {
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *h3Stream) Read(p []byte) (int, error) {
	<-s.done
	if s.err != nil {
		return 0, s.err
	}
	return s.resp.Body.Read(p)
}

func (s *h3Stream) Wait() error {
	<-s.done
	if s.err != nil {
		return s.err
	}
	_, err := io.Copy(io.Discard, s.resp.Body)
	return err
}
