package pipelines_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/pipelines/kinds"
)

// Broker benchmarks at 1 KiB, on the servers .ci/services starts. One op is
// one message. BenchmarkBrokerPublish is the adapter's own Publish rate (the
// kind's publisher, one message per call, as a pipeline's sink calls it);
// BenchmarkLoomToBroker is a pipeline from a Loom room to the broker;
// BenchmarkBrokerToLoom a pipeline from the broker, filled beforehand, to a
// Loom room (envelope) drained by a second pipeline.

func BenchmarkBrokerPublish(b *testing.B) {
	payload := benchPayload(1 << 10)
	for _, br := range brokers() {
		b.Run(br.name, func(b *testing.B) {
			name := uniqueName(b)
			b.Cleanup(func() { br.drop(b, name) })
			pub := brokerPublisher(b, br, name)
			defer pub.Close()
			msgs := benchMessages(b.N, payload)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for _, m := range msgs {
				if err := pub.Publish(name, m); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// brokerPublisher is the publisher the broker's sink kind builds from a
// parsed configuration.
func brokerPublisher(b *testing.B, br broker, name string) message.Publisher {
	cfg := parse(b, fill(`
connections:
  b: @CONN@
pipelines:
  p:
    from: {type: generate}
    to: {b: @SINK@}
`, "@CONN@", br.conn, "@SINK@", br.sink(name)))
	var pub message.Publisher
	var err error
	switch sink := cfg.Pipelines["p"].To["b"].Sink.(type) {
	case *kinds.RedisSink:
		pub, err = sink.NewPublisherWith(cfg.Connections["b"].Broker.(*kinds.RedisConnection), nil)
	case *kinds.SQLSink:
		pub, err = sink.NewPublisherWith(context.Background(), cfg.Connections["b"].Broker.(*kinds.SQLConnection), nil)
	default:
		b.Fatalf("sink %T", sink)
	}
	if err != nil {
		b.Fatal(err)
	}
	return pub
}

func BenchmarkLoomToBroker(b *testing.B) {
	payload := benchPayload(1 << 10)
	for _, br := range brokers() {
		b.Run(br.name, func(b *testing.B) {
			name := uniqueName(b)
			b.Cleanup(func() { br.drop(b, name) })
			cfg := parse(b, fill(`
log: {stats_interval: 0, level: warn}
connections:
  local: {embedded: true}
  b: @CONN@
pipelines:
  to_broker:
    from: {type: loom, connection: local, room: r1, consumers: 4}
    to: {b: @SINK@}
`, "@CONN@", br.conn, "@SINK@", br.sink(name)))
			e := startEngine(b, cfg)
			msgs := benchMessages(b.N, payload)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			publishToRoom(b, e, "r1", msgs)
			pollUntil(b, func() uint64 { return e.Stats()["to_broker"].Done }, uint64(b.N), benchWait(b.N, len(payload))+time.Minute)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func BenchmarkBrokerToLoom(b *testing.B) {
	payload := benchPayload(1 << 10)
	for _, br := range brokers() {
		b.Run(br.name, func(b *testing.B) {
			name := uniqueName(b)
			b.Cleanup(func() { br.drop(b, name) })
			pub := brokerPublisher(b, br, name)
			for _, m := range benchMessages(b.N, payload) {
				if err := pub.Publish(name, m); err != nil {
					b.Fatal(err)
				}
			}
			_ = pub.Close()
			cfg := parse(b, fill(`
log: {stats_interval: 0, level: warn}
connections:
  local: {embedded: true}
  b: @CONN@
pipelines:
  from_broker:
    from: @SOURCE@
    to: {room: {type: loom, connection: local, room: r2, format: envelope, mode: fire_and_forget}}
  drain:
    from: {type: loom, connection: local, room: r2, consumers: 4}
    to: {out: {type: file, dir: @DIR@, fsync: never}}
`, "@CONN@", br.conn, "@SOURCE@", br.source(name), "@DIR@", b.TempDir()))
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			e := startEngine(b, cfg)
			pollUntil(b, func() uint64 { return e.Stats()["drain"].Done }, uint64(b.N), benchWait(b.N, len(payload))+time.Minute)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
