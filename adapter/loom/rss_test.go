package loom_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// Flags of TestMeasureReceiveRSS, a measurement rather than a test: it runs only when
// -rss is given. See BENCHMARKS.md for the commands.
var (
	rssMode     = flag.String("rss", "", `measure the peak RSS of receiving: "adapter" (loom.Subscriber) or "raw" (client.Consumer)`)
	rssSize     = flag.Int("rss.size", 64<<20, "body size in bytes")
	rssMsgs     = flag.Int("rss.msgs", 8, "messages to receive")
	rssStreams  = flag.Int("rss.streams", 1, "consumer streams (and producer streams)")
	rssDeclared = flag.Bool("rss.declared", true, "declare the body size (false: declared size 0, unknown)")
	rssTrans    = flag.String("rss.transport", client.TransportQUIC, "quic or h3")
)

// rssChildEnv makes this test binary, started again by rssRouter, serve the router
// and produce (TestRSSChildRouter) instead of running tests, so that the measuring
// process holds only the receiving side.
const rssChildEnv = "LOOMBRIDGE_RSS_CHILD_ROUTER"

// TestMeasureReceiveRSS receives -rss.msgs bodies of -rss.size bytes over
// -rss.streams consumer streams from a router and producer in a child process, acks
// each and drops it at once, and reports this process's peak RSS (VmHWM), the peak
// of the Go heap's objects (sampled every millisecond) and the CPU time it used
// receiving (user + system, all goroutines: the receiving side alone, which a
// machine shared with other jobs disturbs less than the wall-clock time). It asserts nothing
// about memory: run it on its own, as BENCHMARKS.md shows, and read the figures.
func TestMeasureReceiveRSS(t *testing.T) {
	if *rssMode == "" {
		t.Skip("a measurement: run with -rss=adapter or -rss=raw")
	}
	size, n, streams := *rssSize, *rssMsgs, *rssStreams
	r := rssRouter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const room = "rss"

	var peakHeap atomic.Uint64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peakHeap.Load() {
				peakHeap.Store(v)
			}
			select {
			case <-tick.C:
			case <-stopSampling:
				return
			}
		}
	})

	var received, bad atomic.Int64
	var wg sync.WaitGroup
	cfg := client.Config{Addr: r.addr, Transport: *rssTrans, TLSClientConfig: r.tls}
	switch *rssMode {
	case "adapter":
		sub, err := loom.NewSubscriber(loom.SubscriberConfig{Client: cfg, Consumers: streams, MaxMessageBytes: int64(max(size, loom.DefaultMaxMessageBytes))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		ch, err := sub.Subscribe(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for m := range ch {
				if len(m.Payload) != size {
					bad.Add(1)
				}
				m.Ack()
				if received.Add(1) == int64(n) {
					return
				}
			}
		})
	case "raw":
		c, err := client.Dial(ctx, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Every stream reads until all n arrived: the router, not this side,
		// decides which stream gets which message.
		rctx, stop := context.WithCancel(ctx)
		all := make(chan struct{})
		for range streams {
			k, err := c.Consume(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			wg.Go(func() {
				buf := make([]byte, 64<<10)
				for {
					m, err := k.Next(rctx)
					if err != nil {
						if rctx.Err() == nil {
							bad.Add(1)
						}
						return
					}
					got, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{m.Body}, buf)
					if err != nil || got != int64(size) {
						bad.Add(1)
					}
					if err := k.Ack(rctx, m.ID); err != nil {
						bad.Add(1)
						return
					}
					if received.Add(1) == int64(n) {
						close(all)
					}
				}
			})
		}
		wg.Go(func() {
			select {
			case <-all:
			case <-ctx.Done():
			}
			stop()
		})
	default:
		t.Fatalf("-rss=%q: want adapter or raw", *rssMode)
	}
	r.command(t, fmt.Sprintf("wait %s %d", room, streams))
	cpu0 := cpuTime(t)
	start := time.Now()
	r.command(t, fmt.Sprintf("produce %s %d %d %t %d", room, n, size, *rssDeclared, streams))
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime(t) - cpu0
	close(stopSampling)
	sampler.Wait()
	if bad.Load() > 0 || received.Load() != int64(n) {
		t.Fatalf("received %d of %d, %d bad", received.Load(), n, bad.Load())
	}
	hwm := vmHWM(t)
	const mib = 1 << 20
	t.Logf("%s %s: %d × %.1f MiB over %d streams (declared=%t) in %s, CPU %s (%s per message): peak RSS %.1f MiB (%.2f× the message), peak heap objects %.1f MiB",
		*rssMode, *rssTrans, n, float64(size)/mib, streams, *rssDeclared, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond), (cpu / time.Duration(n)).Round(time.Microsecond),
		float64(hwm)/mib, float64(hwm)/float64(size), float64(peakHeap.Load())/mib)
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM returns this process's peak resident set size in bytes.
func vmHWM(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

type rssChild struct {
	addr string
	tls  *tls.Config
	in   io.Writer
	out  *bufio.Scanner
}

// command sends one line to the child and waits for its "ok".
func (r *rssChild) command(t *testing.T, line string) {
	t.Helper()
	if _, err := fmt.Fprintln(r.in, line); err != nil {
		t.Fatal(err)
	}
	if !r.out.Scan() {
		t.Fatalf("child router ended: %v", r.out.Err())
	}
	if got := r.out.Text(); got != "ok" {
		t.Fatalf("child router: %s: %s", line, got)
	}
}

// rssRouter starts TestRSSChildRouter in a child process.
func rssRouter(t *testing.T) *rssChild {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRSSChildRouter$", "-test.count=1")
	cmd.Env = append(os.Environ(), rssChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child router: %v: %s", err, stderr.String())
		}
	})
	out := bufio.NewScanner(stdout)
	line := func(prefix string) string {
		if !out.Scan() {
			t.Fatalf("child router ended early: %v: %s", out.Err(), stderr.String())
		}
		v, ok := strings.CutPrefix(out.Text(), prefix)
		if !ok {
			t.Fatalf("child router: want %q, got %q", prefix, out.Text())
		}
		return v
	}
	addr := line("addr ")
	pem, err := base64.StdEncoding.DecodeString(line("cert "))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("child router: bad certificate")
	}
	return &rssChild{addr: addr, tls: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}, in: stdin, out: out}
}

