package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/server"
)

// Three loombridge instances reading one room share its traffic: Loom spreads
// the room's partitions over their consumer streams by rendezvous hashing.
// Each gets a non-empty share, and together they get every message once.
func TestScaleOutSharesARoom(t *testing.T) {
	const n, replicas = 3000, 3
	srv, err := server.Start(server.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range replicas {
		cfg := parse(t, fmt.Sprintf(`
log: {stats_interval: 0}
connections:
  loom: {addr: "%s", tls: {ca_file: "%s"}, name: replica-%d}
pipelines:
  share:
    from: {type: loom, connection: loom, room: orders, consumers: 2}
    to: {out: {type: file, dir: "%s", topic: replica-%d, fsync: never}}
`, srv.Addr(), ca, i, dir, i))
		startEngine(t, cfg)
	}
	ctx := context.Background()
	for i := range replicas {
		if err := srv.WaitClientConsumers(ctx, "orders", fmt.Sprintf("replica-%d", i), 2); err != nil {
			t.Fatal(err)
		}
	}

	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client: client.Config{Addr: srv.Addr(), TLSClientConfig: srv.ClientTLS()},
		Mode:   loom.ModeFireAndForget,
		Format: loom.FormatEnvelope,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := message.NewMessage(fmt.Sprintf("m%05d", i), []byte("x"))
		m.Metadata.Set("loom_key", fmt.Sprintf("customer-%d", i%97))
		if err := pub.Publish("orders", m); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}

	total := func() int {
		sum := 0
		for i := range replicas {
			sum += len(readLines(t, filepath.Join(dir, fmt.Sprintf("replica-%d.jsonl", i))))
		}
		return sum
	}
	waitFor(t, "every message at some replica", func() bool { return total() >= n })
	seen := map[string]int{}
	keyOwner := map[string]int{}
	for i := range replicas {
		lines := readLines(t, filepath.Join(dir, fmt.Sprintf("replica-%d.jsonl", i)))
		if len(lines) == 0 {
			t.Errorf("replica %d got no share", i)
		}
		t.Logf("replica %d: %d messages", i, len(lines))
		for _, l := range lines {
			seen[l.UUID]++
			if o, ok := keyOwner[l.Key]; ok && o != i {
				t.Errorf("key %s went to replicas %d and %d", l.Key, o, i)
			}
			keyOwner[l.Key] = i
		}
	}
	for i := range n {
		if c := seen[fmt.Sprintf("m%05d", i)]; c != 1 {
			t.Errorf("message m%05d seen %d times", i, c)
		}
	}
	if total() != n {
		t.Errorf("%d messages in all, want exactly %d", total(), n)
	}
}
