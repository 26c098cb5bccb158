package server

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

var (
	// errProtocol marks a malformed stream: the carrier delivered every byte asked for.
	errProtocol = errors.New("loom server: protocol error")
	// errGone marks a session whose carrier failed or ended mid-frame.
	errGone = errors.New("loom server: session gone")
)

// trackReader feeds the wire decoders and remembers the first error the carrier gave
// them, which tells a malformed stream from a broken one.
type trackReader struct {
	br  *bufio.Reader
	err error
}

func newTrackReader(r io.Reader) *trackReader {
	return &trackReader{br: bufio.NewReaderSize(r, 32<<10)}
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.br.Read(p)
	t.note(err)
	return n, err
}

func (t *trackReader) ReadByte() (byte, error) {
	b, err := t.br.ReadByte()
	t.note(err)
	return b, err
}

func (t *trackReader) discard(n int) error {
	_, err := t.br.Discard(n)
	t.note(err)
	return err
}

func (t *trackReader) note(err error) {
	if err != nil && t.err == nil {
		t.err = err
	}
}

// fail classifies a decoding error as errProtocol or errGone.
func (t *trackReader) fail(err error) error {
	if t.err != nil {
		return fmt.Errorf("%w: %w", errGone, err)
	}
	return fmt.Errorf("%w: %w", errProtocol, err)
}

// carrier is what a consumer session writes to.
type carrier struct {
	w     io.Writer
	flush func() error // pushes buffered bytes out (HTTP/3); nil for QUIC
	abort func()       // unblocks the session's pending reads and writes
}

// serveStream runs one QUIC session.
func (s *Server) serveStream(conn *quic.Conn, str *quic.Stream) {
	// closeStream is loomd's "simply closes the stream": the client reads EOF, and its
	// writes fail.
	closeStream := func() {
		str.CancelRead(0)
		_ = str.Close()
	}
	if d := s.cfg.HelloDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-str.Context().Done():
		}
		t.Stop()
	}
	tr := newTrackReader(str)
	h, err := wire.ReadHello(tr, s.cfg.Limits)
	if err != nil {
		if tr.err == nil {
			s.inc(nil, statProtocolErrors)
		}
		s.log.Debug("loom server: bad hello", "carrier", "quic", "err", err)
		closeStream()
		return
	}
	rm, ok := s.authorize(h, conn.ConnectionState().TLS.PeerCertificates, "quic")
	if !ok {
		closeStream()
		return
	}
	if h.Role == wire.RoleConsumer {
		s.serveConsumer(tr, rm, h, viaQUIC, carrier{w: str, abort: func() {
			str.CancelRead(0)
			str.CancelWrite(0)
		}})
		return
	}
	defer s.streamOpened(viaQUIC, roleProducer, h.Room)()
	ctx, cancel := context.WithCancel(str.Context())
	defer cancel()
	halt, untrack := s.trackProducer(&producerSession{conn: conn, stop: func() {
		cancel()
		_ = str.SetReadDeadline(time.Unix(1, 0)) // fails the pending read, sends nothing
	}})
	defer untrack()
	err = s.serveProducer(ctx, halt, tr, rm)
	switch {
	case halted(halt):
		// Graceful stop, as loomd does it: a plain FIN whatever is left unread, no
		// STOP_SENDING. The producer cannot tell it from a clean end on the stream.
		_ = str.Close()
	case err == nil:
		// FIN after the last settled message: FIN back; the producer reads EOF.
		str.CancelRead(0)
		_ = str.Close()
	case errors.Is(err, errProtocol):
		closeStream()
	default:
		str.CancelRead(0)
		str.CancelWrite(0)
	}
}

// authorize checks a hello against the auth policy and counts a refusal.
func (s *Server) authorize(h wire.Hello, certs []*x509.Certificate, via string) (*room, bool) {
	rm := s.room(h.RoomOrDefault())
	principal, ok := s.auth.Load().allow(h, certs)
	if !ok {
		s.inc(rm, statRefused)
		s.log.Info("loom server: session refused", "carrier", via, "hello", h.String())
		return rm, false
	}
	s.log.Debug("loom server: session", "carrier", via, "hello", h.String(), "principal", principal)
	return rm, true
}

