package client_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// benchSizes are the body sizes of BenchmarkRoundTrip.
var benchSizes = []struct {
	name string
	size int
}{
	{"1KiB", 1 << 10},
	{"64KiB", 64 << 10},
	{"1MiB", 1 << 20},
	{"64MiB", 64 << 20},
}

// benchTimeout bounds one benchmark run (one b.N), so a hang fails instead of
// blocking the whole benchmark binary.
const benchTimeout = 5 * time.Minute

// benchRouter is where a benchmark sends: the in-process loomtest router or one in
// a child process.
type benchRouter struct {
	addr string
	tls  *tls.Config
	// wait returns once room has n consumer streams registered.
	wait func(ctx context.Context, room string, n int) error
}

func inProcessRouter(b *testing.B) benchRouter {
	srv := startRouter(b, loomtest.Config{})
	return benchRouter{addr: srv.Addr(), tls: srv.ClientTLS(), wait: srv.WaitConsumers}
}

// BenchmarkRoundTrip sends messages from producer streams through the in-process
// loomtest router to consumer streams, which read every body to its end and ack it.
// One op is one message, produced, delivered, read and acknowledged; b.N messages
// are spread evenly over the pairs. A pair is one producer stream and one consumer
// stream on a room of its own; all producer streams share one connection and all
// consumer streams another. The router runs in this process, so B/op and allocs/op
// include the router's and both QUIC stacks' allocations (see
// BenchmarkAllocsPer1KiBMessage for the client side alone).
func BenchmarkRoundTrip(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr, func(b *testing.B) {
			for _, sz := range benchSizes {
				body := make([]byte, sz.size)
				for _, pairs := range []int{1, 8} {
					b.Run(fmt.Sprintf("%s/pairs=%d", sz.name, pairs), func(b *testing.B) {
						runRoundTrips(b, inProcessRouter(b), tr, body, pairs)
					})
				}
			}
		})
	}
}

// BenchmarkAllocsPer1KiBMessage is BenchmarkRoundTrip/*/1KiB/pairs=1 with the router
// in a child process, so that B/op and allocs/op count only this process: the
// producer and consumer clients with their QUIC (and HTTP/3) stacks, per message.
func BenchmarkAllocsPer1KiBMessage(b *testing.B) {
	body := make([]byte, 1<<10)
	for _, tr := range transports {
		b.Run(tr, func(b *testing.B) {
			runRoundTrips(b, childRouter(b), tr, body, 1)
		})
	}
}

