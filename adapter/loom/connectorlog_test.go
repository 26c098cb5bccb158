package loom_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/internal/testkit"
)

// A failing connection logs the server's address once, as loom_addr (the
// publisher's field), not again as addr.
func TestConnectionFailureLogsTheAddressOnce(t *testing.T) {
	// A UDP port nothing listens on: the handshake times out.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	var logs testkit.Buffer
	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client:    client.Config{Addr: addr, DialTimeout: 100 * time.Millisecond},
		Reconnect: loom.BackoffConfig{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond},
	}, watermill.NewSlogLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			if !strings.Contains(line, "Loom connection failed, retrying") {
				continue
			}
			if !strings.Contains(line, `"loom_addr":"`+addr+`"`) || strings.Contains(line, `,"addr":`) {
				t.Errorf("want the address as loom_addr, and not again as addr: %s", line)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection failure logged")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
