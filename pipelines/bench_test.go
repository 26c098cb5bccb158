package pipelines_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
	"github.com/loombridge/loombridge/internal/tracing"
	"github.com/loombridge/loombridge/pipelines"
)

// Shared by the pipeline benchmarks and their baseline, so that the two
// differ only in what consumes the room.
const (
	benchRoom = "bench"
	// benchConsumers is the consumer streams of the pipeline's loom source and
	// of the baseline's subscriber. Loom sends a stream its next message only
	// after the previous one was acked, so this is also how many messages the
	// pipeline handles at once.
	benchConsumers = 8
	// benchStreams is the producer streams of the fire_and_forget publisher
	// that fills the room (the fastest setting of the adapter's BenchmarkPubSub).
	benchStreams = 8
)

var benchSizes = []struct {
	name string
	size int
}{{"1KiB", 1 << 10}, {"1MiB", 1 << 20}}

// benchPayload is printable ASCII, so the file sink's JSONL line carries it
// as it is: no JSON escapes, no base64.
func benchPayload(size int) []byte {
	return bytes.Repeat([]byte("0123456789abcdef"), size/16)
}

// benchLogger keeps the engine's warnings and errors (shown with the
// benchmark's output) and drops its Info lines: a benchmark's log is always
// printed.
func benchLogger(b *testing.B) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{b}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// BenchmarkLoomToFile runs the pipeline loom (embedded router) -> file
// (jsonl) and fills its room from the benchmark with a fire_and_forget
// loom.Publisher. One op is one message published, routed, consumed by the
// pipeline, written to the file and acked; the timer stops when the pipeline
// counts b.N messages done. Compare with BenchmarkLoomConsumeBaseline.
func BenchmarkLoomToFile(b *testing.B) {
	for _, sz := range benchSizes {
		payload := benchPayload(sz.size)
		for _, fsync := range []string{"never", "interval"} {
			b.Run(sz.name+"/fsync="+fsync, func(b *testing.B) {
				runLoomToFile(b, payload, fsync)
			})
		}
	}
}

func runLoomToFile(b *testing.B, payload []byte, fsync string) {
	runLoomToFileTraced(b, payload, fsync, nil)
}

// runLoomToFileTraced is runLoomToFile with the engine's tracer provider (nil:
// tracing off).
func runLoomToFileTraced(b *testing.B, payload []byte, fsync string, tp trace.TracerProvider) {
	r := startLoomToFile(b, payload, fsync, tp)
	defer r.close()
	msgs := benchMessages(b.N, payload)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	cpu0 := cpuTime(b)
	r.run(msgs)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	r.check()
}

// loomToFile is a running loom -> file (jsonl) pipeline with the publisher
// that fills its room.
type loomToFile struct {
	b       *testing.B
	dir     string
	payload []byte
	e       *pipelines.Engine
	srv     *loomtest.Server
	pub     *loom.Publisher
	sent    uint64 // messages published, the warm-up's included
	closed  bool
	// buffered: the pipeline has a buffer; a message is done once the file
	// took it, not once it was stored.
	buffered bool
}

func startLoomToFile(b *testing.B, payload []byte, fsync string, tp trace.TracerProvider) *loomToFile {
	return startLoomToFileBuffered(b, payload, fsync, tp, "")
}

