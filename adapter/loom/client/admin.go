package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Loom's admin listener.
//
// loomd serves Prometheus metrics on an admin listener of its own (plain HTTP,
// /metrics), among them loom_streams{transport, role, room}: the streams open now.
// A consumer stream counts from its accepted hello until it ends, labelled with the
// room its hello named. Admin reads that gauge, so that a publisher can wait for a
// room to have a consumer before it sends there: loomd discards what reaches a room
// without one and tells the producer nothing.

// adminTimeout bounds one metrics request.
const adminTimeout = 2 * time.Second

// maxMetricsBytes bounds what is read of a metrics page: loomd's has a few series
// per room, so this is many thousands of rooms.
const maxMetricsBytes = 16 << 20

// Admin reads a Loom server's admin listener. It is safe for concurrent use; Close
// releases its idle connections.
type Admin struct {
	url string
	tr  *http.Transport
	hc  *http.Client
}

// NewAdmin returns a reader of the metrics at adminURL: a base URL
// ("http://loom:9091", whose /metrics is read) or the metrics page's own URL.
func NewAdmin(adminURL string) (*Admin, error) {
	u, err := metricsURL(adminURL)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
	return &Admin{url: u, tr: tr, hc: &http.Client{Transport: tr, Timeout: adminTimeout}}, nil
}

// metricsURL checks an admin_url and returns the metrics page's URL.
func metricsURL(adminURL string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		// url.Error repeats the URL, which may hold a password: not in a log.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return "", fmt.Errorf("admin_url: not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("admin_url: want http:// or https://, got %q", u.Redacted())
	}
	if u.Host == "" {
		return "", fmt.Errorf("admin_url: %q has no host", u.Redacted())
	}
	if u.User != nil {
		return "", errors.New("admin_url: must not carry credentials")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	return u.String(), nil
}

// URL returns the metrics page read.
func (a *Admin) URL() string { return a.url }

// ConsumerStreams returns how many consumer streams the server reports for each of
// rooms (over both transports), from one read of its metrics. A room the server has
// no series for has 0. The default room counts under both of its names ("" and
// "default"), since the gauge carries the room as each hello named it.
func (a *Admin) ConsumerStreams(ctx context.Context, rooms []string) (map[string]int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
	if err != nil {
		return nil, fmt.Errorf("loom admin: %w", err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loom admin: read metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("loom admin: read metrics: %s answered %s", a.url, resp.Status)
	}
	byRoom, err := parseStreams(io.LimitReader(resp.Body, maxMetricsBytes), "consumer")
	if err != nil {
		return nil, fmt.Errorf("loom admin: %s: %w", a.url, err)
	}
	out := make(map[string]int, len(rooms))
	for _, r := range rooms {
		n := byRoom[r]
		if r == "" || r == wire.DefaultRoom {
			n = byRoom[""] + byRoom[wire.DefaultRoom]
		}
		out[r] = int(n)
	}
	return out, nil
}

// Close releases idle connections. It is idempotent.
func (a *Admin) Close() { a.tr.CloseIdleConnections() }

// parseStreams sums loom_streams samples of role by room from a Prometheus text
// exposition. Other metrics, comments and malformed lines of other metrics are
// skipped; a loom_streams line that cannot be read is an error, since a miscount
// could let a message into a room without consumers.
func parseStreams(r io.Reader, role string) (map[string]float64, error) {
	const name = "loom_streams"
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ' && rest[0] != '\t') {
			continue // another metric (loom_streams_total would be one), or a comment
		}
		labels := map[string]string{}
		if rest[0] == '{' {
			var err error
			if labels, rest, err = parseLabels(rest[1:]); err != nil {
				return nil, fmt.Errorf("metrics line %q: %w", line, err)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: value: %w", line, err)
		}
		if labels["role"] == role && v > 0 {
			out[labels["room"]] += v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}

// parseLabels reads `a="x",b="y"}` and returns the labels and what follows the
// brace. Values use the text format's escapes: \\, \" and \n.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, "", errors.New("label without a name")
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t")
		if !strings.HasPrefix(s, `"`) {
			return nil, "", fmt.Errorf("label %s: value not quoted", key)
		}
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(s[i])
				}
				continue
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, "", fmt.Errorf("label %s: unterminated value", key)
		}
		labels[key] = b.String()
		s = strings.TrimLeft(s[i+1:], " \t")
		s = strings.TrimPrefix(s, ",")
	}
}
