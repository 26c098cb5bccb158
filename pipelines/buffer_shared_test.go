package pipelines_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/loombridge/loombridge/pipelines"
)

// Two engines keep one pipeline's buffer on the machine's NATS server
// (buffers.connection): they share its sink's queue through one durable
// consumer. Every message is posted to the first engine's http source; the
// webhook receives the exact set, at least once each, and both engines
// delivered a share of it.
func TestBufferOnAnExternalServerIsSharedByTwoEngines(t *testing.T) {
	needBroker(t, "nats", natsAddr)
	const n = 400
	name := "shared_" + suffix()
	t.Cleanup(func() {
		dropNATSStream(t, "loombridge_"+name)
		dropNATSStream(t, "OBJ_loombridge_"+name+"_large")
	})
	recv, srv := newFlakyReceiver(t, 0)
	conf := func(addr string) *pipelines.Config {
		return parse(t, fill(`
log: {stats_interval: 0}
connections:
  queue: {type: nats, url: "nats://@NATS@"}
buffers: {connection: queue}
pipelines:
  @NAME@:
    from: {type: http, addr: "@ADDR@", path: /in}
    buffer: {}
    concurrency: 8
    to:
      hooks:
        type: webhook
        endpoints: [{name: r, url: "@URL@"}]
`, "@NATS@", natsAddr, "@NAME@", name, "@ADDR@", addr, "@URL@", srv.URL))
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startEngine(t, conf(addrA))
	b := startEngine(t, conf(addrB))
	for i := range n {
		req, err := http.NewRequest(http.MethodPost, "http://"+addrA+"/in", bytes.NewReader(fmt.Appendf(nil, "m%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", name, i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("message %d: HTTP %d", i, resp.StatusCode)
		}
	}
	waitFor(t, "every message at the webhook", func() bool { return recv.count() >= n })
	pa, pb := a.Stats()[name].Sinks["hooks"].Published, b.Stats()[name].Sinks["hooks"].Published
	t.Logf("engine A delivered %d, engine B %d, of %d", pa, pb, n)
	if pa == 0 || pb == 0 {
		t.Errorf("the work was not shared: A delivered %d, B %d", pa, pb)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for i := range n {
		if id := fmt.Sprintf("%s-%d", name, i); recv.accepted[id] == 0 {
			t.Errorf("message %s never arrived", id)
		}
	}
	if len(recv.accepted) != n {
		t.Errorf("the webhook accepted %d distinct messages, want exactly %d", len(recv.accepted), n)
	}
}