// startLoomToFileBuffered starts loom -> file with buffer: {} when sync (the
// buffers' fsync policy) is set, without a buffer when it is "".
func startLoomToFileBuffered(b *testing.B, payload []byte, fsync string, tp trace.TracerProvider, sync string) *loomToFile {
	dir := b.TempDir()
	buffer := ""
	if sync != "" {
		buffer = "buffers: {dir: " + filepath.Join(dir, "buffer") + ", sync: " + sync + "}"
	}
	cfg := parse(b, fill(`
log: {stats_interval: 0}
@BUFFERS@
connections:
  local: {embedded: true}
pipelines:
  bridge:
    from: {type: loom, connection: local, room: @ROOM@, consumers: @C@}
    @BUFFER@
    to:
      archive: {type: file, dir: @DIR@, topic: @ROOM@, fsync: @FSYNC@}
`, "@ROOM@", benchRoom, "@C@", fmt.Sprint(benchConsumers), "@DIR@", dir, "@FSYNC@", fsync,
		"@BUFFERS@", buffer, "@BUFFER@", map[bool]string{true: "buffer: {}"}[sync != ""]))
	e := pipelines.NewEngine(pipelines.EngineOptions{Logger: benchLogger(b), TracerProvider: tp})
	if err := e.Start(context.Background(), cfg); err != nil {
		b.Fatal(err)
	}
	r := &loomToFile{b: b, dir: dir, payload: payload, e: e, buffered: sync != ""}
	srv, ok := e.EmbeddedServer("local")
	if !ok {
		r.close()
		b.Fatal("no embedded router")
	}
	r.srv = srv
	// The engine waits for the first consumer stream only; a saturated room
	// needs them all.
	waitConsumers(b, srv, benchConsumers)
	r.pub = benchPublisher(b, srv)
	warmUp(b, r.pub, payload, func(n uint64) { pollUntil(b, r.done, n, 10*time.Second) })
	r.sent = 1
	return r
}

func (r *loomToFile) done() uint64 {
	st := r.e.Stats()["bridge"]
	if r.buffered {
		return st.Sinks["archive"].Published
	}
	return st.Done
}

// run publishes msgs and waits until the pipeline has done them.
func (r *loomToFile) run(msgs []*message.Message) {
	publishAll(r.b, r.pub, msgs)
	r.sent += uint64(len(msgs))
	pollUntil(r.b, r.done, r.sent, benchWait(len(msgs), len(r.payload)))
}