func runRoundTrips(b *testing.B, r benchRouter, transport string, body []byte, pairs int) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ctx, cancelT := context.WithTimeout(ctx, benchTimeout)
	defer cancelT()

	dialB := func() *client.Client {
		c, err := client.Dial(ctx, client.Config{Addr: r.addr, Transport: transport, TLSClientConfig: r.tls}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		return c
	}
	pc, cc := dialB(), dialB()
	consumers := make([]*client.Consumer, pairs)
	producers := make([]*client.Producer, pairs)
	bufs := make([][]byte, pairs)
	for i := range pairs {
		room := "bench-" + strconv.Itoa(i)
		k, err := cc.Consume(ctx, room)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = k.Close() })
		if err := r.wait(ctx, room, 1); err != nil {
			b.Fatal(err)
		}
		p, err := pc.Produce(ctx, room)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Abort) // a no-op once Close returned
		consumers[i], producers[i], bufs[i] = k, p, make([]byte, 64<<10)
	}
	size := len(body)
	b.SetBytes(int64(size))
	var wg sync.WaitGroup
	fail := func(err error) { cancel(err) }

	b.ResetTimer()
	for i := range pairs {
		n := b.N / pairs
		if i < b.N%pairs {
			n++
		}
		if n == 0 {
			continue
		}
		k, p, buf := consumers[i], producers[i], bufs[i]
		key := "k" + strconv.Itoa(i)
		wg.Go(func() {
			for j := range n {
				m, err := k.Next(ctx)
				if err != nil {
					fail(fmt.Errorf("consumer %d, message %d of %d: %w", i, j, n, err))
					return
				}
				got, err := drain(m.Body, buf)
				if err != nil || got != int64(size) {
					fail(fmt.Errorf("consumer %d: read %d of %d bytes: %v", i, got, size, err))
					return
				}
				if err := k.Ack(ctx, m.ID); err != nil {
					fail(err)
					return
				}
			}
		})
		wg.Go(func() {
			var rd bytes.Reader
			for j := range n {
				rd.Reset(body)
				if err := p.Send(ctx, key, uint64(size), &rd); err != nil {
					fail(fmt.Errorf("producer %d, message %d of %d: %w", i, j, n, err))
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()

	if err := context.Cause(ctx); err != nil {
		b.Fatal(err)
	}
	for i, p := range producers {
		if err := p.Close(ctx); err != nil {
			b.Fatalf("producer %d close: %v", i, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// drain reads r to its end with buf, as a consumer that copies the body somewhere
// would (io.Copy to io.Discard would use io.Discard's own pooled buffer instead).
func drain(r io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// childRouterEnv makes the test binary, started again by childRouter, serve a
// loomtest router (TestBenchChildRouter) instead of running tests.
const childRouterEnv = "LOOMBRIDGE_BENCH_CHILD_ROUTER"

// childRouter starts the loomtest router in a child process (this test binary
// running TestBenchChildRouter) and stops it when the benchmark run ends. They talk
// by lines: the child prints its address and certificate, answers "wait ROOM N" with
// "ok" once the room has N consumers, and stops at the end of its stdin.
func childRouter(b *testing.B) benchRouter {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChildRouter$", "-test.count=1")
	cmd.Env = append(os.Environ(), childRouterEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("child router: %v: %s", err, stderr.String())
		}
	})
	out := bufio.NewScanner(stdout)
	line := func() string {
		if !out.Scan() {
			b.Fatalf("child router ended early: %v: %s", out.Err(), stderr.String())
		}
		return out.Text()
	}
	addr, ok := strings.CutPrefix(line(), "addr ")
	if !ok {
		b.Fatal("child router: no address")
	}
	pemB64, ok := strings.CutPrefix(line(), "cert ")
	if !ok {
		b.Fatal("child router: no certificate")
	}
	pem, err := base64.StdEncoding.DecodeString(pemB64)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		b.Fatal("child router: bad certificate")
	}
	var mu sync.Mutex
	return benchRouter{
		addr: addr,
		tls:  &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13},
		wait: func(_ context.Context, room string, n int) error {
			mu.Lock()
			defer mu.Unlock()
			if _, err := fmt.Fprintf(stdin, "wait %s %d\n", room, n); err != nil {
				return err
			}
			if got := line(); got != "ok" {
				return fmt.Errorf("child router: %s", got)
			}
			return nil
		},
	}
}

// TestBenchChildRouter is the child process of childRouter; it is skipped otherwise.
func TestBenchChildRouter(t *testing.T) {
	if os.Getenv(childRouterEnv) != "1" {
		t.Skip("only runs as BenchmarkAllocsPer1KiBMessage's router process")
	}
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fmt.Printf("addr %s\ncert %s\n", srv.Addr(), base64.StdEncoding.EncodeToString(srv.CertPEM()))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var room string
		var n int
		if _, err := fmt.Sscanf(in.Text(), "wait %s %d", &room, &n); err != nil {
			fmt.Printf("bad command %q\n", in.Text())
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := srv.WaitConsumers(ctx, room, n); err != nil {
			fmt.Printf("%v\n", err)
		} else {
			fmt.Println("ok")
		}
		cancel()
	}
}

// BenchmarkBatchConfirm measures what confirming a producer stream costs: one op is
// one producer stream (a batch) opened, carrying batch messages of 1 KiB to a
// consumer that acks each, and closed, Close returning the server's confirm. Over
// QUIC Close also waits for the liveness probe opened after the server's FIN (shared
// by the streams of the connection); streams=4 runs four such producers at once on
// one connection. ns/op is per batch.
func BenchmarkBatchConfirm(b *testing.B) {
	body := make([]byte, 1<<10)
	for _, tr := range transports {
		for _, batch := range []int{1, 64} {
			for _, streams := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/batch=%d/streams=%d", tr, batch, streams), func(b *testing.B) {
					runBatchConfirm(b, inProcessRouter(b), tr, body, batch, streams)
				})
			}
		}
	}
}

func runBatchConfirm(b *testing.B, r benchRouter, transport string, body []byte, batch, streams int) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	ctx, cancelT := context.WithTimeout(ctx, benchTimeout)
	defer cancelT()
	dialB := func() *client.Client {
		c, err := client.Dial(ctx, client.Config{Addr: r.addr, Transport: transport, TLSClientConfig: r.tls}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		return c
	}
	pc, cc := dialB(), dialB()
	const room = "confirm"
	var cwg sync.WaitGroup
	for range streams {
		k, err := cc.Consume(ctx, room)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = k.Close(); cwg.Wait() })
		cwg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				m, err := k.Next(ctx)
				if err != nil {
					return
				}
				if _, err := drain(m.Body, buf); err != nil {
					return
				}
				if err := k.Ack(ctx, m.ID); err != nil {
					return
				}
			}
		})
	}
	if err := r.wait(ctx, room, streams); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range streams {
		wg.Go(func() {
			var rd bytes.Reader
			for next.Add(1) <= int64(b.N) {
				p, err := pc.Produce(ctx, room)
				if err != nil {
					cancel(err)
					return
				}
				for j := range batch {
					rd.Reset(body)
					if err := p.Send(ctx, "k"+strconv.Itoa(w*batch+j), uint64(len(body)), &rd); err != nil {
						cancel(err)
						return
					}
				}
				if err := p.Close(ctx); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
}
