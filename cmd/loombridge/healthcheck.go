package main

import (
	"context"
	"fmt"
	"io"
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
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if err := health.Check(ctx, f.addr); err != nil {
		fmt.Fprintf(stderr, "loombridge healthcheck: %s: %v\n", f.addr, err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ready\n", f.addr)
	return exitOK
}
