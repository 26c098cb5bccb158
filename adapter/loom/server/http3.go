package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// streamPath is the one HTTP/3 resource: POST carries a session.
const streamPath = "/stream"

// serveHTTP runs one HTTP/3 session: the request body carries the client's bytes, the
// response body the server's.
//
// A producer's response comes when its session ends: 200 after a clean end of the
// body, 400 at once on a protocol error (loomd answers when the body ends; answering
// at once lets a client stop sending sooner and is otherwise the same). A consumer gets
// 200 right after a good hello, then its messages.
func (s *Server) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != streamPath {
		http.NotFound(w, req)
		return
	}
	if halted(s.haltOf()) {
		// Stopping: a new request is never answered; the connection just goes away.
		<-req.Context().Done()
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	tr := newTrackReader(req.Body)
	h, err := wire.ReadHello(tr, s.cfg.Limits)
	if err != nil {
		if tr.err == nil {
			s.inc(nil, statProtocolErrors)
		}
		s.log.Debug("loom server: bad hello", "carrier", "h3", "err", err)
		http.Error(w, "bad hello", http.StatusBadRequest)
		return
	}
	var certs []*x509.Certificate
	if req.TLS != nil {
		certs = req.TLS.PeerCertificates
	}
	rm, ok := s.authorize(h, certs, "h3")
	if !ok {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if h.Role == wire.RoleProducer {
		defer s.streamOpened(viaH3, roleProducer, h.Room)()
		rc := http.NewResponseController(w)
		ctx, cancel := context.WithCancel(req.Context())
		defer cancel()
		conn, _ := req.Context().Value(connKey{}).(*quic.Conn)
		halt, untrack := s.trackProducer(&producerSession{conn: conn, stop: func() {
			cancel()
			_ = rc.SetReadDeadline(time.Unix(1, 0))
		}})
		defer untrack()
		err := s.serveProducer(ctx, halt, tr, rm)
		switch {
		case halted(halt):
			// Graceful stop: loomd's response is cut; here the stream ends (FIN)
			// without one, which the client reads as a broken response.
			if hs, ok := w.(http3.HTTPStreamer); ok {
				if str, err := hs.HTTPStream(); err == nil {
					_ = str.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case err == nil:
			w.WriteHeader(http.StatusOK)
		case errors.Is(err, errProtocol):
			http.Error(w, "protocol error", http.StatusBadRequest)
		default:
			// errGone: reset the stream; returning would answer 200, a confirm.
			panic(http.ErrAbortHandler)
		}
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	s.serveConsumer(tr, rm, h, viaH3, carrier{w: w, flush: rc.Flush, abort: func() {
		past := time.Unix(1, 0)
		_ = rc.SetReadDeadline(past)
		_ = rc.SetWriteDeadline(past)
	}})
}
