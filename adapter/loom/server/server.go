package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Backlog and chunk-buffer policies (loomd's partition_full_behavior and
// chunk_full_behavior).
const (
	FullDropNewest = "drop_newest" // a message for a full backlog is dropped
	FullDropOldest = "drop_oldest" // the oldest queued message makes room
	FullBlock      = "block"       // the producer waits
	FullDrop       = "drop"        // ChunkFull: a chunk that does not fit is dropped
)

const (
	alpnLoom = "loom/1"
	alpnH3   = "h3"

	// chunkQueueBytes bounds the chunks buffered per message in flight.
	chunkQueueBytes = 1 << 20
	// chunkRoom is the headroom before each pooled chunk for its length varint.
	chunkRoom = binary.MaxVarintLen64
	// idleTimeout is the QUIC idle timeout (above the keep-alive period).
	idleTimeout = 30 * time.Second
)

// Config configures a Server. The zero value is a usable loopback router.
type Config struct {
	Addr            string      // default "127.0.0.1:0"
	TLSConfig       *tls.Config // nil, or without certificates: a fresh self-signed ECDSA cert for 127.0.0.1, ::1, localhost
	Limits          wire.Limits // zero value: wire.DefaultLimits()
	PartitionCount  int         // default 64
	MaxBacklogDepth int         // default 128
	PartitionFull   string      // FullDropNewest (default), FullDropOldest or FullBlock
	ChunkFull       string      // FullBlock (default) or FullDrop
	Auth            Auth        // Mode ModeDisabled (default), ModeToken, ModeMTLS or ModeBoth
	// MaxIncomingStreams bounds concurrent streams per QUIC connection; default 1000.
	MaxIncomingStreams int64
	KeepAlive          time.Duration // default 15s, loomd's
	// StatelessResetKey, when set, makes the server answer packets of connections it
	// does not know (say, from before a Restart) with a QUIC stateless reset, so
	// their clients learn at once that the connection is gone. loomd sends none; a
	// restarted server resets only connections made with the same key. nil: none.
	StatelessResetKey *quic.StatelessResetKey
	// HelloDelay makes every QUIC session wait this long before the server reads its
	// hello, as a loaded server's would; zero (default): none. Meanwhile the
	// client's bytes, its FIN included, pile up unread.
	HelloDelay time.Duration
	// AdminAddr, when set ("127.0.0.1:0" for a free port), serves loomd's admin
	// listener there: Prometheus metrics on /metrics, of which loom_streams (streams
	// open now, by transport, role and room) is the one clients use (see
	// AdminURL). It stops and restarts with the server, on the same address.
	AdminAddr string
	Logger    *slog.Logger // nil: discard
}

func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Limits == (wire.Limits{}) {
		c.Limits = wire.DefaultLimits()
	}
	if c.Limits.MaxChunk <= 0 || c.Limits.MaxMessage <= 0 || c.Limits.MaxKey <= 0 {
		return c, fmt.Errorf("loom server: limits: MaxChunk, MaxMessage and MaxKey must be positive")
	}
	if c.PartitionCount <= 0 {
		c.PartitionCount = 64
	}
	if c.MaxBacklogDepth <= 0 {
		c.MaxBacklogDepth = 128
	}
	switch c.PartitionFull {
	case "":
		c.PartitionFull = FullDropNewest
	case FullDropNewest, FullDropOldest, FullBlock:
	default:
		return c, fmt.Errorf("loom server: unknown PartitionFull %q", c.PartitionFull)
	}
	switch c.ChunkFull {
	case "":
		c.ChunkFull = FullBlock
	case FullBlock, FullDrop:
	default:
		return c, fmt.Errorf("loom server: unknown ChunkFull %q", c.ChunkFull)
	}
	if err := c.Auth.validate(); err != nil {
		return c, err
	}
	if c.MaxIncomingStreams <= 0 {
		c.MaxIncomingStreams = 1000
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Server is a running Loom-compatible router. Its methods are safe for concurrent use.
type Server struct {
	cfg        Config
	tlsConf    *tls.Config
	certPEM    []byte
	roots      *x509.CertPool
	log        *slog.Logger
	chunkSlots int
	bufs       sync.Pool // *[]byte of chunkRoom+MaxChunk bytes

	stats       counters
	consumerSeq atomic.Uint64
	auth        atomic.Pointer[Auth] // cfg.Auth, or what SetAuth put while stopped

	// hold is non-nil while producers are held, and closed to release them.
	holdMu sync.Mutex
	hold   chan struct{}
	// cutting is set while connections are being closed: no producer session may
	// end cleanly then, or a client could read a confirm for a stream whose
	// consumer was just cut.
	cutting atomic.Bool

	roomsMu sync.Mutex
	rooms   map[string]*room

	life sync.Mutex // serialises Stop, Restart and Close

	mu      sync.Mutex // guards the fields below
	addr    string
	running bool
	closed  bool
	udp     *net.UDPConn
	tr      *quic.Transport
	ln      *quic.Listener
	h3      *http3.Server
	conns   map[*quic.Conn]struct{}
	// admin serves the admin listener of this period on adminAddr (kept across
	// periods), with metrics; nil without Config.AdminAddr or while stopped.
	admin     *http.Server
	adminAddr string
	metrics   *adminMetrics
	wg        sync.WaitGroup // every goroutine of the current listening period
	// halt is closed when a stop begins: from then on no new stream or request is
	// served and no new connection is taken in. haltCtx ends with it.
	halt    chan struct{}
	haltCtx context.Context
	unhalt  context.CancelFunc
	// producers holds how to stop reading each producer session of this period.
	producers map[*producerSession]struct{}
	prodWG    sync.WaitGroup // producer sessions of this period
}

// connKey is the request context key of an HTTP/3 request's *quic.Conn.
type connKey struct{}

// producerSession is a producer session a graceful stop must end.
type producerSession struct {
	conn *quic.Conn // its connection, whose FIN a graceful stop lets leave
	stop func()     // makes the session's reads fail at once, sending nothing
}

// Start listens on cfg.Addr and serves until Stop or Close.
func Start(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tlsConf, certPEM, err := serverTLS(cfg.TLSConfig, cfg.Auth.Mode)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if certPEM != nil {
		roots.AppendCertsFromPEM(certPEM)
	}
	s := &Server{
		cfg:        cfg,
		tlsConf:    tlsConf,
		certPEM:    certPEM,
		roots:      roots,
		log:        cfg.Logger,
		chunkSlots: max(1, chunkQueueBytes/cfg.Limits.MaxChunk),
		rooms:      map[string]*room{},
		conns:      map[*quic.Conn]struct{}{},
	}
	s.auth.Store(&cfg.Auth)
	size := chunkRoom + cfg.Limits.MaxChunk
	s.bufs.New = func() any { b := make([]byte, size); return &b }
	if err := s.listen(cfg.Addr); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr returns the address the server listens on, such as "127.0.0.1:4433". It stays
// the same across Stop and Restart.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ClientTLS returns a new client configuration that trusts the server's certificate
// (the self-signed one, or the last certificate of a configured chain) with ServerName
// "127.0.0.1". It sets no NextProtos: the client picks "loom/1" or "h3".
func (s *Server) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
}

// CertPEM returns the certificate clients should trust, PEM encoded (for a ca_file).
func (s *Server) CertPEM() []byte { return append([]byte(nil), s.certPEM...) }

func (s *Server) room(name string) *room {
	if name == "" {
		name = wire.DefaultRoom
	}
	s.roomsMu.Lock()
	defer s.roomsMu.Unlock()
	rm := s.rooms[name]
	if rm == nil {
		rm = newRoom(name)
		s.rooms[name] = rm
	}
	return rm
}

// WaitConsumers waits until at least n consumer streams are registered in room ("" is
// "default"), or ctx ends.
func (s *Server) WaitConsumers(ctx context.Context, room string, n int) error {
	return s.waitConsumers(ctx, room, n, "", func(*consumer) bool { return true })
}

// WaitClientConsumers waits until at least n consumer streams whose hello named client
// are registered in room, or ctx ends. Streams of other clients do not count: a
// client that closed may still have a stream on its way in.
func (s *Server) WaitClientConsumers(ctx context.Context, room, client string, n int) error {
	return s.waitConsumers(ctx, room, n, fmt.Sprintf(" of client %q", client), func(c *consumer) bool { return c.client == client })
}

func (s *Server) waitConsumers(ctx context.Context, room string, n int, what string, match func(*consumer) bool) error {
	rm := s.room(room)
	for {
		rm.mu.Lock()
		have, changed := rm.countLocked(match), rm.changed
		rm.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("loom server: waiting for %d consumers%s in room %q (have %d): %w", n, what, rm.name, have, ctx.Err())
		}
	}
}

// Consumers returns how many consumer streams are registered in room ("" is "default").
func (s *Server) Consumers(room string) int {
	rm := s.room(room)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return len(rm.consumers)
}

// ClientConsumers returns how many consumer streams whose hello named client are
// registered in room.
func (s *Server) ClientConsumers(room, client string) int {
	rm := s.room(room)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return rm.countLocked(func(c *consumer) bool { return c.client == client })
}

// Stats returns the totals over all rooms; they also count protocol errors in hellos,
// which belong to no room.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// RoomStats returns one room's counters ("" is "default").
func (s *Server) RoomStats(room string) Stats { return s.room(room).stats.snapshot() }

// inc counts one event in the totals and, when rm is not nil, in the room.
func (s *Server) inc(rm *room, k stat) {
	s.stats[k].Add(1)
	if rm != nil {
		rm.stats[k].Add(1)
	}
}

func (s *Server) getBuf() *[]byte { return s.bufs.Get().(*[]byte) }

func (s *Server) putBuf(b *[]byte) {
	*b = (*b)[:cap(*b)]
	s.bufs.Put(b)
}

func (s *Server) quicConfig() *quic.Config {
	idle := idleTimeout
	if idle <= s.cfg.KeepAlive {
		idle = 2 * s.cfg.KeepAlive
	}
	return &quic.Config{
		MaxIncomingStreams: s.cfg.MaxIncomingStreams,
		KeepAlivePeriod:    s.cfg.KeepAlive,
		MaxIdleTimeout:     idle,
	}
}

// listen opens the UDP socket and starts the accept loop. Caller holds life (or is
// Start).
func (s *Server) listen(addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("loom server: resolve %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("loom server: listen %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp, StatelessResetKey: s.cfg.StatelessResetKey}
	ln, err := tr.Listen(s.tlsConf, s.quicConfig())
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return fmt.Errorf("loom server: listen %s: %w", addr, err)
	}
	h3 := &http3.Server{Handler: http.HandlerFunc(s.serveHTTP), Logger: s.log,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		}}
	var (
		admin   *http.Server
		adminLn net.Listener
		metrics *adminMetrics
	)
	if s.cfg.AdminAddr != "" {
		s.mu.Lock()
		aaddr := cmp.Or(s.adminAddr, s.cfg.AdminAddr)
		s.mu.Unlock()
		if admin, adminLn, metrics, err = s.listenAdmin(aaddr); err != nil {
			_ = ln.Close()
			_ = tr.Close()
			_ = udp.Close()
			return err
		}
	}
	s.mu.Lock()
	s.admin, s.metrics = admin, metrics
	if admin != nil {
		s.adminAddr = adminLn.Addr().String()
		s.wg.Go(func() {
			if err := admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Debug("loom server: admin listener ended", "err", err)
			}
		})
	}
	s.addr = udp.LocalAddr().String()
	s.udp, s.tr, s.ln, s.h3, s.running = udp, tr, ln, h3, true
	s.halt = make(chan struct{})
	s.haltCtx, s.unhalt = context.WithCancel(context.Background())
	s.producers = map[*producerSession]struct{}{}
	s.wg.Go(func() { s.acceptLoop(ln, h3) })
	s.mu.Unlock()
	s.log.Debug("loom server: listening", "addr", s.addr)
	return nil
}

