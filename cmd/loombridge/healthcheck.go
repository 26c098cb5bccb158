package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/internal/health"
	"github.com/loombridge/loombridge/pipelines"
)

// healthcheckFlags are the flags of loombridge healthcheck.
type healthcheckFlags struct {
	addr    string
	timeout time.Duration
	// a Loom server instead
	loom       string
	caFile     string
	serverName string
}

const healthcheckUsage = `healthcheck [--addr HOST:PORT] [--timeout D]
       loombridge healthcheck --loom HOST:PORT [--ca-file F] [--server-name N] [--timeout D]

Asks a running loombridge's /readyz (--addr, its http.addr; http://HOST:PORT
works too), or, with --loom, checks that a Loom server completes a QUIC
handshake (loom/1) with a certificate the CA of --ca-file (or the system
roots) verifies: the compose file's health check of its Loom server. Exit
codes: 0 ready, 1 not ready or unreachable, 2 bad flags.`

// runHealthcheck asks a running instance's /readyz, or a Loom server for a
// handshake: exit 0 when ready, 1 when not or unreachable. For container
// health checks, where curl may be absent.
func runHealthcheck(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var f healthcheckFlags
	fs := newFlags("healthcheck", healthcheckUsage, stderr)
	fs.StringVar(&f.addr, "addr", pipelines.DefaultHTTPAddr, "the instance's http.addr")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up after this long")
	fs.StringVar(&f.loom, "loom", "", "check the Loom server at `host:port` (UDP) instead")
	fs.StringVar(&f.caFile, "ca-file", "", "with --loom: PEM `file` of the CA to trust instead of the system roots")
	fs.StringVar(&f.serverName, "server-name", "", "with --loom: the `name` the server's certificate must hold (default: the host of --loom)")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if f.loom != "" {
		return healthcheckLoom(ctx, f, stdout, stderr)
	}
	if f.caFile != "" || f.serverName != "" {
		fmt.Fprintln(stderr, "loombridge healthcheck: --ca-file and --server-name go with --loom")
		return exitUsage
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

// healthcheckLoom dials the Loom server of --loom once, within --timeout.
func healthcheckLoom(ctx context.Context, f healthcheckFlags, stdout, stderr io.Writer) int {
	if _, _, err := net.SplitHostPort(f.loom); err != nil {
		fmt.Fprintf(stderr, "loombridge healthcheck: --loom: want HOST:PORT: %v\n", err)
		return exitUsage
	}
	c := client.Config{Addr: f.loom}
	c.TLS.CAFile, c.TLS.ServerName = f.caFile, f.serverName
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	cl, err := client.Dial(dctx, c, nil)
	if err != nil {
		fmt.Fprintf(stderr, "loombridge healthcheck: %v\n", dialProblem(f.loom, f.timeout, err))
		return exitFailure
	}
	_ = cl.Close()
	fmt.Fprintf(stdout, "%s: Loom server answers\n", f.loom)
	return exitOK
}
