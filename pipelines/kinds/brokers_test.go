package kinds_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

func parseErr(t *testing.T, yaml string) string {
	t.Helper()
	_, err := pipelines.Parse([]byte(yaml), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err == nil {
		t.Fatalf("no error for:\n%s", yaml)
	}
	return err.Error()
}

func parseOK(t *testing.T, yaml string) *pipelines.Config {
	t.Helper()
	cfg, err := pipelines.Parse([]byte(yaml), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, yaml)
	}
	return cfg
}

func wantAll(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("error does not contain %q:\n%s", w, got)
		}
	}
}

// Every problem of a broker kind is reported at its key.
func TestBrokerKindsCheck(t *testing.T) {
	dir := t.TempDir()
	got := parseErr(t, fmt.Sprintf(`
connections:
  bus: {type: nats, url: "http://x", token: a, token_file: %[1]s/t}
  rabbit: {type: amqp, amqp_uri: "amqp://127.0.0.1/", password_file: %[1]s/missing}
  events: {type: kafka}
  local: {embedded: true}
pipelines:
  n:
    from: {type: nats, connection: bus, stream: "a.b", durable: "x.y", subscribers_count: -1}
    to:
      s: {type: nats, connection: rabbit, subject: "a.*"}
  a:
    from: {type: amqp, connection: rabbit, prefetch_count: -1, exchange_type: odd}
    to:
      s: {type: amqp, connection: local, queue: q, routing_key: other}
  k:
    from: {type: kafka, connection: events, topic: "bad topic", initial_offset: middle}
    to:
      s: {type: kafka, topic: t}
`, dir))
	wantAll(t, got,
		"connections.bus.url: want nats://",
		"connections.bus.token, connections.bus.token_file: set one, not both",
		"connections.rabbit.password_file: open "+dir+"/missing",
		"connections.events.brokers: must list at least one",
		"pipelines.n.from.subject: must be set",
		"pipelines.n.from.stream: \"a.b\" may hold only",
		"pipelines.n.from.durable: \"x.y\"",
		"pipelines.n.from.subscribers_count: must be at least 1",
		"pipelines.n.to.s.connection: connection \"rabbit\" is of type amqp, not nats",
		"pipelines.n.to.s.subject: \"a.*\" has a wildcard",
		"pipelines.a.from.queue: must be set",
		"pipelines.a.from.prefetch_count: must be at least 1",
		"pipelines.a.from.exchange_type: direct, fanout, topic or headers",
		"pipelines.a.to.s.connection: connection \"local\" is of type loom, not amqp",
		"pipelines.a.to.s.routing_key: the default exchange routes by queue name",
		"pipelines.k.from.topic: \"bad topic\" is not a Kafka topic",
		"pipelines.k.from.initial_offset: oldest or newest",
		"pipelines.k.to.s.connection: must name a connection",
	)
	if strings.Contains(got, "connections.bus.token:") && strings.Contains(got, " a ") {
		t.Errorf("the token shows in the error:\n%s", got)
	}
}

// Secrets read from files are used, and printing a connection never shows them.
func TestBrokerSecretsNotShown(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("  hunter2-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parseOK(t, fmt.Sprintf(`
connections:
  bus: {type: nats, user: u, password: hunter2-inline}
  rabbit: {type: amqp, user: u, password_file: %s}
  events: {type: kafka, brokers: ["127.0.0.1:9092"], sasl: {mechanism: PLAIN, user: u, password: hunter2-kafka}}
pipelines:
  n:
    from: {type: nats, connection: bus, subject: a.b}
    to:
      s: {type: amqp, connection: rabbit, queue: q}
      k: {type: kafka, connection: events, topic: t}
`, pw))
	for name, c := range cfg.Connections {
		for _, verb := range []string{"%v", "%+v", "%#v"} {
			if s := fmt.Sprintf(verb, c.Broker); strings.Contains(s, "hunter2") {
				t.Errorf("connection %s printed with %s shows a secret: %s", name, verb, s)
			}
		}
	}
	src := cfg.Pipelines["n"].From.Source.(*kinds.NATSSource)
	if src.Stream != "a_b" || src.Durable != "loombridge_n" || src.SubscribersCount != kinds.DefaultNATSSubscribers {
		t.Errorf("nats source defaults: %+v", src)
	}
	sink := cfg.Pipelines["n"].To["s"].Sink.(*kinds.AMQPSink)
	if !*sink.Confirm || sink.RoutingKey != "q" || sink.ChannelPoolSize != kinds.DefaultAMQPChannelPool {
		t.Errorf("amqp sink defaults: %+v", sink)
	}
}

// sarama dials Kafka when the publisher is made: a broker that is not there
// fails the pipeline's start with an error naming the pipeline, the sink and
// the brokers, and does not hang.
func TestKafkaDownBrokerFailsStart(t *testing.T) {
	cfg := parseOK(t, `
log: {stats_interval: 0}
connections:
  events: {type: kafka, brokers: ["127.0.0.1:1"], dial_timeout: 2s}
pipelines:
  kp:
    from: {type: generate, count: 1}
    to:
      k: {type: kafka, connection: events, topic: t}
`)
	e := pipelines.NewEngine(pipelines.EngineOptions{})
	done := make(chan error, 1)
	go func() { done <- e.Start(context.Background(), cfg) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("Start hangs on a Kafka broker that is down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = e.Close(ctx)
	if err == nil {
		t.Fatal("Start succeeded without a Kafka broker")
	}
	wantAll(t, err.Error(), "pipeline kp", "to.k", "kafka", "127.0.0.1:1")
	t.Logf("error: %v", err)
}

// A password written into a broker URL never shows in an error: not in a
// check's error, not when the server cannot be reached.
func TestBrokerURLPasswordNotShown(t *testing.T) {
	if got := parseErr(t, `
connections:
  bus: {type: nats, url: "http://u:hunter2-url@127.0.0.1:4222"}
pipelines:
  n: {from: {type: nats, connection: bus, subject: a}, to: {o: {type: stdout}}}
`); strings.Contains(got, "hunter2") || !strings.Contains(got, "url:") {
		t.Errorf("check error shows the password or not the key: %s", got)
	}
	for _, c := range []struct{ kind, conn, sink string }{
		{"nats", `{type: nats, url: "nats://u:hunter2-url@127.0.0.1:1,nats://v:hunter2-two@127.0.0.1:2", timeout: 1s, max_reconnects: 0}`,
			`{type: nats, connection: b, subject: a}`},
		{"amqp", `{type: amqp, amqp_uri: "amqp://u:hunter2-url@127.0.0.1:1/"}`, `{type: amqp, connection: b, queue: q}`},
	} {
		kind, conn, sink := c.kind, c.conn, c.sink
		cfg := parseOK(t, `
log: {stats_interval: 0}
connections:
  b: `+conn+`
pipelines:
  p:
    from: {type: generate, count: 1}
    to: {s: `+sink+`}
`)
		e := pipelines.NewEngine(pipelines.EngineOptions{})
		err := e.Start(context.Background(), cfg)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = e.Close(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s: Start succeeded with no server", kind)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", kind, err)
		}
		t.Logf("%s: %v", kind, err)
	}
}