// serveProducer reads messages until the producer ends its side cleanly (nil), sends
// something malformed (errProtocol) or goes away (errGone). ctx ends when the
// producer's carrier is gone. Once halt is closed (a stop began) nothing more is
// routed: a killed process handles nothing, so a message whose bytes were already
// buffered must not be counted and discarded for consumers that left meanwhile.
func (s *Server) serveProducer(ctx context.Context, halt <-chan struct{}, tr *trackReader, rm *room) error {
	if gate := s.producerGate(); gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", errGone, context.Cause(ctx))
		}
	}
	for {
		hdr, err := wire.ReadHeader(tr, s.cfg.Limits)
		if err == io.EOF { // clean end before a header
			if s.cutting.Load() {
				return fmt.Errorf("%w: connections are being cut", errGone)
			}
			return nil
		}
		if err != nil {
			return s.failed(rm, tr.fail(err))
		}
		if halted(halt) {
			return fmt.Errorf("%w: the server is stopping", errGone)
		}
		s.inc(rm, statReceived)
		var m *message
		if hdr.Size > uint64(s.cfg.Limits.MaxMessage) {
			s.inc(rm, statDroppedTooLarge)
		} else {
			m = s.admit(ctx, rm, hdr)
		}
		err = s.copyBody(ctx, tr, rm, m)
		if m != nil {
			// Also when the producer died mid-message: the consumer gets what came, then
			// the end chunk, as from loomd.
			m.end()
		}
		if err != nil {
			return s.failed(rm, err)
		}
		if m != nil {
			select {
			case <-m.settled:
			case <-ctx.Done():
				return fmt.Errorf("%w: %w", errGone, context.Cause(ctx))
			}
		}
	}
}

// failed counts a protocol error and passes err on.
func (s *Server) failed(rm *room, err error) error {
	if errors.Is(err, errProtocol) {
		s.inc(rm, statProtocolErrors)
		s.log.Debug("loom server: protocol error", "room", rm.name, "err", err)
	}
	return err
}

// copyBody reads one body and forwards its chunks to m, or discards them when m is
// nil. It returns nil after the end chunk.
func (s *Server) copyBody(ctx context.Context, tr *trackReader, rm *room, m *message) error {
	lim := s.cfg.Limits
	var total uint64
	forward := m != nil
	for {
		n, err := binary.ReadUvarint(tr)
		if err != nil {
			if tr.err != nil {
				return fmt.Errorf("%w: chunk length: %w", errGone, err)
			}
			return fmt.Errorf("%w: chunk length: %w: %w", errProtocol, wire.ErrVarint, err)
		}
		switch {
		case n > wire.MaxVarint:
			return fmt.Errorf("%w: chunk length: %w: %d", errProtocol, wire.ErrVarint, n)
		case n == 0:
			return nil
		case n > uint64(lim.MaxChunk):
			return fmt.Errorf("%w: chunk length %d: %w %d", errProtocol, n, wire.ErrLimit, lim.MaxChunk)
		}
		total += n
		if forward && total > uint64(lim.MaxMessage) {
			// Too large after all: the consumer gets the message short, now.
			s.inc(rm, statDroppedTooLarge)
			m.end()
			forward = false
		}
		if !forward {
			if err := tr.discard(int(n)); err != nil {
				return fmt.Errorf("%w: chunk: %w", errGone, err)
			}
			continue
		}
		b := s.getBuf()
		*b = (*b)[:chunkRoom+int(n)]
		if _, err := io.ReadFull(tr, (*b)[chunkRoom:]); err != nil {
			s.putBuf(b)
			return fmt.Errorf("%w: chunk: %w", errGone, err)
		}
		select {
		case m.chunks <- b:
			continue
		case <-m.settled:
			// Dropped or its consumer left: read the rest and throw it away.
			s.putBuf(b)
			forward = false
			continue
		default:
		}
		if s.cfg.ChunkFull == FullDrop {
			// The message's chunk buffer is full: this chunk is lost (not counted in
			// Stats; the consumer sees fewer bytes than declared).
			s.putBuf(b)
			continue
		}
		select {
		case m.chunks <- b:
		case <-m.settled:
			s.putBuf(b)
			forward = false
		case <-ctx.Done():
			s.putBuf(b)
			return fmt.Errorf("%w: %w", errGone, context.Cause(ctx))
		}
	}
}

