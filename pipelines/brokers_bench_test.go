package pipelines_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// TestBrokerThroughput measures, at 1 KiB, loom -> broker and broker -> loom
// through pipelines, beside the broker adapter's own publish rate (the sink
// the kind builds, called directly, one message at a time from 16
// goroutines) in the same run. Figures go to BENCHMARKS.md. Run with
//
//	LOOMBRIDGE_BENCH=1 go test -count=1 -run TestBrokerThroughput -v ./pipelines/
func TestBrokerThroughput(t *testing.T) {
	if os.Getenv("LOOMBRIDGE_BENCH") == "" {
		t.Skip("set LOOMBRIDGE_BENCH=1 to measure")
	}
	const n = 5000
	msgs := make([]*message.Message, n)
	for i := range msgs {
		p := make([]byte, 1024)
		for j := range p {
			p[j] = 'a' + byte((i+j)%26)
		}
		msgs[i] = message.NewMessage(uuid.NewString(), p)
		msgs[i].Metadata.Set("loom_key", "k"+strconv.Itoa(i%13))
	}
	for _, b := range []struct{ name, conn, to, from string }{
		{"nats", `{type: nats, url: "nats://` + natsAddr + `"}`, `{type: nats, connection: broker, subject: lbbench.@S@, stream: LBBENCH_@S@}`, `{type: nats, connection: broker, subject: lbbench.@S@, stream: LBBENCH_@S@, durable: b_@S@}`},
		{"amqp", `{type: amqp, amqp_uri: "` + rabbitURI + `"}`, `{type: amqp, connection: broker, queue: lbbench_@S@}`, `{type: amqp, connection: broker, queue: lbbench_@S@}`},
	} {
		t.Run(b.name, func(t *testing.T) {
			s := suffix()
			if b.name == "nats" {
				natsStream(t, "LBBENCH_"+s)
				natsStream(t, "LBBENCH_DIRECT_"+s)
			} else {
				rabbitQueue(t, "lbbench_"+s)
				rabbitQueue(t, "lbbench_direct_"+s)
			}
			rt := startRoundTrip(t, msgs, b.conn, fill(b.to, "@S@", s), fill(b.from, "@S@", s))
			var toAt, fromAt time.Duration
			waitLong(t, "the run", 15*time.Minute, func() bool {
				st := rt.engine.Stats()
				if toAt == 0 && st["to_broker"].Done >= n {
					toAt = time.Since(rt.start)
				}
				if fromAt == 0 && st["from_broker"].Done >= n {
					fromAt = time.Since(rt.start)
				}
				return toAt > 0 && fromAt > 0
			})
			// The broker's own publish rate, through the sink the kind builds.
			cfg := parse(t, fill(roundTripConfig, "@CONN@", b.conn, "@TO@", fill(b.to, "@S@", "DIRECT_"+s, "lbbench_", "lbbench_direct_"), "@FROM@", fill(b.from, "@S@", s), "@IN@", t.TempDir(), "@OUT@", t.TempDir()))
			d := cfg.DepsFor("direct", watermill.NopLogger{})
			sink := cfg.Pipelines["to_broker"].To["broker"].Sink
			pub, err := sink.NewPublisher(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			work := make(chan *message.Message)
			done := make(chan error, 16)
			for range 16 {
				go func() {
					for m := range work {
						if err := pub.Publish(sink.Topic(), m.Copy()); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
			}
			for _, m := range msgs {
				work <- m
			}
			close(work)
			for range 16 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			direct := time.Since(start)
			_ = pub.Close()
			t.Logf("BENCH %s 1KiB n=%d: loom->%s %.0f msg/s (to_broker done at %s); %s->loom %.0f msg/s (from_broker done at %s); adapter publish alone %.0f msg/s",
				b.name, n, b.name, float64(n)/toAt.Seconds(), toAt.Round(time.Millisecond), b.name, float64(n)/fromAt.Seconds(), fromAt.Round(time.Millisecond), float64(n)/direct.Seconds())
			fmt.Fprint(os.Stderr)
		})
	}
}