// check fails the benchmark unless every message went through once.
func (r *loomToFile) check() {
	b := r.b
	st := r.e.Stats()["bridge"]
	if st.Received != r.sent || st.Failed != 0 || st.Sinks["archive"].Retried != 0 {
		b.Fatalf("pipeline stats %+v, want %d received, none failed or retried", st, r.sent)
	}
	checkRouter(b, r.srv)
	// The file's size, not its lines: re-reading a file of b.N MiB is no check
	// a benchmark should pay for.
	fi, err := os.Stat(filepath.Join(r.dir, benchRoom+".jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	if min := int64(r.sent) * int64(len(r.payload)); fi.Size() < min {
		b.Fatalf("file has %d bytes, want at least %d", fi.Size(), min)
	}
}

// close may be called again: the paired benchmark closes one early.
func (r *loomToFile) close() {
	if r.closed {
		return
	}
	r.closed = true
	if r.pub != nil {
		r.pub.Close()
	}
	closeEngine(r.b, r.e)
}

// BenchmarkLoomToFileTracing is BenchmarkLoomToFile (1 KiB, fsync never)
// with tracing off and on, in one run. On is what tracing.Setup builds for
// exporter otlp at sampling_ratio 1.0 (every message is a new trace, all
// recorded), with a batch span processor, but exporting to countingExporter,
// which counts the spans and sends nothing: the cost measured is the spans',
// not a collector's. spans/msg reports how many spans were exported per
// message (2: receive, sink publish; fewer if the batch queue dropped some).
// On a loaded machine the two vary more from run to run than they differ:
// BenchmarkLoomToFileTracingPaired compares them within one process.
func BenchmarkLoomToFileTracing(b *testing.B) {
	payload := benchPayload(1 << 10)
	b.Run("tracing=off", func(b *testing.B) { runLoomToFileTraced(b, payload, "never", nil) })
	b.Run("tracing=on", func(b *testing.B) {
		tp, exp := benchTracing(b)
		runLoomToFileTraced(b, payload, "never", tp.TracerProvider())
		shutdownTracing(b, tp)
		b.ReportMetric(float64(exp.spans.Load())/float64(b.N+1), "spans/msg")
	})
}

// tracingChunk is how many messages each pipeline of
// BenchmarkLoomToFileTracingPaired gets in turn: a few hundred milliseconds,
// short next to how the load of a shared machine changes.
const tracingChunk = 1000

// BenchmarkLoomToFileTracingPaired runs the two pipelines of
// BenchmarkLoomToFileTracing at once in one process, tracing off and on,
// and gives them chunks of tracingChunk messages in turn (the order
// alternating), so that both see the same load. The CPU time of the process
// (getrusage) while a chunk goes through is that pipeline's: the other one
// idles meanwhile. One op is one message through each. It reports
// cpu-ns/msg of each, their ratio as overhead-% (on against off), the
// median of the ratios of chunk pairs as median-overhead-%, the msgs/s of
// each, and the throughput on loses against off as tput-loss-% (all chunks)
// and median-tput-loss-% (the median chunk pair).
func BenchmarkLoomToFileTracingPaired(b *testing.B) {
	payload := benchPayload(1 << 10)
	tp, exp := benchTracing(b)
	off := startLoomToFile(b, payload, "never", nil)
	defer off.close()
	on := startLoomToFile(b, payload, "never", tp.TracerProvider())
	defer on.close()
	rigs := [2]*loomToFile{off, on}
	// A chunk each first, untimed: the first messages through a pipeline
	// cost more (stacks, buffers, the file's first writes).
	for _, r := range rigs {
		r.run(benchMessages(tracingChunk, payload))
	}
	msgs := [2][]*message.Message{benchMessages(b.N, payload), benchMessages(b.N, payload)}
	var cpu, wall [2]time.Duration
	var ratios []float64     // on's CPU over off's, per pair of chunks
	var wallRatios []float64 // off's wall time over on's (on's throughput over off's), per pair
	b.SetBytes(2 * int64(len(payload)))
	b.ResetTimer()
	for i, from := 0, 0; from < b.N; i, from = i+1, from+tracingChunk {
		to := min(from+tracingChunk, b.N)
		var pair, pairWall [2]time.Duration
		for k := range 2 {
			v := k ^ i%2 // off first, then on first, ...
			c0, t0 := cpuTime(b), time.Now()
			rigs[v].run(msgs[v][from:to])
			pair[v] = cpuTime(b) - c0
			pairWall[v] = time.Since(t0)
			cpu[v] += pair[v]
			wall[v] += pairWall[v]
		}
		ratios = append(ratios, float64(pair[1])/float64(pair[0]))
		wallRatios = append(wallRatios, float64(pairWall[0])/float64(pairWall[1]))
	}
	b.StopTimer()
	off.check()
	on.check()
	perMsg := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(perMsg(cpu[0]), "off-cpu-ns/msg")
	b.ReportMetric(perMsg(cpu[1]), "on-cpu-ns/msg")
	b.ReportMetric(100*(float64(cpu[1])/float64(cpu[0])-1), "overhead-%")
	// A burst of the machine's other work lands in one chunk: the median pair
	// is not moved by it.
	slices.Sort(ratios)
	b.ReportMetric(100*(ratios[len(ratios)/2]-1), "median-overhead-%")
	b.ReportMetric(float64(b.N)/wall[0].Seconds(), "off-msgs/s")
	b.ReportMetric(float64(b.N)/wall[1].Seconds(), "on-msgs/s")
	// Throughput: the share of off's msgs/s that on loses, over all chunks
	// and for the median chunk pair.
	b.ReportMetric(100*(1-float64(wall[0])/float64(wall[1])), "tput-loss-%")
	slices.Sort(wallRatios)
	b.ReportMetric(100*(1-wallRatios[len(wallRatios)/2]), "median-tput-loss-%")
	on.close() // its spans, all ended, reach the exporter by the shutdown
	shutdownTracing(b, tp)
	b.ReportMetric(float64(exp.spans.Load())/float64(on.sent), "spans/msg")
}

// benchTracing is what tracing.Setup builds for exporter otlp (batch span
// processor, sampling 1.0), exporting to a countingExporter.
func benchTracing(b *testing.B) (*tracing.Provider, *countingExporter) {
	exp := &countingExporter{}
	tp, err := tracing.Setup(context.Background(), tracing.Config{Exporter: tracing.ExporterOTLP}, tracing.Options{Exporter: exp})
	if err != nil {
		b.Fatal(err)
	}
	return tp, exp
}

func shutdownTracing(b *testing.B, tp *tracing.Provider) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

// countingExporter counts the spans it is given and drops them.
type countingExporter struct{ spans atomic.Int64 }

func (c *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.spans.Add(int64(len(spans)))
	return nil
}

func (c *countingExporter) Shutdown(context.Context) error { return nil }

// BenchmarkLoomConsumeBaseline is what BenchmarkLoomToFile is measured
// against: the same router, publisher and messages, consumed by a
// loom.Subscriber with the same consumer streams whose only handling is Ack.
// It is the most the pipeline could reach.
func BenchmarkLoomConsumeBaseline(b *testing.B) {
	for _, sz := range benchSizes {
		payload := benchPayload(sz.size)
		b.Run(sz.name, func(b *testing.B) { runConsumeBaseline(b, payload) })
	}
}

func runConsumeBaseline(b *testing.B, payload []byte) {
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	sub, err := loom.NewSubscriber(loom.SubscriberConfig{Client: benchClient(srv), Consumers: benchConsumers}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, benchRoom)
	if err != nil {
		b.Fatal(err)
	}
	var received atomic.Uint64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		for m := range ch {
			m.Ack()
			received.Add(1)
		}
	})
	waitConsumers(b, srv, benchConsumers)
	pub := benchPublisher(b, srv)
	defer pub.Close()

	// Polled like the pipeline's count, so both carry the same granularity.
	done := received.Load
	warmUp(b, pub, payload, func(n uint64) { pollUntil(b, done, n, 10*time.Second) })

	msgs := benchMessages(b.N, payload)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	cpu0 := cpuTime(b)
	publishAll(b, pub, msgs)
	pollUntil(b, done, 1+uint64(b.N), benchWait(b.N, len(payload)))
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	checkRouter(b, srv)
	if got := received.Load(); got != 1+uint64(b.N) {
		b.Fatalf("received %d messages, want %d", got, 1+b.N)
	}
}

