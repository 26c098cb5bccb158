package kinds_test

// Watermill's universal Pub/Sub suite (github.com/ThreeDotsLabs/watermill/pubsub/tests)
// over the Publishers and Subscribers the nats and amqp kinds build, through
// their own Check (defaults) and constructors, against the brokers on this
// machine. The suite uses a new topic per test; a topic is mapped as a
// pipeline would map it: one sink and one source per topic, the topic as
// subject and stream (NATS) or queue (AMQP), the durable named after the
// consumer group and the topic. The suite makes several subscribers with one
// durable, one after another and at once (TestContinueAfterErrors,
// TestConcurrentClose), as loombridge instances sharing a durable do: the
// nats source creates the durable consumer itself and binds to it, so that
// no subscriber's Close deletes it under the others (see ensureConsumer). Under -race the suite runs short
// (Features.ForceShort): its full counts take minutes on a loaded 2-core
// machine and add nothing the race detector needs.

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

const suiteConnections = `
connections:
  bus: {type: nats, url: "nats://127.0.0.1:4222"}
  rabbit: {type: amqp, amqp_uri: "amqp://guest:guest@127.0.0.1:5672/"}
pipelines:
  suite:
    from: {type: nats, connection: bus, subject: unused}
    to:
      s: {type: amqp, connection: rabbit, queue: unused}
`

func needPort(t *testing.T, name, addr string) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s is not answering on %s (%v): run bash .ci/services", name, addr, err)
	}
	c.Close()
}

// perTopicPub makes one sink per topic, the first time the topic is published to.
type perTopicPub struct {
	mu   sync.Mutex
	pubs map[string]message.Publisher
	mk   func(topic string) (message.Publisher, error)
}

func (p *perTopicPub) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	pub, ok := p.pubs[topic]
	if !ok {
		var err error
		if pub, err = p.mk(topic); err != nil {
			p.mu.Unlock()
			return err
		}
		p.pubs[topic] = pub
	}
	p.mu.Unlock()
	return pub.Publish(topic, msgs...)
}

func (p *perTopicPub) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pub := range p.pubs {
		_ = pub.Close()
	}
	p.pubs = map[string]message.Publisher{}
	return nil
}

// perTopicSub makes one source per Subscribe.
type perTopicSub struct {
	mu   sync.Mutex
	subs []message.Subscriber
	mk   func(topic string) (message.Subscriber, error)
}

func (s *perTopicSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	sub, err := s.mk(topic)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	return sub.Subscribe(ctx, topic)
}

func (s *perTopicSub) Close() error {
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = sub.Close() }()
	}
	wg.Wait()
	return nil
}

func suiteDeps(t *testing.T) pipelines.Deps {
	cfg, err := pipelines.Parse([]byte(suiteConnections), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.DepsFor("suite", watermill.NopLogger{})
}

func TestNATSUniversalSuite(t *testing.T) {
	needPort(t, "nats", "127.0.0.1:4222")
	d := suiteDeps(t)
	prefix := "lbsuite_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "_"
	t.Cleanup(func() { deleteStreams(t, prefix) })
	newPubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub := &perTopicPub{pubs: map[string]message.Publisher{}, mk: func(topic string) (message.Publisher, error) {
			c := &kinds.NATSSink{Connection: "bus", Subject: topic, Stream: topic}
			if err := c.Check(d); err != nil {
				return nil, err
			}
			return c.NewPublisher(context.Background(), d)
		}}
		sub := &perTopicSub{mk: func(topic string) (message.Subscriber, error) {
			// close_timeout 2s, not the default 30s: after a Subscribe ends,
			// the source still takes the ack of a message handed over
			// (so that handlers finishing while a pipeline stops are acked)
			// for close_timeout; TestMessageCtx closes with a message it
			// never acks, and goleak ends the run before 30 s.
			c := &kinds.NATSSource{Connection: "bus", Subject: topic, Stream: topic, Durable: group + "_" + topic, CloseTimeout: 2 * time.Second}
			if err := c.Check(d); err != nil {
				return nil, err
			}
			return c.NewSubscriber(context.Background(), d)
		}}
		return pub, sub
	}
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false,
		// subscribers_count (16 by default) deliver at once: no order.
		GuaranteedOrder:                     false,
		GuaranteedOrderWithSingleSubscriber: false,
		Persistent:                          true,
		GenerateTopicFunc:                   func(tests.TestContext) string { return prefix + strings.ReplaceAll(uuid.NewString(), "-", "") },
		ForceShort:                          raceEnabled,
	},
		func(t *testing.T) (message.Publisher, message.Subscriber) { return newPubSub(t, "d") },
		newPubSub,
	)
}

func deleteStreams(t *testing.T, prefix string) {
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return
	}
	for name := range js.StreamNames() {
		if strings.HasPrefix(name, prefix) {
			_ = js.DeleteStream(name)
		}
	}
}

func TestAMQPUniversalSuite(t *testing.T) {
	needPort(t, "rabbitmq", "127.0.0.1:5672")
	d := suiteDeps(t)
	prefix := "lbsuite_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "_"
	var mu sync.Mutex
	var queues []string
	t.Cleanup(func() { deleteQueues(t, queues) })
	newPubSub := func(t *testing.T) (message.Publisher, message.Subscriber) {
		pub := &perTopicPub{pubs: map[string]message.Publisher{}, mk: func(topic string) (message.Publisher, error) {
			mu.Lock()
			queues = append(queues, topic)
			mu.Unlock()
			c := &kinds.AMQPSink{Connection: "rabbit", AMQPTopology: kinds.AMQPTopology{Queue: topic}}
			if err := c.Check(d); err != nil {
				return nil, err
			}
			return c.NewPublisher(context.Background(), d)
		}}
		sub := &perTopicSub{mk: func(topic string) (message.Subscriber, error) {
			c := &kinds.AMQPSource{Connection: "rabbit", AMQPTopology: kinds.AMQPTopology{Queue: topic}}
			if err := c.Check(d); err != nil {
				return nil, err
			}
			return c.NewSubscriber(context.Background(), d)
		}}
		return pub, sub
	}
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:      false, // a queue is one group; groups would be one queue each, bound to an exchange
		ExactlyOnceDelivery: false,
		// consumers (16 by default) deliver at once: no order.
		GuaranteedOrder:                     false,
		GuaranteedOrderWithSingleSubscriber: false,
		Persistent:                          true,
		GenerateTopicFunc:                   func(tests.TestContext) string { return prefix + uuid.NewString() },
		ForceShort:                          raceEnabled,
	}, newPubSub, nil)
}

func deleteQueues(t *testing.T, queues []string) {
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		ch.Close()
	}
}
