package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultSyncInterval is how often the embedded server fsyncs its files.
const DefaultSyncInterval = time.Second

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	// Dir holds JetStream's files; required. It is created when missing.
	Dir string
	// SyncAlways fsyncs every write before the message is acknowledged: a
	// power loss then loses nothing stored, at the cost of one fsync per
	// message. Without it, files are fsynced every SyncInterval, and a power
	// loss (not a process crash) may lose what was stored in the last interval.
	SyncAlways bool
	// SyncInterval is how often files are fsynced when SyncAlways is off;
	// default DefaultSyncInterval.
	SyncInterval time.Duration
	// Logger gets the server's warnings and errors; default discard.
	Logger *slog.Logger
}

func (c *ServerConfig) setDefaults() {
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports what is wrong with the config.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir: must be set"))
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("sync: must not be negative, got %s", c.SyncInterval))
	}
	return errors.Join(errs...)
}

// Server is a NATS server with JetStream run in this process. It listens on
// no port: clients reach it through Connect, in memory.
type Server struct {
	ns        *server.Server
	closeOnce sync.Once
}

// StartServer starts an embedded server and waits until it takes clients.
func StartServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spool server: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool server: %w", err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName:   "loombridge-spool",
		DontListen:   true,
		JetStream:    true,
		StoreDir:     cfg.Dir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		NoSigs:       true,
		// Room for a whole record of metadata; payloads above LargePayload go
		// to the Object Store in chunks anyway.
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("spool server: %w", err)
	}
	ns.SetLoggerV2(serverLog{cfg.Logger}, false, false, false)
	ns.Start()
	// A store of many files takes a while to recover; the bound only keeps a
	// broken directory from hanging the start for ever.
	if !ns.ReadyForConnections(2 * time.Minute) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("spool server: not ready after 2m (store %s)", cfg.Dir)
	}
	return &Server{ns: ns}, nil
}

// Connect returns a new client connection to the server, in memory.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("loombridge"), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("spool server: connect: %w", err)
	}
	return nc, nil
}

// Writable reports whether JetStream can store: nil when it can.
func (s *Server) Writable() error {
	if !s.ns.JetStreamEnabled() {
		return errors.New("JetStream is disabled (the store could not write and shut it down; see the log)")
	}
	return nil
}

// Close shuts the server down and waits until it has; it can be called more
// than once. Clients should be closed first.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	})
	return nil
}

// serverLog passes the server's warnings and errors to slog; its notices
// (start-up banner, one line per setting) go to Debug.
type serverLog struct{ l *slog.Logger }

func (s serverLog) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLog) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLog) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLog) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLog) Debugf(format string, v ...any)  {}
func (s serverLog) Tracef(format string, v ...any)  {}
