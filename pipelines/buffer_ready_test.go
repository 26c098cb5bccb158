package pipelines_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// A buffered pipeline whose store goes away is not ready, and says why;
// when the store is back, it is ready again.
func TestReadinessReportsAStoreThatCannotWrite(t *testing.T) {
	addr := freeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	opts := &natsserver.Options{Host: "127.0.0.1", JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	if _, err := fmt.Sscan(port, &opts.Port); err != nil {
		t.Fatal(err)
	}
	ns := startNATS(t, opts)
	e := startEngine(t, parse(t, fill(`
log: {stats_interval: 0}
connections:
  queue: {type: nats, url: "nats://127.0.0.1:@PORT@", max_reconnects: -1, reconnect_wait: 100ms}
buffers: {connection: queue}
pipelines:
  p:
    from: {type: generate, interval: 50ms, payload: 'x'}
    buffer: {}
    to:
      out: {type: file, dir: @DIR@, fsync: never}
`, "@PORT@", port, "@DIR@", t.TempDir())))
	waitFor(t, "ready", func() bool { return len(e.Ready()) == 0 })
	ns.Shutdown()
	ns.WaitForShutdown()
	waitFor(t, "the store's failure in readiness", func() bool {
		for _, p := range e.Ready() {
			if strings.HasPrefix(p, "pipeline p: buffer: ") {
				return true
			}
		}
		return false
	})
	t.Logf("not ready: %v", e.Ready())
	startNATS(t, opts) // the same port and directory: the store is back as it was
	waitFor(t, "ready again", func() bool { return len(e.Ready()) == 0 })
}

func startNATS(t *testing.T, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	o := *opts
	ns, err := natsserver.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