// serveConsumer registers a consumer stream in rm and writes it messages until it
// goes away.
func (s *Server) serveConsumer(tr *trackReader, rm *room, h wire.Hello, via string, car carrier) {
	c := &consumer{
		id:     s.consumerSeq.Add(1),
		client: h.Name,
		rm:     rm,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		abort:  car.abort,
	}
	acks := make(chan uint64)
	rm.join(c)
	// Counted once it can be routed to: loomd counts it a moment before it
	// registers the stream, a window of microseconds that would only make the
	// adapter's tests flaky, not show anything of the adapter.
	defer s.streamOpened(via, roleConsumer, h.Room)()
	var wg sync.WaitGroup
	wg.Go(func() { s.readAcks(tr, c, acks) })
	s.writeLoop(car, c, acks)
	s.leave(c)
	wg.Wait()
}

// readAcks passes ACK ids to the writer until the stream ends or breaks; then the
// consumer leaves the room.
func (s *Server) readAcks(tr *trackReader, c *consumer, acks chan<- uint64) {
	defer s.leave(c)
	for {
		f, err := wire.ReadFrame(tr)
		if err != nil {
			s.failed(c.rm, tr.fail(err))
			return
		}
		if f.Type != wire.FrameAck {
			continue
		}
		select {
		case acks <- f.Value:
		case <-c.done:
			return
		}
	}
}

// writeLoop sends one message at a time and waits for its ACK before the next.
func (s *Server) writeLoop(car carrier, c *consumer, acks <-chan uint64) {
	rm := c.rm
	var hdr []byte
	for {
		m := c.next()
		if m == nil {
			return
		}
		var err error
		hdr, err = s.writeMessage(car, c, m, hdr[:0])
		if err != nil {
			if m.settle() {
				s.inc(rm, statLost)
			}
			return
		}
		s.inc(rm, statDelivered)
		for acked := false; !acked; {
			select {
			case id := <-acks:
				acked = id == m.hdr.ID // unknown ids are ignored
			case <-c.done:
				if m.settle() {
					s.inc(rm, statLost)
				}
				return
			}
		}
		if m.settle() {
			s.inc(rm, statAcked)
		}
	}
}

// writeMessage writes the header, the chunks as the producer's boundaries had them,
// and the end chunk. It flushes whenever it would wait for the producer.
func (s *Server) writeMessage(car carrier, c *consumer, m *message, scratch []byte) ([]byte, error) {
	flush := func() error {
		if car.flush == nil {
			return nil
		}
		return car.flush()
	}
	scratch = wire.AppendHeader(scratch, m.hdr)
	if _, err := car.w.Write(scratch); err != nil {
		return scratch, fmt.Errorf("loom server: write header: %w", err)
	}
	for {
		if len(m.chunks) == 0 {
			if err := flush(); err != nil {
				return scratch, fmt.Errorf("loom server: flush: %w", err)
			}
		}
		select {
		case b, ok := <-m.chunks:
			if !ok {
				if _, err := car.w.Write([]byte{0}); err != nil {
					return scratch, fmt.Errorf("loom server: write end chunk: %w", err)
				}
				if err := flush(); err != nil {
					return scratch, fmt.Errorf("loom server: flush: %w", err)
				}
				return scratch, nil
			}
			var v [binary.MaxVarintLen64]byte
			h := binary.PutUvarint(v[:], uint64(len(*b)-chunkRoom))
			copy((*b)[chunkRoom-h:], v[:h])
			_, err := car.w.Write((*b)[chunkRoom-h:])
			s.putBuf(b)
			if err != nil {
				return scratch, fmt.Errorf("loom server: write chunk: %w", err)
			}
		case <-c.done:
			return scratch, errGone
		}
	}
}
