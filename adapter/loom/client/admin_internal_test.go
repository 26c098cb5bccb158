package client

import (
	"maps"
	"strings"
	"testing"
)

// TestParseStreams reads loom_streams as loomd's exposition writes it: consumers of
// both transports add up per room; producers, zero samples, other metrics (one whose
// name starts with loom_streams) and comments do not count; escaped label values are
// read as the room they name.
func TestParseStreams(t *testing.T) {
	page := `# HELP loom_streams Active streams
# TYPE loom_streams gauge
loom_streams{role="consumer",room="orders",transport="quic"} 3
loom_streams{role="consumer",room="orders",transport="h3"} 1
loom_streams{role="producer",room="orders",transport="quic"} 4
loom_streams{role="consumer",room="gone",transport="quic"} 0
loom_streams{transport="quic", room="a\"b\\c", role="consumer"} 2
loom_streams{role="consumer",room="",transport="quic"} 1
loom_streams_total{role="consumer",room="fake",transport="quic"} 9
loom_messages_in_total{room="orders"} 1e+06
`
	got, err := parseStreams(strings.NewReader(page), "consumer")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"orders": 4, `a"b\c`: 2, "": 1}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{
		`loom_streams{role="consumer",room="x} 1`,
		`loom_streams{role="consumer",room="x"} one`,
		`loom_streams{role="consumer",room="x"}`,
	} {
		if _, err := parseStreams(strings.NewReader(bad+"\n"), "consumer"); err == nil {
			t.Errorf("%q: no error; a miscount could let messages into an empty room", bad)
		}
	}
}

func TestMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://loom:9091":           "http://loom:9091/metrics",
		"http://loom:9091/":          "http://loom:9091/metrics",
		"https://loom/admin/metrics": "https://loom/admin/metrics",
	} {
		if got, err := metricsURL(in); err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"loom:9091", "ftp://loom", "http://", "http://user:pw@loom:9091", "ftp://user:pw@loom", "http://user:pw@loom:bad port"} {
		if _, err := metricsURL(bad); err == nil || !strings.HasPrefix(err.Error(), "admin_url: ") {
			t.Errorf("%q: %v, want an admin_url error", bad, err)
		}
		if _, err := metricsURL(bad); err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("%q: the error shows the password: %v", bad, err)
		}
	}
}

// TestConfigChecksAdminURL: Validate reports a bad admin_url at its key.
func TestConfigChecksAdminURL(t *testing.T) {
	c := Config{Addr: "127.0.0.1:4433", AdminURL: "loom:9091"}
	c.SetDefaults()
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "admin_url: ") {
		t.Fatalf("Validate: %v, want an admin_url error", err)
	}
	c.AdminURL = "http://loom:9091"
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}