// BenchmarkGenerateToFile runs generate (interval 0, 1 KiB payloads, 64 in
// flight) -> file (jsonl, fsync never): the engine and the file sink without
// Loom. One op is one message made, written and acked; the timer runs from
// the engine's start to b.N messages done.
func BenchmarkGenerateToFile(b *testing.B) {
	b.Run("1KiB", func(b *testing.B) {
		dir := b.TempDir()
		cfg := parse(b, fill(`
log: {stats_interval: 0}
pipelines:
  gen:
    from: {type: generate, interval: 0, count: @N@, pad_to: 1024, in_flight: 64, payload: '{"n":{{.N}}}', key: 'k{{mod .N 16}}'}
    to:
      out: {type: file, dir: @DIR@, topic: gen, fsync: never}
`, "@N@", fmt.Sprint(b.N), "@DIR@", dir))
		e := pipelines.NewEngine(pipelines.EngineOptions{Logger: benchLogger(b)})
		b.SetBytes(1024)
		b.ResetTimer()
		if err := e.Start(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
		defer closeEngine(b, e)
		pollUntil(b, func() uint64 { return e.Stats()["gen"].Done }, uint64(b.N), benchWait(b.N, 1024))
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		if st := e.Stats()["gen"]; st.Received != uint64(b.N) || st.Failed != 0 {
			b.Fatalf("pipeline stats %+v, want %d received, none failed", st, b.N)
		}
	})
}

func benchClient(srv *loomtest.Server) client.Config {
	return client.Config{Addr: srv.Addr(), TLSClientConfig: srv.ClientTLS()}
}

func benchPublisher(b *testing.B, srv *loomtest.Server) *loom.Publisher {
	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client:  benchClient(srv),
		Mode:    loom.ModeFireAndForget,
		Streams: benchStreams,
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return pub
}

func waitConsumers(b *testing.B, srv *loomtest.Server, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.WaitConsumers(ctx, benchRoom, n); err != nil {
		b.Fatalf("consumer streams: %v", err)
	}
}

// warmUp sends one message through before the timer starts: the first
// producer stream on a connection waits for a possible refusal, once.
func warmUp(b *testing.B, pub *loom.Publisher, payload []byte, wait func(n uint64)) {
	if err := pub.Publish(benchRoom, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
		b.Fatal(err)
	}
	wait(1)
}

// benchMessages are made before the timer starts; they share one payload.
// Their keys are their UUIDs, so they spread over the consumer streams.
func benchMessages(n int, payload []byte) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
	}
	return msgs
}

