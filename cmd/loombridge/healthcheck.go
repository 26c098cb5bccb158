package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/loombridge/loombridge/internal/health"
	"github.com/loombridge/loombridge/pipelines"
)

// healthcheckFlags are the flags of loombridge healthcheck.
type healthcheckFlags struct {
	addr    string
	timeout time.Duration
}

// runHealthcheck asks a running instance's /readyz: exit 0 when ready, 1 when
// not or unreachable. For container health checks, where curl may be absent.
func runHealthcheck(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var f healthcheckFlags
	fs := newFlags("healthcheck", "healthcheck [--addr HOST:PORT] [--timeout D]", stderr)
	fs.StringVar(&f.addr, "addr", pipelines.DefaultHTTPAddr, "the instance's http.addr")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up after this long")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	addr, err := healthcheckAddr(f.addr)
	if err != nil {
		fmt.Fprintf(stderr, "loombridge healthcheck: --addr: %v\n", err)
		return exitUsage
	}
	f.addr = addr
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := health.Check(ctx, f.addr); err != nil {
		fmt.Fprintf(stderr, "loombridge healthcheck: %s: %v\n", f.addr, err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ready\n", f.addr)
	return exitOK
}

// healthcheckAddr takes --addr as HOST:PORT, as http.addr is written, or as a
// URL such as http://127.0.0.1:9464 or http://127.0.0.1:9464/readyz, and
// returns HOST:PORT.
func healthcheckAddr(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		if u.Scheme != "http" {
			return "", fmt.Errorf("%q: the health listener speaks plain http, not %s", s, u.Scheme)
		}
		if p := strings.TrimSuffix(u.Path, "/"); p != "" && p != "/readyz" {
			return "", fmt.Errorf("%q: healthcheck asks /readyz; give HOST:PORT or http://HOST:PORT", s)
		}
		s = u.Host
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", fmt.Errorf("want HOST:PORT or http://HOST:PORT: %v", err)
	}
	return s, nil
}
