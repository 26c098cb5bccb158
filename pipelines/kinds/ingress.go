package kinds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ingress is the HTTP receiver behind the echo and http sources: each POST to
// its path becomes one message, and the request is answered with what became
// of it. 2xx only once the pipeline acked the message (every sink took it, or
// it went to the dead letters); 500 on a nack; 503 once the source is
// stopping; 413 over max_body_bytes; 401 when authorize or verify refuse.
type ingress struct {
	path         string
	maxBodyBytes int64
	// idHeader names the header holding the UUID; a request without it
	// gets a new one.
	idHeader string
	// metadataHeaders maps header names to metadata keys.
	metadataHeaders map[string]string
	// authorize, when set, checks the headers before the body is read.
	authorize func(http.Header) error
	// verify, when set, checks the body and headers.
	verify func(body []byte, h http.Header) error
	// okStatus is the answer to an acked message.
	okStatus int
	name     string // in logs and errors: "echo", "http"

	logger   watermill.LoggerAdapter
	addr     string
	srv      *http.Server
	serveWg  sync.WaitGroup // the Serve goroutine
	mu       sync.Mutex     // orders inFlight.Add before Close's Wait
	inFlight sync.WaitGroup // requests handing a message to the pipeline, or waiting for its ack
	out      chan *message.Message
	ready    chan struct{} // closed once Subscribe set out
	once     sync.Once
	closing  chan struct{}
	closed   sync.Once
	closeErr error
}

// listen starts serving on addr at once, so a taken port fails the
// pipeline's start.
func (r *ingress) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	r.addr = ln.Addr().String()
	r.closing, r.ready = make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc(r.path, r.serve)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.serveWg.Add(1)
	go func() {
		defer r.serveWg.Done()
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.logger.Error(r.name+" receiver stopped", err, watermill.LogFields{"addr": addr})
		}
	}()
	return nil
}

// Subscribe implements message.Subscriber; one subscription per receiver.
func (r *ingress) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	started := false
	r.once.Do(func() {
		r.out, started = make(chan *message.Message), true
		close(r.ready)
	})
	if !started {
		return nil, fmt.Errorf("%s: one subscription per receiver", r.name)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-r.closing:
		}
		_ = r.Close()
	}()
	return r.out, nil
}

// Addr is where the receiver listens (useful with port 0).
func (r *ingress) Addr() string { return r.addr }

func (r *ingress) stopping() bool {
	select {
	case <-r.closing:
		return true
	default:
		return false
	}
}

func (r *ingress) serve(w http.ResponseWriter, req *http.Request) {
	if r.stopping() {
		w.Header().Set("Connection", "close")
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if r.authorize != nil {
		if err := r.authorize(req.Header); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
	}
	if req.ContentLength > r.maxBodyBytes {
		http.Error(w, tooLarge(req.ContentLength, r.maxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.maxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			http.Error(w, tooLarge(-1, r.maxBodyBytes), http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		}
		return
	}
	if r.verify != nil {
		if err := r.verify(body, req.Header); err != nil {
			http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	id := req.Header.Get(r.idHeader)
	if id == "" {
		id = watermill.NewUUID() // not cmp.Or: that would make a UUID for every request
	}
	msg := message.NewMessage(id, body)
	for h, key := range r.metadataHeaders {
		if v := req.Header.Get(h); v != "" {
			msg.Metadata.Set(key, v)
		}
	}
	w.Header().Set("Message-Uuid", id)
	select {
	case <-r.ready:
	case <-r.closing:
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	}
	r.mu.Lock()
	if r.stopping() { // checked again: a stop wins over a hand-over
		r.mu.Unlock()
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	}
	r.inFlight.Add(1)
	r.mu.Unlock()
	defer r.inFlight.Done()
	select {
	case r.out <- msg:
	case <-r.closing:
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	case <-req.Context().Done():
		return
	}
	// Handed over: the pipeline acks or nacks it, even while stopping (the
	// router finishes what it took), so the answer tells what happened.
	select {
	case <-msg.Acked():
		w.WriteHeader(r.okStatus)
	case <-msg.Nacked():
		http.Error(w, "not handled", http.StatusInternalServerError)
	case <-req.Context().Done():
	}
}

func tooLarge(n, limit int64) string {
	if n < 0 {
		return "body over max_body_bytes (" + strconv.FormatInt(limit, 10) + " bytes)"
	}
	return "body of " + strconv.FormatInt(n, 10) + " bytes is over max_body_bytes (" + strconv.FormatInt(limit, 10) + " bytes)"
}

// ingressShutdownGrace bounds the wait for idle keep-alive connections once
// every request was answered.
const ingressShutdownGrace = 5 * time.Second

// Close stops taking messages: new requests are answered 503 while messages
// already handed to the pipeline get their real answer; then the listener and
// the connections are closed and the output channel with them.
func (r *ingress) Close() error {
	r.closed.Do(func() {
		r.mu.Lock()
		close(r.closing)
		r.mu.Unlock()
		r.inFlight.Wait() // after it, nothing sends on out

		ctx, cancel := context.WithTimeout(context.Background(), ingressShutdownGrace)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			r.closeErr = r.srv.Close()
		}
		r.serveWg.Wait()
		r.once.Do(func() { close(r.ready) })
		if r.out != nil {
			close(r.out)
		}
	})
	return r.closeErr
}