// publishAll publishes from one goroutine: a fire_and_forget Publish
// returns once the message is buffered, and blocks while the buffer is full,
// which keeps the room saturated.
func publishAll(b *testing.B, pub *loom.Publisher, msgs []*message.Message) {
	for _, m := range msgs {
		if err := pub.Publish(benchRoom, m); err != nil {
			b.Fatal(err)
		}
	}
}

// pollUntil waits until count reaches n. Polling every 200 µs costs little
// next to the counts taken and adds at most that to the measured time.
func pollUntil(b *testing.B, count func() uint64, n uint64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for count() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages done after %s", count(), n, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// checkRouter fails the benchmark if the router lost a message: a
// benchmark of what did not arrive measures nothing.
func checkRouter(b *testing.B, srv *loomtest.Server) {
	st := srv.Stats()
	if st.Discarded+st.DroppedFull+st.DroppedTooLarge+st.LostOnDisconnect+st.ProtocolErrors > 0 {
		b.Fatalf("router lost messages: %+v", st)
	}
}

// cpuTime is the user and system CPU time of the whole process (router,
// publisher, pipeline and the GC): on a shared machine it varies far less
// than wall time, which waits for the other jobs.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchWait bounds how long the messages may take after the timer started.
func benchWait(n, size int) time.Duration {
	return time.Minute + time.Duration(n)*time.Duration(size)*time.Second/(10<<20) // 10 MB/s floor
}

// BenchmarkLoomToFileBuffered pairs loom -> file with and without buffer: {}
// (the embedded store, fsync every second or always) in one process, in
// alternating chunks, so the machine's load falls on both alike. One op is
// one message through each rig: published, routed, consumed, (stored,
// delivered from the sink's queue,) written to the file. ratio is the
// buffered rig's msgs/s over the unbuffered one's.
func BenchmarkLoomToFileBuffered(b *testing.B) {
	for _, c := range []struct{ size, sync string }{{"1KiB", "1s"}, {"1KiB", "always"}, {"1MiB", "1s"}} {
		b.Run(c.size+"/sync="+c.sync, func(b *testing.B) {
			size := 1 << 10
			if c.size == "1MiB" {
				size = 1 << 20
			}
			runBufferedPaired(b, benchPayload(size), c.sync)
		})
	}
}

func runBufferedPaired(b *testing.B, payload []byte, sync string) {
	plain := startLoomToFileBuffered(b, payload, "never", nil, "")
	defer plain.close()
	buffered := startLoomToFileBuffered(b, payload, "never", nil, sync)
	defer buffered.close()
	rigs := [2]*loomToFile{plain, buffered}
	chunk := max(1, min(tracingChunk, (64<<20)/len(payload)))
	for _, r := range rigs {
		r.run(benchMessages(chunk, payload))
	}
	msgs := [2][]*message.Message{benchMessages(b.N, payload), benchMessages(b.N, payload)}
	var cpu, wall [2]time.Duration
	b.SetBytes(2 * int64(len(payload)))
	b.ResetTimer()
	for i, from := 0, 0; from < b.N; i, from = i+1, from+chunk {
		to := min(from+chunk, b.N)
		for k := range 2 {
			v := k ^ i%2 // plain first, then buffered first, ...
			c0, t0 := cpuTime(b), time.Now()
			rigs[v].run(msgs[v][from:to])
			cpu[v] += cpuTime(b) - c0
			wall[v] += time.Since(t0)
		}
	}
	b.StopTimer()
	plain.check()
	buffered.check()
	perMsg := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(float64(b.N)/wall[0].Seconds(), "plain-msgs/s")
	b.ReportMetric(float64(b.N)/wall[1].Seconds(), "buffered-msgs/s")
	b.ReportMetric(perMsg(cpu[0]), "plain-cpu-ns/msg")
	b.ReportMetric(perMsg(cpu[1]), "buffered-cpu-ns/msg")
	b.ReportMetric(float64(wall[0])/float64(wall[1]), "ratio")
}