// TestRSSChildRouter is rssRouter's child process; it is skipped otherwise. It
// answers "wait ROOM N" once ROOM has N consumer streams, and "produce ROOM COUNT
// SIZE DECLARED STREAMS" once COUNT bodies of SIZE zero bytes were produced on
// STREAMS producer streams and acknowledged.
func TestRSSChildRouter(t *testing.T) {
	if os.Getenv(rssChildEnv) != "1" {
		t.Skip("only runs as TestMeasureReceiveRSS's router process")
	}
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fmt.Printf("addr %s\ncert %s\n", srv.Addr(), base64.StdEncoding.EncodeToString(srv.CertPEM()))
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		var err error
		switch {
		case len(f) == 3 && f[0] == "wait":
			n, _ := strconv.Atoi(f[2])
			err = srv.WaitConsumers(ctx, f[1], n)
		case len(f) == 6 && f[0] == "produce":
			count, _ := strconv.Atoi(f[2])
			size, _ := strconv.Atoi(f[3])
			declared := f[4] == "true"
			streams, _ := strconv.Atoi(f[5])
			err = rssProduce(ctx, srv, f[1], count, size, declared, streams)
		default:
			err = fmt.Errorf("bad command %q", in.Text())
		}
		cancel()
		if err != nil {
			fmt.Printf("%v\n", err)
		} else {
			fmt.Println("ok")
		}
	}
}

func rssProduce(ctx context.Context, srv *loomtest.Server, room string, count, size int, declared bool, streams int) error {
	body := make([]byte, size)
	var next atomic.Int64
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			// A connection per producer stream: with several large messages on one
			// connection, data the router has not read yet on one stream (it waits
			// for an ack) can use up the connection's flow-control window and stall
			// the others.
			c, err := client.Dial(ctx, client.Config{Addr: srv.Addr(), TLSClientConfig: srv.ClientTLS()}, nil)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			p, err := c.Produce(ctx, room)
			if err != nil {
				errs[i] = err
				return
			}
			for {
				j := next.Add(1) - 1
				if j >= int64(count) {
					break
				}
				var d uint64
				if declared {
					d = uint64(size)
				}
				if err := p.Send(ctx, "k"+strconv.FormatInt(j, 10), d, bytes.NewReader(body)); err != nil {
					errs[i] = err
					return
				}
			}
			errs[i] = p.Close(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
