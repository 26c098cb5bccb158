package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// scrape reads the admin listener's metrics page.
func scrape(t *testing.T, s *Server) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, s.AdminURL()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: status %d", resp.StatusCode)
	}
	return string(b), err
}

// streamsLine is a loom_streams sample as the text format writes it (labels sorted).
func streamsLine(role, room, via string, n int) string {
	return `loom_streams{role="` + role + `",room="` + room + `",transport="` + via + `"} ` + string(rune('0'+n))
}

// TestAdminServesStreams: the admin listener reports consumer streams per room and
// transport, with the room as the hello named it, and a producer stream while it is
// open. Stop and Kill take the listener away as the process goes; Restart brings it
// back on the same address with nothing counted.
func TestAdminServesStreams(t *testing.T) {
	s := start(t, Config{AdminAddr: "127.0.0.1:0"})
	addr := s.AdminAddr()
	if addr == "" || !strings.HasPrefix(s.AdminURL(), "http://") {
		t.Fatalf("admin addr %q, url %q", addr, s.AdminURL())
	}
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 8)
	quicConsumer(t, conn, "a", "", 0, out, true)
	quicConsumer(t, conn, "a", "", 1, out, true)
	quicConsumer(t, conn, "", "", 2, out, true) // the default room, named ""
	h3Consumer(t, h3Transport(t, s), s, "a", 3, out, true)
	if err := s.WaitConsumers(testCtx(t), "a", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
		t.Fatal(err)
	}
	prod := openQUIC(t, conn, wire.RoleProducer, "b", "")
	want := []string{
		streamsLine("consumer", "a", "quic", 2),
		streamsLine("consumer", "a", "h3", 1),
		streamsLine("consumer", "", "quic", 1),
		streamsLine("producer", "b", "quic", 1),
	}
	var page string
	eventually(t, "the four series", func() bool {
		var err error
		if page, err = scrape(t, s); err != nil {
			t.Fatalf("scrape: %v", err)
		}
		for _, w := range want {
			if !strings.Contains(page, w+"\n") {
				return false
			}
		}
		return true
	})
	if strings.Contains(page, `room="default"`) {
		t.Fatalf("the room named \"\" is labelled default:\n%s", page)
	}
	// The producer's end is counted too.
	if err := prod.str.Close(); err != nil {
		t.Fatal(err)
	}
	readEOF(t, prod.str)
	eventually(t, "the producer stream counted closed", func() bool {
		page, err := scrape(t, s)
		return err == nil && strings.Contains(page, streamsLine("producer", "b", "quic", 0)+"\n")
	})

	for _, stop := range []func() error{s.Kill, s.Stop} {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := scrape(t, s); err == nil {
			t.Fatal("the admin listener answered while the server was down")
		}
		if err := s.Restart(); err != nil {
			t.Fatal(err)
		}
		if got := s.AdminAddr(); got != addr {
			t.Fatalf("admin address %q after restart, want %q", got, addr)
		}
		page, err := scrape(t, s)
		if err != nil {
			t.Fatalf("scrape after restart: %v", err)
		}
		if strings.Contains(page, "loom_streams{") {
			t.Fatalf("a restarted server reports streams of its previous life:\n%s", page)
		}
	}
}
