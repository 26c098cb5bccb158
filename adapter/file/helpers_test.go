package file

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// capturePub is a dead-letter publisher that records what it gets.
type capturePub struct {
	mu     sync.Mutex
	topics []string
	msgs   []*message.Message
}

func (c *capturePub) Publish(topic string, msgs ...*message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		c.topics = append(c.topics, topic)
		c.msgs = append(c.msgs, m)
	}
	return nil
}

func (c *capturePub) Close() error { return nil }

func (c *capturePub) got() ([]string, []*message.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.topics...), append([]*message.Message(nil), c.msgs...)
}

// waitTime bounds every wait so a broken adapter fails instead of hanging;
// it is never used to judge speed.
const waitTime = 20 * time.Second

// receive takes the next message or fails the test.
func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed, want a message")
		}
		return m
	case <-time.After(waitTime):
		t.Fatal("no message")
	}
	return nil
}

// receiveAck takes and acks n messages.
func receiveAck(t *testing.T, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	var out []*message.Message
	for range n {
		m := receive(t, ch)
		m.Ack()
		out = append(out, m)
	}
	return out
}

// drain acks everything until the channel closes and returns it.
func drain(t *testing.T, ch <-chan *message.Message) []*message.Message {
	t.Helper()
	var out []*message.Message
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return out
			}
			m.Ack()
			out = append(out, m)
		case <-time.After(waitTime):
			t.Fatal("channel not closed")
		}
	}
}

func newPub(t *testing.T, cfg PublisherConfig) *Publisher {
	t.Helper()
	p, err := NewPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSub(t *testing.T, cfg SubscriberConfig) *Subscriber {
	t.Helper()
	s, err := NewSubscriber(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func subscribe(t *testing.T, s *Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ch, err := s.Subscribe(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func publish(t *testing.T, p *Publisher, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := p.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
}
