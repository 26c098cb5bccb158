package pipelines_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Broker benchmarks at 1 KiB over the table of broker kinds (brokers), on
// the servers .ci/services starts. One op is one message.
// BenchmarkBrokerPublish is the adapter's own Publish rate (the kind's
// publisher, one message per call, as a pipeline's sink calls it);
// BenchmarkBrokerPublishConcurrent the same from 16 goroutines;
// BenchmarkLoomToBroker is a pipeline from a Loom room to the broker;
// BenchmarkBrokerToLoom a pipeline from the broker, filled beforehand, to a
// Loom room (envelope) drained by a second pipeline.

func BenchmarkBrokerPublish(b *testing.B) { benchBrokerPublish(b, 1) }

// BenchmarkBrokerPublishConcurrent publishes from 16 goroutines at once, as
// a pipeline calls its sink for several messages at once: a NATS sink (a
// synchronous JetStream publish) and an AMQP one (publisher confirms) wait a
// round trip per call, so one call at a time says little of what they take.
func BenchmarkBrokerPublishConcurrent(b *testing.B) { benchBrokerPublish(b, 16) }

func benchBrokerPublish(b *testing.B, workers int) {
	payload := benchPayload(1 << 10)
	for _, br := range brokers() {
		b.Run(br.name, func(b *testing.B) {
			name := br.prepare(b)
			pub, topic := brokerPublisher(b, br, name)
			defer pub.Close()
			work := make(chan *message.Message)
			failed := make(chan error, workers)
			for range workers {
				go func() {
					var err error
					for m := range work {
						if err == nil { // after a failure, only drain: the others finish
							err = pub.Publish(topic, m)
						}
					}
					failed <- err
				}()
			}
			msgs := benchMessages(b.N, payload)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for _, m := range msgs {
				work <- m
			}
			close(work)
			for range workers {
				if err := <-failed; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// brokerPublisher is the publisher the broker's sink kind builds from a
// parsed configuration, and the topic it publishes to.
func brokerPublisher(b *testing.B, br broker, name string) (message.Publisher, string) {
	cfg := parse(b, fill(`
connections:
  b: @CONN@
pipelines:
  p:
    from: {type: generate}
    to: {b: @SINK@}
`, "@CONN@", br.conn, "@SINK@", br.sink(name)))
	sink := cfg.Pipelines["p"].To["b"].Sink
	pub, err := sink.NewPublisher(context.Background(), cfg.DepsFor("p", watermill.NopLogger{}))
	if err != nil {
		b.Fatal(err)
	}
	return pub, sink.Topic()
}

func BenchmarkLoomToBroker(b *testing.B) {
	payload := benchPayload(1 << 10)
	for _, br := range brokers() {
		b.Run(br.name, func(b *testing.B) {
			name := br.prepare(b)
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
			name := br.prepare(b)
			pub, topic := brokerPublisher(b, br, name)
			for _, m := range benchMessages(b.N, payload) {
				if err := pub.Publish(topic, m); err != nil {
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
