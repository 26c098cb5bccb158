package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The admin listener, as loomd's: Prometheus metrics on /metrics (and /healthz,
// /readyz) over plain HTTP, on an address of its own (Config.AdminAddr). Only the
// metric clients act on is served: loom_streams{transport, role, room}, the streams
// open now, counted like loomd's: from the moment a hello is accepted until the
// session ends, labelled with the room as the hello named it ("" stays "", though it
// routes to "default"). It belongs to the process: Stop and Kill close it, Restart
// opens it again on the same address with every gauge back at zero (a new loomd
// process has no series at all; a client must read an absent series as zero).

// Stream roles and transports as loomd labels them.
const (
	roleProducer = "producer"
	roleConsumer = "consumer"
	viaQUIC      = "quic"
	viaH3        = "h3"
)

// adminMetrics is one listening period's registry.
type adminMetrics struct {
	reg     *prometheus.Registry
	streams *prometheus.GaugeVec
}

func newAdminMetrics() *adminMetrics {
	m := &adminMetrics{
		reg: prometheus.NewRegistry(),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "loom_streams", Help: "Active streams"},
			[]string{"transport", "role", "room"}),
	}
	m.reg.MustRegister(m.streams)
	return m
}

// streamOpened counts a stream whose hello was accepted; the returned func counts
// it closed. Sessions of a period whose metrics were replaced count in the old
// registry, which nobody serves any more.
func (s *Server) streamOpened(via, role, room string) (closed func()) {
	s.mu.Lock()
	m := s.metrics
	s.mu.Unlock()
	if m == nil {
		return func() {}
	}
	g := m.streams.WithLabelValues(via, role, room)
	g.Inc()
	return g.Dec
}

// AdminAddr returns the admin listener's address ("127.0.0.1:9091"), or "" without
// Config.AdminAddr. It stays the same across Stop and Restart.
func (s *Server) AdminAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminAddr
}

// AdminURL returns "http://" + AdminAddr(), what a client's admin_url names; "" without
// an admin listener.
func (s *Server) AdminURL() string {
	if a := s.AdminAddr(); a != "" {
		return "http://" + a
	}
	return ""
}

// listenAdmin opens the admin listener of a listening period on addr. Caller holds
// life (or is Start).
func (s *Server) listenAdmin(addr string) (*http.Server, net.Listener, *adminMetrics, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loom server: admin listen %s: %w", addr, err)
	}
	m := newAdminMetrics()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return srv, ln, m, nil
}

// closeAdmin ends the admin listener: at once when the process vanishes (its
// connections just break), after its requests when the server closes for good.
func closeAdmin(srv *http.Server, graceful bool) error {
	if srv == nil {
		return nil
	}
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err == nil {
			return nil
		}
	}
	if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("loom server: admin close: %w", err)
	}
	return nil
}
