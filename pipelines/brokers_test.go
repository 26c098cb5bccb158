package pipelines_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/internal/brokertest"
	"github.com/loombridge/loombridge/pipelines"
)

// End-to-end tests of the broker kinds against the brokers on this machine
// (.ci/services starts them): Loom -> broker and broker -> Loom through
// pipelines of one Engine, with an embedded Loom router, over one table of
// kinds (brokers) and one round-trip harness (startRoundTrip).

const (
	natsAddr   = "127.0.0.1:4222"
	rabbitAddr = "127.0.0.1:5672"
)

// needBroker fails the test when the broker's port does not answer: the
// brokers are part of the test environment (bash .ci/services starts them).
func needBroker(t testing.TB, name, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s is not answering on %s (%v): run bash .ci/services", name, addr, err)
	}
	c.Close()
}

// waitLong polls cond until it holds; the deadline only catches a hang.
func waitLong(t testing.TB, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", deadline, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mixedMessages makes n messages of mixed sizes: empty payloads, binary ones
// (not UTF-8), text up to 2 KiB and, every 500th, a 200 KiB binary one; each
// with a Loom key and metadata.
func mixedMessages(n int) []*message.Message {
	rnd := rand.New(rand.NewPCG(7, uint64(n)))
	out := make([]*message.Message, n)
	for i := range n {
		var p []byte
		switch {
		case i%500 == 7:
			p = make([]byte, 200<<10)
			for j := range p {
				p[j] = byte(rnd.UintN(256))
			}
			p[0] = 0xff
		case i%10 == 0:
			p = []byte{}
		case i%10 == 1:
			p = make([]byte, 1+rnd.IntN(4096))
			for j := range p {
				p[j] = byte(rnd.UintN(256))
			}
			p[0] = 0xfe // never valid UTF-8
		default:
			p = []byte(fmt.Sprintf("message %d %s", i, strings.Repeat("x", rnd.IntN(2048))))
		}
		m := message.NewMessage(uuid.NewString(), p)
		m.Metadata.Set("loom_key", "k"+strconv.Itoa(i%13))
		m.Metadata.Set("seq", strconv.Itoa(i))
		m.Metadata.Set("note", "héllo wörld")
		out[i] = m
	}
	return out
}

// writeInput writes msgs as the JSONL input of a file source: <dir>/<topic>.jsonl.
func writeInput(t testing.TB, dir, topic string, msgs []*message.Message) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		l, err := file.MarshalLine(m, "loom_key")
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(l)
	}
	if err := os.WriteFile(filepath.Join(dir, topic+".jsonl"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readMessages reads a file sink's JSONL output back into messages.
func readMessages(t testing.TB, path string) []*message.Message {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*message.Message
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		m, err := file.UnmarshalLine(sc.Bytes(), "loom_key")
		if err != nil {
			// The sink may be mid-line; the next read sees it whole.
			break
		}
		out = append(out, m)
	}
	return out
}

// countLines counts the complete lines of a file, cheaply.
func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// broker is one broker kind the tests and benchmarks run on, against the
// server .ci/services starts: its connection's keys, and its sink's and
// source's keys for a name of the test's own (a NATS subject and stream, a
// queue, a topic, a Redis stream, a table). The connection is named b.
type broker struct {
	name string
	// addr is where the server answers; "" where this machine runs none
	// (Kafka without KAFKA_BROKERS), and the kind's tests are skipped.
	addr   string
	conn   string
	sink   func(name string) string
	source func(name string) string
	// drop removes what a test created under name.
	drop func(t testing.TB, name string)
	// tooLarge is what a dead letter's reason says when a payload is over
	// the sink's max_message_bytes: 1000; "" where the limit counts more
	// than the payload (NATS: the server's max_payload, headers and all,
	// see TestNATSTooLargeGoesToDeadLetters; Kafka: the headers too).
	tooLarge string
}

// brokers is the one table of broker kinds: every round trip, the trace
// test and the broker benchmarks run over it.
func brokers() []broker {
	sqlBroker := func(driver, addr, dsn, sqlDriver string) broker {
		return broker{
			name:     driver,
			addr:     addr,
			conn:     fmt.Sprintf(`{type: sql, driver: %s, dsn: "%s"}`, driver, dsn),
			sink:     func(n string) string { return `{type: sql, connection: b, table: ` + n + `}` },
			source:   func(n string) string { return `{type: sql, connection: b, table: ` + n + `, poll_interval: 10ms}` },
			tooLarge: "max_message_bytes of 1000",
			drop: func(t testing.TB, prefix string) {
				db, err := sql.Open(sqlDriver, dsn)
				if err == nil {
					err = brokertest.DropTables(db, driver, prefix)
					db.Close()
				}
				if err != nil {
					t.Errorf("clean-up: %v", err)
				}
			},
		}
	}
	kafka := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	return []broker{
		{
			name: "nats",
			addr: natsAddr,
			conn: `{type: nats, url: "nats://` + natsAddr + `"}`,
			sink: func(n string) string { return `{type: nats, connection: b, subject: ` + n + `, stream: ` + n + `}` },
			source: func(n string) string {
				return `{type: nats, connection: b, subject: ` + n + `, stream: ` + n + `, durable: ` + n + `}`
			},
			drop: dropNATSStream,
		},
		{
			name:     "amqp",
			addr:     rabbitAddr,
			conn:     `{type: amqp, amqp_uri: "` + rabbitURI + `"}`,
			sink:     func(n string) string { return `{type: amqp, connection: b, queue: ` + n + `}` },
			source:   func(n string) string { return `{type: amqp, connection: b, queue: ` + n + `}` },
			drop:     dropRabbitQueue,
			tooLarge: "over the limit of 1000 bytes (the sink's max_message_bytes",
		},
		{
			name:     "redis",
			addr:     brokertest.RedisAddr,
			conn:     `{type: redis, addr: "` + brokertest.RedisAddr + `"}`,
			sink:     func(n string) string { return `{type: redis, connection: b, stream: ` + n + `}` },
			source:   func(n string) string { return `{type: redis, connection: b, stream: ` + n + `}` },
			tooLarge: "max_message_bytes of 1000",
			drop: func(t testing.TB, prefix string) {
				cl := redis.NewClient(&redis.Options{Addr: brokertest.RedisAddr})
				defer cl.Close()
				if err := brokertest.DropKeys(cl, prefix); err != nil {
					t.Errorf("clean-up: %v", err)
				}
			},
		},
		sqlBroker("postgres", "127.0.0.1:5432", brokertest.PostgresDSN, "pgx"),
		sqlBroker("mysql", "127.0.0.1:3306", brokertest.MySQLDSN, "mysql"),
		{
			// No Kafka runs on this machine: KAFKA_BROKERS (host:port,
			// comma-separated) names one to test against.
			name: "kafka",
			addr: kafka[0],
			conn: `{type: kafka, brokers: ["` + strings.Join(kafka, `","`) + `"]}`,
			sink: func(n string) string { return `{type: kafka, connection: b, topic: ` + n + `}` },
			source: func(n string) string {
				return `{type: kafka, connection: b, topic: ` + n + `, consumer_group: ` + n + `}`
			},
			drop: func(testing.TB, string) {}, // topics stay, each test has its own
		},
	}
}

// brokerKind is the table's entry for one kind.
func brokerKind(t testing.TB, name string) broker {
	for _, b := range brokers() {
		if b.name == name {
			return b
		}
	}
	t.Fatalf("no broker kind %s in the table", name)
	return broker{}
}

// prepare fails the test when the broker does not answer: the servers are
// part of the test environment (bash .ci/services starts them); a kind whose
// server this machine does not run (Kafka) is skipped instead. It returns a
// stream, queue, topic or table name of the test's own, dropped at its end.
func (b broker) prepare(t testing.TB) string {
	t.Helper()
	if b.addr == "" {
		t.Skipf("no %s server to test against (for Kafka, set KAFKA_BROKERS)", b.name)
	}
	needBroker(t, b.name, b.addr)
	name := "lbt" + strings.ToLower(watermill.NewShortUUID()[:8])
	t.Cleanup(func() { b.drop(t, name) })
	return name
}

// roundTripConfig is Loom room rt_in -> broker sink -> broker -> broker
// source -> Loom room rt_out -> file: both directions of a broker hop,
// through pipelines of one Engine on an embedded Loom router, with format:
// envelope on the Loom sink so UUID and metadata cross the Loom hop. The
// retries ride out a broker restart (the restart tests); a message the sink
// gave up on goes to the dead letters, which check counts as a failure. The
// test feeds rt_in itself (publishToRoom): a file source hands out one line
// at a time and waits for its ack, which made the feed, not the broker, the
// slowest hop (about 40 msg/s on a loaded 2-core machine).
const roundTripConfig = `
log: {stats_interval: 0}
shutdown_timeout: 2m
connections:
  local: {embedded: true}
  b: @CONN@
pipelines:
  to_broker:
    from: {type: loom, connection: local, room: rt_in, consumers: 4}
    to: {b: @SINK@}
    retry: {max_retries: 1000, initial_interval: 50ms, max_interval: 1s}
    dead_letter: {type: file, dir: @OUT@, topic: dead}
  from_broker:
    from: @SOURCE@
    to: {room: {type: loom, connection: local, room: rt_out, format: envelope}}
    retry: {max_retries: 1000, initial_interval: 50ms, max_interval: 1s}
  drain:
    from: {type: loom, connection: local, room: rt_out, consumers: 4}
    to: {f: {type: file, dir: @OUT@, topic: out, fsync: never}}
`

// roundTrip is one run of roundTripConfig on one broker kind: the one
// harness of the round-trip and restart tests.
type roundTrip struct {
	t        *testing.T
	b        broker
	msgs     []*message.Message
	out      string
	engine   *pipelines.Engine
	fed      chan struct{} // closed when every message was published to rt_in
	start    time.Time
	duration time.Duration
}

// startRoundTrip starts the engine on a stream, queue, topic or table of the
// test's own (dropped at the end) and feeds rt_in in the background, so that
// a test can restart the broker meanwhile.
func startRoundTrip(t *testing.T, b broker, msgs []*message.Message) *roundTrip {
	name := b.prepare(t) // dropped last: after the engine closed
	rt := &roundTrip{t: t, b: b, msgs: msgs, out: filepath.Join(t.TempDir(), "out"), fed: make(chan struct{})}
	cfg := parse(t, fill(roundTripConfig, "@CONN@", b.conn, "@SINK@", b.sink(name), "@SOURCE@", b.source(name), "@OUT@", rt.out))
	rt.start = time.Now()
	rt.engine = startEngine(t, cfg)
	go func() {
		defer close(rt.fed)
		publishToRoom(t, rt.engine, "rt_in", msgs)
	}()
	t.Cleanup(func() { <-rt.fed })
	return rt
}

func (rt *roundTrip) outPath() string { return filepath.Join(rt.out, "out.jsonl") }

// wait waits until every message is out, distinct by UUID, and counted by
// the drain.
func (rt *roundTrip) wait() {
	t := rt.t
	n := len(rt.msgs)
	// Measured on the 2-core machine: 10,000 messages took 30 s (Redis), 45 s
	// (PostgreSQL) and 85 s (MariaDB) without -race; 1,000 took 10 to 30 s
	// under -race and up to 4 minutes with both cores kept busy. The deadline
	// only catches a hang.
	waitLong(t, fmt.Sprintf("%d messages through %s and back", n, rt.b.name), 15*time.Minute, func() bool {
		select {
		case <-rt.fed:
			if t.Failed() {
				t.FailNow() // the feed failed: what it did not publish never comes
			}
		default:
		}
		if countLines(rt.outPath()) < n {
			return false
		}
		seen := map[string]bool{}
		for _, m := range readMessages(t, rt.outPath()) {
			seen[m.UUID] = true
		}
		return len(seen) >= n
	})
	rt.duration = time.Since(rt.start)
	waitFor(t, "the counts", func() bool { return rt.engine.Stats()["drain"].Done >= uint64(n) })
}

// check compares what came out with what went in: every message, once or
// more; payload byte for byte, key and metadata; no dead letters. It
// returns the duplicates.
func (rt *roundTrip) check() (dups int) {
	t := rt.t
	got := map[string][]*message.Message{}
	for _, m := range readMessages(t, rt.outPath()) {
		got[m.UUID] = append(got[m.UUID], m)
	}
	bad := 0
	for _, want := range rt.msgs {
		copies := got[want.UUID]
		if len(copies) == 0 {
			t.Errorf("message %s (seq %s) lost", want.UUID, want.Metadata["seq"])
			bad++
			continue
		}
		dups += len(copies) - 1
		for _, m := range copies {
			if !bytes.Equal(m.Payload, want.Payload) {
				t.Errorf("message %s: payload of %d bytes, want %d bytes as sent", want.UUID, len(m.Payload), len(want.Payload))
				bad++
			}
			for k, v := range want.Metadata {
				if m.Metadata[k] != v {
					t.Errorf("message %s: metadata %s = %q, want %q (all: %v)", want.UUID, k, m.Metadata[k], v, m.Metadata)
					bad++
				}
			}
		}
		if bad > 20 {
			t.Fatal("too many differences")
		}
	}
	if len(got) != len(rt.msgs) {
		t.Errorf("%d distinct messages out, want %d", len(got), len(rt.msgs))
	}
	if dead := countLines(filepath.Join(rt.out, "dead.jsonl")); dead != 0 {
		t.Errorf("%d dead letters, want none", dead)
	}
	return dups
}

// For each broker kind, 10,000 messages of mixed sizes (empty, binary, up
// to 200 KiB) go Loom -> broker -> Loom -> file: every message arrives
// once, with its bytes, UUID, Loom key and metadata. Under -race each Loom
// hop costs several times the CPU: -race runs 1,000 messages, and .ci/run
// runs the test again without -race at 10,000.
func TestBrokersRoundTrip(t *testing.T) {
	n := 10000
	if raceEnabled {
		n = 1000
	}
	msgs := mixedMessages(n)
	for _, b := range brokers() {
		t.Run(b.name, func(t *testing.T) {
			rt := startRoundTrip(t, b, msgs)
			rt.wait()
			closeEngine(t, rt.engine)
			dups := rt.check()
			st := rt.engine.Stats()
			t.Logf("%d messages loom -> %s -> loom in %s (%.0f msg/s end to end), %d duplicates; to_broker %+v from_broker %+v",
				n, b.name, rt.duration.Round(time.Millisecond), float64(n)/rt.duration.Seconds(), dups, st["to_broker"], st["from_broker"])
			if dups != 0 {
				t.Errorf("%d duplicates without any failure", dups)
			}
		})
	}
}

// publishToRoom publishes msgs to a room of the engine's embedded router
// "local", in the envelope format (UUID and metadata cross), once the
// room's pipeline has its consumer streams.
func publishToRoom(t testing.TB, e *pipelines.Engine, room string, msgs []*message.Message) {
	t.Helper()
	srv, ok := e.EmbeddedServer("local")
	if !ok {
		t.Fatal("no embedded router")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.WaitConsumers(ctx, room, 1); err != nil {
		t.Fatalf("consumer streams: %v", err)
	}
	// Confirm mode: a Publish returns once a consumer took the message, or
	// fails; 16 at once keep the room busy.
	pub, err := loom.NewPublisher(loom.PublisherConfig{
		Client:  client.Config{Addr: srv.Addr(), TLSClientConfig: srv.ClientTLS()},
		Format:  loom.FormatEnvelope,
		Streams: 4,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	next := make(chan *message.Message)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range next {
				if err := pub.Publish(room, m); err != nil {
					t.Errorf("publish %s: %v", m.UUID, err)
				}
			}
		}()
	}
	for _, m := range msgs {
		next <- m
	}
	close(next)
	wg.Wait()
}

// restartService stops and starts a broker by the machine's own commands,
// and waits until its port answers again.
func restartService(t *testing.T, name, addr string, stop, start []string, down time.Duration) {
	t.Helper()
	t.Logf("%s: stopping (%s)", name, strings.Join(stop, " "))
	if out, err := exec.Command(stop[0], stop[1:]...).CombinedOutput(); err != nil {
		t.Errorf("%s: stop: %v: %s", name, err, out)
	}
	time.Sleep(down)
	t.Logf("%s: starting (%s)", name, strings.Join(start, " "))
	if out, err := exec.Command(start[0], start[1:]...).CombinedOutput(); err != nil {
		t.Errorf("%s: start: %v: %s", name, err, out)
	}
	waitService(t, name, addr)
}

// waitService waits until a service's port answers.
func waitService(t testing.TB, name, addr string) {
	end := time.Now().Add(5 * time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Errorf("%s: still not answering on %s: %v", name, addr, err)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// suffix makes names unique to one test run.
func suffix() string { return strings.ReplaceAll(uuid.NewString()[:8], "-", "") }

func dialQuick(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }

func execCombined(args ...string) ([]byte, error) {
	return exec.Command(args[0], args[1:]...).CombinedOutput()
}

// A message over a broker sink's limit fails with an error naming the limit,
// goes whole to the dead letters, and the broker gets the others intact.
func TestBrokerSinkRefusesTooLarge(t *testing.T) {
	for _, b := range brokers() {
		t.Run(b.name, func(t *testing.T) {
			if b.tooLarge == "" {
				t.Skipf("%s: its limit counts more than the payload", b.name)
			}
			name := b.prepare(t)
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
			if err := os.MkdirAll(in, 0o755); err != nil {
				t.Fatal(err)
			}
			sizes := []int{0, 999, 1000, 1001, 5000, 10}
			var msgs []*message.Message
			for i, s := range sizes {
				m := message.NewMessage(watermill.NewUUID(), bytes.Repeat([]byte{byte(i), 0xff}, s)[:s])
				m.Metadata.Set("loom_key", "k")
				msgs = append(msgs, m)
			}
			writeInput(t, in, "src", msgs)
			sink := strings.TrimSuffix(b.sink(name), "}") + ", max_message_bytes: 1000}"
			cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  b: @CONN@
pipelines:
  to_broker:
    from: {type: file, dir: @IN@, topic: src}
    to: {b: @SINK@}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
    dead_letter: {type: file, dir: @OUT@, topic: dead}
  from_broker:
    from: @SOURCE@
    to: {f: {type: file, dir: @OUT@, topic: out, fsync: never}}
`, "@CONN@", b.conn, "@SINK@", sink, "@SOURCE@", b.source(name), "@IN@", in, "@OUT@", out))
			e := startEngine(t, cfg)
			waitFor(t, "the small ones through, the large ones dead", func() bool {
				return countLines(filepath.Join(out, "out.jsonl")) >= 4 && countLines(filepath.Join(out, "dead.jsonl")) >= 2
			})
			closeEngine(t, e)
			dead := readMessages(t, filepath.Join(out, "dead.jsonl"))
			for _, d := range dead {
				reason := d.Metadata.Get("reason_poisoned")
				if !strings.Contains(reason, b.tooLarge) {
					t.Errorf("dead letter %s: reason %q does not name the limit", d.UUID, reason)
				}
				if len(d.Payload) <= 1000 {
					t.Errorf("dead letter %s of %d bytes: not over the limit", d.UUID, len(d.Payload))
				}
			}
			want := map[string][]byte{}
			for _, m := range msgs {
				if len(m.Payload) <= 1000 {
					want[m.UUID] = m.Payload
				}
			}
			got := readMessages(t, filepath.Join(out, "out.jsonl"))
			if len(got) != len(want) || len(dead) != len(msgs)-len(want) {
				t.Errorf("%d through and %d dead, want %d and %d", len(got), len(dead), len(want), len(msgs)-len(want))
			}
			for _, m := range got {
				if !bytes.Equal(m.Payload, want[m.UUID]) {
					t.Errorf("message %s: %d bytes, want %d", m.UUID, len(m.Payload), len(want[m.UUID]))
				}
			}
		})
	}
}