func (s *Server) acceptLoop(ln *quic.Listener, h3 *http3.Server) {
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.mu.Lock()
		if !s.running || s.ln != ln {
			// Stopping: a stopping process takes no connection in and closes none;
			// the transport's end drops it without a word.
			s.mu.Unlock()
			continue
		}
		s.conns[conn] = struct{}{}
		haltCtx := s.haltCtx
		s.wg.Go(func() {
			s.serveConn(haltCtx, conn, h3)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		})
		s.mu.Unlock()
	}
}

// serveConn dispatches a connection on its negotiated ALPN and returns when it closed,
// or, for QUIC, when a stop begins (haltCtx): streams opened from then on are never
// served nor answered.
func (s *Server) serveConn(haltCtx context.Context, conn *quic.Conn, h3 *http3.Server) {
	switch proto := conn.ConnectionState().TLS.NegotiatedProtocol; proto {
	case alpnLoom:
		for {
			str, err := conn.AcceptStream(haltCtx)
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serveStream(conn, str) })
		}
	case alpnH3:
		if err := h3.ServeQUICConn(conn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Debug("loom server: http3 connection ended", "err", err)
		}
	default:
		_ = conn.CloseWithError(0, "loom server: unsupported ALPN")
	}
}

// CutConnections closes every client connection now (QUIC CONNECTION_CLOSE) and
// keeps listening. It returns once every consumer stream registered before the cut
// has left its room, so that Consumers and WaitConsumers count only streams opened
// afterwards, however fast a client reconnects.
func (s *Server) CutConnections() {
	// Until the cut consumers have left, a producer whose message went to one of
	// them could end its stream cleanly and read a confirm for a lost message: no
	// producer ends cleanly meanwhile (it fails and its client resends).
	s.cutting.Store(true)
	defer s.cutting.Store(false)
	var cut []*consumer
	s.roomsMu.Lock()
	for _, rm := range s.rooms {
		rm.mu.Lock()
		cut = append(cut, rm.consumers...)
		rm.mu.Unlock()
	}
	s.roomsMu.Unlock()
	s.mu.Lock()
	conns := make([]*quic.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.CloseWithError(0, "loom server: connections cut")
	}
	// A closed connection fails every read of its streams, so each session leaves.
	for _, c := range cut {
		<-c.done
	}
}

