package client

import (
	"context"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// TestGraceIgnoresOutage: the grace a silent connection gets once a fresh connection
// to the server succeeded is measured on that fresh connection, so it does not grow
// with how long the server was down. It used to be twice the fresh dial, counted from
// its first attempt: after this 3 s outage, over 6 s, for which a dead connection was
// kept while the server was back.
func TestGraceIgnoresOutage(t *testing.T) {
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	tc := srv.ClientTLS()
	tc.NextProtos = []string{ALPNLoom}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := Config{Addr: srv.Addr()}
	cfg.SetDefaults()
	c := &Client{cfg: cfg}
	type result struct {
		took  time.Duration
		grace time.Duration
		err   error
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		conn, err := dialStaggered(ctx, srv.Addr(), tc, c.quicConfig())
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.CloseWithError(0, "")
		done <- result{took: time.Since(start), grace: graceFor(conn)}
	}()
	const outage = 3 * time.Second
	time.Sleep(outage) // the outage the dial lives through
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("dial took %s (the outage included), grace %s", r.took.Round(time.Millisecond), r.grace.Round(time.Millisecond))
	// The old grace was 2 x took. A loaded machine lengthens round trips, and so the
	// grace; only more than the whole outage would make it depend on it.
	if r.took < outage || r.grace >= outage {
		t.Fatalf("dial took %s, grace %s: want a grace below the %s outage", r.took, r.grace, outage)
	}
}
