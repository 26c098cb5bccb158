package pipelines_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/loomtest"
	"github.com/loombridge/loombridge/internal/testkit"
	"github.com/loombridge/loombridge/pipelines"
)

// A Loom server that stops in order (it closes its connections with QUIC
// application error 0) and loombridge's own graceful stop are no corruption:
// nothing is logged at ERROR, where a stopped server used to read as
// "wire: message key length: bad varint". The consumer's reopening is still
// logged (at Watermill's Info, which the engine maps to Debug).
func TestGracefulStopLogsNoError(t *testing.T) {
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
  ext: {addr: "@LOOM@", tls: {ca_file: "@CA@"}, dial_timeout: 1m} # no dial failure while the test looks
pipelines:
  feed:
    from: {type: generate, interval: 1ms}
    to: {l: {type: loom, connection: local, room: r}}
  read:
    from: {type: loom, connection: local, room: r}
    to: {f: {type: file, dir: @DIR@, topic: out, fsync: never}}
  readx:
    from: {type: loom, connection: ext, room: r}
    to: {f: {type: file, dir: @DIR@, topic: outx, fsync: never}}
`, "@DIR@", dir, "@LOOM@", srv.Addr(), "@CA@", ca))
	var out testkit.Buffer
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err := e.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "messages through the embedded router", func() bool { return e.Stats()["read"].Done >= 50 })
	waitFor(t, "the external server's consumers", func() bool { return srv.Consumers("r") > 0 })
	srv.Close() // the peer stops in order, under a running subscriber
	waitFor(t, "the subscriber to see the server stop", func() bool {
		return strings.Contains(out.String(), "Loom server closed the consumer stream")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("logged at ERROR on a graceful stop: %s", l)
		}
	}
}