// HoldProducers makes producer sessions that start from now on wait, after their
// hello, until ReleaseProducers. Loom discards what nobody consumes; a test that cuts
// or restarts the server holds producers until its consumers are back, as an
// operator would start consumers first.
func (s *Server) HoldProducers() {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// ReleaseProducers lets held producer sessions go on.
func (s *Server) ReleaseProducers() {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

func (s *Server) producerGate() <-chan struct{} {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	return s.hold
}

// Stop is a graceful stop as loomd does it on SIGTERM, then the process's exit. It
// stops serving new streams, requests and connections; it stops reading every
// producer session and ends the server's side of it as if it were done: a QUIC
// producer stream gets a plain FIN (no STOP_SENDING, no reset) even when the producer
// had sent messages that were never read, an HTTP/3 producer request gets its stream
// ended without a response. Once those FINs are on the wire the server vanishes: it
// closes its UDP socket without a CONNECTION_CLOSE, consumer streams and connections
// simply stop answering, and clients learn of it only from their own timeouts (or a
// stateless reset after Restart, with Config.StatelessResetKey). What was queued or
// in flight towards consumers is lost. Stop waits for all sessions to end and
// releases the port; stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.stop(stopGraceful)
}

// Kill is the process killed (SIGKILL): the server closes its UDP socket at once and
// sends nothing more, no FIN, reset or CONNECTION_CLOSE; clients learn of it only from
// their own timeouts. It waits for all sessions to end and releases the port; killing
// a stopped server does nothing.
func (s *Server) Kill() error {
	s.life.Lock()
	defer s.life.Unlock()
	return s.stop(stopKill)
}

type stopMode int

const (
	stopKill     stopMode = iota // vanish at once
	stopGraceful                 // FIN producer sessions, then vanish
	stopClose                    // CONNECTION_CLOSE to every connection (Close)
)

// finDrain bounds how long a graceful stop waits for its FINs to leave.
const finDrain = time.Second

func (s *Server) stop(mode stopMode) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	s.running = false
	udp, tr, ln, h3, admin := s.udp, s.tr, s.ln, s.h3, s.admin
	s.udp, s.tr, s.ln, s.h3, s.admin = nil, nil, nil, nil, nil
	conns := make([]*quic.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	close(s.halt)
	s.unhalt()
	prods := make([]*producerSession, 0, len(s.producers))
	for p := range s.producers {
		prods = append(prods, p)
	}
	s.mu.Unlock()

	if mode == stopGraceful {
		s.finProducers(prods)
	}
	// The process goes, and its admin listener with it; only Close lets its requests
	// finish.
	errAdmin := closeAdmin(admin, mode == stopClose)
	var errUDP error
	if mode != stopClose {
		// Vanish: with the socket gone nothing below can reach a client.
		errUDP = udp.Close()
	}
	errLn := ln.Close()
	if mode == stopClose {
		s.cutting.Store(true)
		for _, c := range conns {
			_ = c.CloseWithError(0, "loom server: server stopped")
		}
	}
	errH3 := h3.Close()
	errTr := tr.Close() // drops every connection without a word
	s.wg.Wait()
	s.cutting.Store(false)
	if mode == stopClose {
		errUDP = udp.Close()
	}
	if errors.Is(errUDP, net.ErrClosed) {
		errUDP = nil
	}
	if errors.Is(errH3, net.ErrClosed) || errors.Is(errH3, quic.ErrServerClosed) {
		errH3 = nil
	}
	if errors.Is(errTr, net.ErrClosed) {
		errTr = nil
	}
	if err := errors.Join(errLn, errH3, errTr, errUDP, errAdmin); err != nil {
		return fmt.Errorf("loom server: stop: %w", err)
	}
	return nil
}

// finProducers stops reading every producer session, waits until each has ended its
// side (FIN), and then until a packet left each connection concerned, so that the
// FINs are on the wire before the socket closes.
func (s *Server) finProducers(prods []*producerSession) {
	for _, p := range prods {
		p.stop()
	}
	s.prodWG.Wait()
	sent := map[*quic.Conn]uint64{}
	for _, p := range prods {
		if p.conn != nil {
			sent[p.conn] = 0
		}
	}
	// The FIN frames are queued now: the next packet of each connection carries them.
	for c := range sent {
		sent[c] = c.ConnectionStats().PacketsSent
	}
	deadline := time.Now().Add(finDrain)
	for c, n := range sent {
		for c.ConnectionStats().PacketsSent == n && c.Context().Err() == nil && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
}

// trackProducer registers a producer session for a graceful stop and returns the
// stop signal of its listening period; untrack unregisters it, after the session
// ended its side. A session that starts while a stop is under way is stopped at once.
func (s *Server) trackProducer(p *producerSession) (halt <-chan struct{}, untrack func()) {
	s.mu.Lock()
	halt = s.halt
	if halted(halt) {
		s.mu.Unlock()
		p.stop()
		return halt, func() {}
	}
	s.producers[p] = struct{}{}
	s.prodWG.Add(1)
	s.mu.Unlock()
	return halt, func() {
		s.mu.Lock()
		delete(s.producers, p)
		s.mu.Unlock()
		s.prodWG.Done()
	}
}

// haltOf returns the stop signal of the current listening period.
func (s *Server) haltOf() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halt
}

// halted reports whether a stop has begun for the listening period of halt.
func halted(halt <-chan struct{}) bool {
	select {
	case <-halt:
		return true
	default:
		return false
	}
}

// SetAuth replaces the auth rules while the server is stopped, as an operator
// who edits loomd's token list and restarts it: the next Restart serves with a.
// The mode must stay the same (it decides whether the TLS handshake asks for a
// client certificate). It fails while the server runs, as loomd does not reload
// its rules live.
func (s *Server) SetAuth(a Auth) error {
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.Lock()
	running, closed := s.running, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return errors.New("loom server: set auth: server closed")
	case running:
		return errors.New("loom server: set auth: server is running; stop it first")
	case a.Mode != s.auth.Load().Mode:
		return fmt.Errorf("loom server: set auth: mode %q differs from %q", a.Mode, s.auth.Load().Mode)
	}
	if err := a.validate(); err != nil {
		return err
	}
	s.auth.Store(&a)
	return nil
}

// Restart listens again on the same address, with the same certificate. It fails
// unless the server is stopped (and not closed).
func (s *Server) Restart() error {
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.Lock()
	running, closed, addr := s.running, s.closed, s.addr
	s.mu.Unlock()
	switch {
	case closed:
		return errors.New("loom server: restart: server closed")
	case running:
		return errors.New("loom server: restart: server is running")
	}
	return s.listen(addr)
}

// Close stops the server for good, closing every connection with a CONNECTION_CLOSE
// (unlike Stop and Kill, which mimic a process going away). It is idempotent; when it
// returns no goroutine of the server is left.
func (s *Server) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return s.stop(stopClose)
}
