package loom_test

// Subscribe-first versions of Watermill's universal Pub/Sub suite
// (github.com/ThreeDotsLabs/watermill/pubsub/tests, v1.5.1), run over QUIC and over
// HTTP/3 against the in-process test router.
//
// Why not tests.TestPubSub as a whole: most upstream tests publish first and
// subscribe afterwards, which assumes a broker that keeps messages until someone
// reads them. Loom does not: a room routes each message to a consumer stream that is
// connected now and discards it when there is none, and it never redelivers. Run as
// is, those tests would lose everything they publish before Subscribe. Each test
// below keeps its upstream intent, message counts (smaller under -race for the
// heaviest, see suiteCountRace) and assertions, but subscribes first, waits until
// the router has registered the consumer streams (waitingSubscriber, or
// srv.WaitConsumers), and only then publishes. Where a test needs something more to
// fit Loom, its comment says what and why.
//
// Modes: a confirm Publish returns only once a consumer acked (or the server
// discarded) its messages, so in confirm mode the suite publishes from a goroutine
// beside the reader; fire_and_forget Publish returns once buffered, so it may run
// before reading, as upstream does. PublishSubscribe and PublisherClose run in both
// modes; the others use the mode named in their comment. Publishers use the envelope
// format: the raw format carries the payload alone, so UUIDs and metadata, which the
// suite asserts, would not cross the hop.
//
// Delivery is at least once, so reads deduplicate by UUID
// (subscriber.BulkReadWithDeduplication), as the upstream suite does for Pub/Subs
// without ExactlyOnceDelivery.
//
// The upstream helpers (tests.TestMessageCtx, tests.AddSimpleMessagesParallel,
// tests.PublishSimpleMessages and the Assert functions) are called directly.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/subscriber"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// suiteTimeout stands for upstream's defaultTimeout (15 s), of which upstream's waits
// are multiples; here it is 60 s. Every such wait ends as soon as what it waits for
// has arrived, so it is a hang detector, and 15 s did not hold on a loaded 2-core
// machine under -race (ConcurrentSubscribe over HTTP/3 needed over 45 s there).
const suiteTimeout = 60 * time.Second

// suiteCount returns upstream's testing.Short() count when -short, else its full count.
func suiteCount(short, full int) int {
	if testing.Short() {
		return short
	}
	return full
}

// suiteCountRace is suiteCount for the suite's heaviest tests, with a count for -race
// between upstream's short and full ones. Under -race each message costs 5 to 10
// times the CPU, and on a 2-core CI machine these tests at full count took minutes
// while adding nothing the race detector needs over the -race count: the same
// concurrency (goroutines, subscribers, topics), fewer messages each. .ci/run runs
// the suite once more without -race at upstream's full counts.
func suiteCountRace(short, race, full int) int {
	switch {
	case testing.Short():
		return short
	case raceEnabled:
		return race
	}
	return full
}

func suiteTopic() string { return "topic-" + watermill.NewUUID() }

// forTransports runs fn once per transport (QUIC, HTTP/3), each against its own router.
func forTransports(t *testing.T, fn func(t *testing.T, srv *loomtest.Server, tr string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { fn(t, startRouter(t, loomtest.Config{}), tr) })
	}
}

// forTransportsAndModes runs fn per transport and per publishing mode.
func forTransportsAndModes(t *testing.T, fn func(t *testing.T, srv *loomtest.Server, tr, mode string)) {
	for _, tr := range transports {
		for _, mode := range []string{loom.ModeConfirm, loom.ModeFireAndForget} {
			t.Run(tr+"/"+mode, func(t *testing.T) { fn(t, startRouter(t, loomtest.Config{}), tr, mode) })
		}
	}
}

func suitePublisher(t *testing.T, srv *loomtest.Server, tr, mode string) *loom.Publisher {
	return newPublisher(t, srv, tr, func(c *loom.PublisherConfig) {
		c.Mode = mode
		c.Format = loom.FormatEnvelope
	})
}

// suiteSubscriber subscribes and waits for its 4 (the default) consumer streams.
func suiteSubscriber(t *testing.T, srv *loomtest.Server, tr string) waitingSubscriber {
	return waitingSubscriber{newSubscriber(t, srv, tr, nil), srv, 4}
}

// beside runs publish beside the reader in confirm mode, where Publish returns only
// after the consumer acked, and at once in fire_and_forget mode. wait returns once
// publish has. publish must report failures with t.Error, not t.Fatal.
func beside(mode string, publish func()) (wait func()) {
	if mode == loom.ModeFireAndForget {
		publish()
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		publish()
	}()
	return func() { <-done }
}

// bulkRead is upstream's bulkRead for a Pub/Sub without ExactlyOnceDelivery.
func bulkRead(ch <-chan *message.Message, limit int, timeout time.Duration) (message.Messages, bool) {
	return subscriber.BulkReadWithDeduplication(ch, limit, timeout)
}

// closePubSub closes both; neither may fail (upstream requires no error).
func closePubSub(t *testing.T, pub message.Publisher, sub message.Subscriber) {
	t.Helper()
	if err := pub.Close(); err != nil {
		t.Errorf("publisher Close: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Errorf("subscriber Close: %v", err)
	}
}

// assertChannelClosed: after Subscriber.Close returns, the channel must be closed
// (not blocked), as upstream's assertMessagesChannelClosed checks.
func assertChannelClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case _, open := <-ch:
		if open {
			t.Error("messages channel still open after Close: got a message")
		}
	default:
		t.Error("messages channel is not closed (blocked)")
	}
}

// waitNoConsumers waits until the router has no consumer stream left in topic.
func waitNoConsumers(t *testing.T, srv *loomtest.Server, topic string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for srv.Consumers(topic) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d consumer streams still registered in %q", srv.Consumers(topic), topic)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUniversalPublishSubscribe is upstream TestPublishSubscribe: 100 messages with
// payloads and metadata, in one Publish call; all arrive with both intact.
func TestUniversalPublishSubscribe(t *testing.T) {
	forTransportsAndModes(t, func(t *testing.T, srv *loomtest.Server, tr, mode string) {
		pub, sub := suitePublisher(t, srv, tr, mode), suiteSubscriber(t, srv, tr)
		topicName := suiteTopic()

		messages, err := sub.Subscribe(context.Background(), topicName)
		if err != nil {
			t.Fatal(err)
		}

		var messagesToPublish []*message.Message
		messagesPayloads := map[string][]byte{}
		messagesTestMetadata := map[string]string{}
		for i := range 100 {
			id := watermill.NewUUID()
			testMetadata := watermill.NewUUID()
			payload := fmt.Appendf(nil, "%d", i)
			msg := message.NewMessage(id, payload)
			msg.Metadata.Set("test", testMetadata)
			messagesTestMetadata[id] = testMetadata
			messagesToPublish = append(messagesToPublish, msg)
			messagesPayloads[id] = payload
		}
		published := beside(mode, func() {
			if err := pub.Publish(topicName, messagesToPublish...); err != nil {
				t.Errorf("cannot publish message: %v", err)
			}
		})

		receivedMessages, all := bulkRead(messages, len(messagesToPublish), suiteTimeout*3)
		published()
		if !all {
			t.Errorf("received %d of %d messages; router: %+v", len(receivedMessages), len(messagesToPublish), srv.RoomStats(topicName))
		}
		tests.AssertAllMessagesReceived(t, messagesToPublish, receivedMessages)
		tests.AssertMessagesPayloads(t, messagesPayloads, receivedMessages)
		tests.AssertMessagesMetadata(t, "test", messagesTestMetadata, receivedMessages)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messages)
	})
}

// TestUniversalConcurrentSubscribe is upstream TestConcurrentSubscribe: messages
// published by 50 goroutines to a topic read by many subscribers at once. Upstream's
// "multiplied subscriber" is N Subscribers on the same topic; in Loom they are N*4
// consumer streams of one room, which split its partitions, so the union of what
// they receive must be every message. Confirm mode: the 50 concurrent Publish calls
// run beside the reader.
func TestUniversalConcurrentSubscribe(t *testing.T) {
	messagesCount := suiteCountRace(100, 1000, 5000)
	subscribersCount := suiteCountRace(10, 20, 50)
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		pub := suitePublisher(t, srv, tr, loom.ModeConfirm)
		topicName := suiteTopic()

		sub := newMultipliedSubscriber(t, srv, tr, subscribersCount)
		messages, err := sub.Subscribe(context.Background(), topicName)
		if err != nil {
			t.Fatal(err)
		}

		var publishedMessages message.Messages
		published := beside(loom.ModeConfirm, func() {
			publishedMessages = tests.AddSimpleMessagesParallel(t, messagesCount, pub, topicName, 50)
		})
		receivedMessages, all := bulkRead(messages, messagesCount, suiteTimeout*3)
		published()
		if !all {
			t.Errorf("received %d of %d messages; router: %+v", len(receivedMessages), messagesCount, srv.RoomStats(topicName))
		}
		tests.AssertAllMessagesReceived(t, publishedMessages, receivedMessages)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messages)
	})
}

// TestUniversalConcurrentSubscribeMultipleTopics is upstream
// TestConcurrentSubscribeMultipleTopics: one Publisher and one Subscriber, many
// topics at once, each topic subscribed, published to and read in its own goroutine
// (subscribe first here). fire_and_forget: each goroutine publishes before it reads.
func TestUniversalConcurrentSubscribeMultipleTopics(t *testing.T) {
	messagesCount := suiteCountRace(50, 50, 100)
	topicsCount := suiteCountRace(10, 20, 20)
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		pub, sub := suitePublisher(t, srv, tr, loom.ModeFireAndForget), suiteSubscriber(t, srv, tr)
		base := suiteTopic()

		var messagesToPublish []*message.Message
		for range messagesCount {
			messagesToPublish = append(messagesToPublish, message.NewMessage(watermill.NewUUID(), []byte("x")))
		}

		var subsWg sync.WaitGroup
		receivedMessagesCh := make(chan message.Messages, topicsCount)
		channels := make(chan (<-chan *message.Message), topicsCount)
		for i := range topicsCount {
			topicName := base + fmt.Sprintf("-%d", i)
			var messagesToPublishForTopic []*message.Message
			for _, msg := range messagesToPublish {
				messagesToPublishForTopic = append(messagesToPublishForTopic, msg.Copy())
			}
			subsWg.Go(func() {
				messages, err := sub.Subscribe(context.Background(), topicName)
				if err != nil {
					t.Error(err)
					return
				}
				channels <- messages
				if err := pub.Publish(topicName, messagesToPublishForTopic...); err != nil {
					t.Error(err)
				}
				topicMessages, _ := bulkRead(messages, len(messagesToPublishForTopic), suiteTimeout*5)
				receivedMessagesCh <- topicMessages
			})
		}
		subsWg.Wait()
		close(receivedMessagesCh)
		close(channels)

		topicsReceivedMessages := 0
		for msgs := range receivedMessagesCh {
			tests.AssertAllMessagesReceived(t, messagesToPublish, msgs)
			topicsReceivedMessages++
		}
		if topicsReceivedMessages != topicsCount {
			t.Errorf("%d of %d topics received their messages", topicsReceivedMessages, topicsCount)
		}

		closePubSub(t, pub, sub)
		for messages := range channels {
			assertChannelClosed(t, messages)
		}
	})
}

// TestUniversalResendOnError is upstream TestResendOnError: the first messages are
// nacked, then every message must still arrive. In Loom a Nack is redelivered by the
// subscriber itself after NackResendDelay (the server never redelivers).
// fire_and_forget: all 100 are published before reading, as upstream.
func TestUniversalResendOnError(t *testing.T) {
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		pub, sub := suitePublisher(t, srv, tr, loom.ModeFireAndForget), suiteSubscriber(t, srv, tr)
		topicName := suiteTopic()

		messagesToSend := 100
		nacksCount := 2

		messages, err := sub.Subscribe(context.Background(), topicName)
		if err != nil {
			t.Fatal(err)
		}
		publishedMessages := tests.PublishSimpleMessages(t, messagesToSend, pub, topicName)

	NackLoop:
		for range nacksCount {
			select {
			case msg, open := <-messages:
				if !open {
					t.Fatal("messages channel closed before all received")
				}
				msg.Nack()
			case <-time.After(suiteTimeout):
				break NackLoop
			}
		}

		receivedMessages, _ := bulkRead(messages, messagesToSend, suiteTimeout)
		tests.AssertAllMessagesReceived(t, publishedMessages, receivedMessages)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messages)
	})
}

// TestUniversalContinueAfterErrors is upstream TestContinueAfterErrors: messages are
// nacked again and again (subscribersToNack rounds of nacksPerSubscriber Nacks), and
// afterwards every message is still consumed.
//
// Upstream, for a non-persistent Pub/Sub, calls Subscribe again on the same
// Subscriber for each round and leaves the earlier subscriptions open. In Loom every
// Subscribe adds consumer streams that take a share of the room's partitions, so an
// abandoned subscription would keep its share in flight forever, and a closed one
// loses its in-flight messages at the server. So the rounds of Nacks run on the one
// subscription that finally acks everything: the intent (processing continues after
// many failures, nothing is lost) is the same. fire_and_forget: all 50 are published
// before reading, as upstream.
func TestUniversalContinueAfterErrors(t *testing.T) {
	totalMessagesCount := 50
	subscribersToNack := suiteCount(1, 3)
	nacksPerSubscriber := suiteCount(5, 100)
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		pub, sub := suitePublisher(t, srv, tr, loom.ModeFireAndForget), suiteSubscriber(t, srv, tr)
		topicName := suiteTopic()

		messages, err := sub.Subscribe(context.Background(), topicName)
		if err != nil {
			t.Fatal(err)
		}
		messagesToPublish := tests.PublishSimpleMessages(t, totalMessagesCount, pub, topicName)

		for range subscribersToNack {
			for range nacksPerSubscriber {
				select {
				case msg := <-messages:
					msg.Nack()
				case <-time.After(suiteTimeout):
					t.Fatal("no messages left, probably seek after error doesn't work")
				}
			}
		}

		// only nacks were sent, so all messages should be consumed
		receivedMessages, _ := bulkRead(messages, totalMessagesCount, suiteTimeout*6)
		tests.AssertAllMessagesReceived(t, messagesToPublish, receivedMessages)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messages)
	})
}

// TestUniversalPublisherClose is upstream TestPublisherClose: many messages published
// by 20 goroutines, then the Publisher is closed at once; none may be lost. In
// fire_and_forget mode most are still buffered when Close is called, so Close must
// flush them; in confirm mode AddSimpleMessagesParallel returns after all were acked.
// The reader runs from before the first Publish.
//
// Full count reduced from upstream's 10,000 to 2,000: the router reads a producer
// stream one message at a time and takes the next only after the consumer acked the
// previous one, so each message costs a full round trip (about 0.7 ms in
// fire_and_forget and 1.5-2 ms in confirm mode under -race); 10,000 messages in four
// runs took over 50 s, the budget of the whole file. -short keeps upstream's 100;
// -race sends 500 (2,000 took 50 s of a loaded run), still far more than a Close
// finds sent in fire_and_forget mode.
func TestUniversalPublisherClose(t *testing.T) {
	messagesCount := suiteCountRace(100, 500, 2000)
	forTransportsAndModes(t, func(t *testing.T, srv *loomtest.Server, tr, mode string) {
		pub, sub := suitePublisher(t, srv, tr, mode), suiteSubscriber(t, srv, tr)
		topicName := suiteTopic()

		messages, err := sub.Subscribe(context.Background(), topicName)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			msgs message.Messages
			all  bool
		}
		read := make(chan result, 1)
		go func() {
			msgs, all := bulkRead(messages, messagesCount, suiteTimeout*3)
			read <- result{msgs, all}
		}()

		producedMessages := tests.AddSimpleMessagesParallel(t, messagesCount, pub, topicName, 20)
		if err := pub.Close(); err != nil {
			t.Errorf("publisher Close: %v", err)
		}

		r := <-read
		if !r.all {
			t.Errorf("received %d of %d messages; router: %+v", len(r.msgs), messagesCount, srv.RoomStats(topicName))
		}
		tests.AssertAllMessagesReceived(t, producedMessages, r.msgs)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messages)
	})
}

// TestUniversalTopic is upstream TestTopic: a message published to one topic arrives
// on that topic only. Confirm mode: both Publish calls run beside the readers.
func TestUniversalTopic(t *testing.T) {
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		pub, sub := suitePublisher(t, srv, tr, loom.ModeConfirm), suiteSubscriber(t, srv, tr)
		topic1 := suiteTopic() + "-1"
		topic2 := suiteTopic() + "-2"

		messagesTopic1, err := sub.Subscribe(context.Background(), topic1)
		if err != nil {
			t.Fatal(err)
		}
		messagesTopic2, err := sub.Subscribe(context.Background(), topic2)
		if err != nil {
			t.Fatal(err)
		}

		topic1Msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
		topic2Msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
		published := beside(loom.ModeConfirm, func() {
			if err := pub.Publish(topic1, topic1Msg); err != nil {
				t.Error(err)
			}
			if err := pub.Publish(topic2, topic2Msg); err != nil {
				t.Error(err)
			}
		})

		messagesConsumedTopic1, received := bulkRead(messagesTopic1, 1, suiteTimeout)
		if !received {
			t.Fatalf("no messages received in topic %s", topic1)
		}
		messagesConsumedTopic2, received := bulkRead(messagesTopic2, 1, suiteTimeout)
		if !received {
			t.Fatalf("no messages received in topic %s", topic2)
		}
		published()

		if got := messagesConsumedTopic1.IDs()[0]; got != topic1Msg.UUID {
			t.Errorf("topic 1: got %s, want %s", got, topic1Msg.UUID)
		}
		if got := messagesConsumedTopic2.IDs()[0]; got != topic2Msg.UUID {
			t.Errorf("topic 2: got %s, want %s", got, topic2Msg.UUID)
		}

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messagesTopic1)
		assertChannelClosed(t, messagesTopic2)
	})
}

// TestUniversalMessageCtx is upstream TestMessageCtx, which already subscribes first.
// It calls Publish twice before reading, so its publisher is fire_and_forget (a
// confirm Publish would wait for an ack nobody gives yet).
//
// KNOWN FAILURE (adapter bug, not fixed here): the test acks the first message, holds
// the second unacked and closes the Publisher, which must not fail. Both messages
// went out in one batch on one producer stream, and the router ends that stream only
// after the consumer acked the last message, so Publisher.Close waits close_timeout
// for a confirm that cannot come, then cancels the stream, puts the whole batch back
// and drops it: Close returns "2 messages not sent" and OnDrop reports both as
// dropped ("closed"), although both were delivered and the first was even acked.
// With the default close_timeout of 30 s, Close also outlasts the test's 15 s wait
// for the message context; close_timeout is 2 s here so the failure is quick and
// names the cause.
func TestUniversalMessageCtx(t *testing.T) {
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		tests.TestMessageCtx(t, tests.TestContext{TestID: tests.NewTestID()}, func(t *testing.T) (message.Publisher, message.Subscriber) {
			pub := newPublisher(t, srv, tr, func(c *loom.PublisherConfig) {
				c.Mode = loom.ModeFireAndForget
				c.Format = loom.FormatEnvelope
				c.CloseTimeout = 2 * time.Second
			})
			return pub, suiteSubscriber(t, srv, tr)
		})
	})
}

// TestUniversalSubscribeCtx is upstream TestSubscribeCtx: cancelling the context
// given to Subscribe closes the channel, even with messages still coming, and a
// later Subscribe receives what is published to it.
//
// Upstream publishes 20 messages first and expects the second subscription to get
// all of them; in Loom the first subscription's in-flight messages are lost when its
// streams leave, and whatever is sent while no stream is registered is discarded.
// So: the first batch goes to the first subscription, whose context is cancelled
// while its messages are being delivered (each is nacked, as upstream); the batch's
// confirm Publish returns once the server is done with every message (acked, lost
// with the leaving streams, or discarded), so none of it can reach the second
// subscription. Once the old streams have left and the new ones are registered, a
// second batch of 20 is published and must arrive whole. Confirm mode, beside the
// readers.
func TestUniversalSubscribeCtx(t *testing.T) {
	const messagesCount = 20
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		pub, sub := suitePublisher(t, srv, tr, loom.ModeConfirm), suiteSubscriber(t, srv, tr)
		topicName := suiteTopic()

		ctxWithCancel, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctxWithCancel = context.WithValue(ctxWithCancel, suiteContextKey("foo"), "bar")

		msgsToCancel, err := sub.Subscribe(ctxWithCancel, topicName)
		if err != nil {
			t.Fatal(err)
		}
		firstBatch := beside(loom.ModeConfirm, func() {
			tests.PublishSimpleMessages(t, messagesCount, pub, topicName)
		})
		select {
		case msg := <-msgsToCancel:
			msg.Nack()
		case <-time.After(suiteTimeout):
			t.Fatal("no message of the first batch received")
		}
		cancel()

		timeout := time.After(suiteTimeout)
	ClosedLoop:
		for {
			select {
			case msg, open := <-msgsToCancel:
				if !open {
					break ClosedLoop
				}
				msg.Nack()
			case <-timeout:
				t.Fatal("messages channel is not closed after ", suiteTimeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
		firstBatch()
		waitNoConsumers(t, srv, topicName)

		ctx := context.WithValue(context.Background(), suiteContextKey("foo"), "bar")
		msgs, err := sub.Subscribe(ctx, topicName)
		if err != nil {
			t.Fatal(err)
		}
		var publishedMessages message.Messages
		secondBatch := beside(loom.ModeConfirm, func() {
			publishedMessages = tests.PublishSimpleMessages(t, messagesCount, pub, topicName)
		})
		receivedMessages, _ := bulkRead(msgs, messagesCount, suiteTimeout)
		secondBatch()
		tests.AssertAllMessagesReceived(t, publishedMessages, receivedMessages)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, msgs)
	})
}

type suiteContextKey string

// TestUniversalConcurrentClose is upstream TestConcurrentClose: ten Publisher and
// Subscriber pairs are created, subscribed and closed concurrently; then a fresh
// pair must still work. Subscribe first: the fresh Subscriber subscribes (after the
// closed pairs' streams have left the room) before the fresh Publisher publishes 50
// messages, and that Publisher is closed right away, beside the reader, so its Close
// must flush them. fire_and_forget.
func TestUniversalConcurrentClose(t *testing.T) {
	forTransports(t, func(t *testing.T, srv *loomtest.Server, tr string) {
		topicName := suiteTopic()
		totalMessagesCount := 50

		var closeWg sync.WaitGroup
		for range 10 {
			closeWg.Go(func() {
				// Built here rather than with newPublisher/newSubscriber, which call
				// t.Fatal, not allowed outside the test's goroutine.
				pub, err := loom.NewPublisher(loom.PublisherConfig{
					Client: clientConfig(srv, tr), Reconnect: fastReconnect,
					Mode: loom.ModeFireAndForget, Format: loom.FormatEnvelope,
				}, logger(t))
				if err != nil {
					t.Error(err)
					return
				}
				sub, err := loom.NewSubscriber(loom.SubscriberConfig{
					Client: clientConfig(srv, tr), Reconnect: fastReconnect, NackResendDelay: 10 * time.Millisecond,
				}, logger(t))
				if err != nil {
					t.Error(err)
					_ = pub.Close()
					return
				}
				messages, err := sub.Subscribe(context.Background(), topicName)
				if err != nil {
					t.Error(err)
				}
				closePubSub(t, pub, sub)
				if messages != nil {
					assertChannelClosed(t, messages)
				}
			})
		}
		closeWg.Wait()
		waitNoConsumers(t, srv, topicName)

		pub, sub := suitePublisher(t, srv, tr, loom.ModeFireAndForget), suiteSubscriber(t, srv, tr)
		messages, err := sub.Subscribe(context.Background(), topicName)
		if err != nil {
			t.Fatal(err)
		}
		expectedMessages := tests.PublishSimpleMessages(t, totalMessagesCount, pub, topicName)
		closed := make(chan error, 1)
		go func() { closed <- pub.Close() }()

		receivedMessages, all := bulkRead(messages, len(expectedMessages), suiteTimeout*3)
		if !all {
			t.Errorf("received %d of %d messages; router: %+v", len(receivedMessages), len(expectedMessages), srv.RoomStats(topicName))
		}
		if err := <-closed; err != nil {
			t.Errorf("publisher Close: %v", err)
		}
		tests.AssertAllMessagesReceived(t, expectedMessages, receivedMessages)

		closePubSub(t, pub, sub)
		assertChannelClosed(t, messages)
	})
}

// multipliedSubscriber is upstream's createMultipliedSubscriber for Loom: n
// Subscribers (n connections) on one topic, their channels merged. Subscribe waits
// until all n*4 consumer streams are registered. Unlike upstream's multiplier, its
// forwarders stop at Close even when nobody reads, so no goroutine outlives the test.
type multipliedSubscriber struct {
	srv       *loomtest.Server
	subs      []*loom.Subscriber
	done      chan struct{}
	merged    chan struct{} // closed once the merged channel is
	closeOnce sync.Once
}

func newMultipliedSubscriber(t *testing.T, srv *loomtest.Server, tr string, n int) *multipliedSubscriber {
	m := &multipliedSubscriber{srv: srv, done: make(chan struct{})}
	for range n {
		m.subs = append(m.subs, newSubscriber(t, srv, tr, nil))
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// Subscribe may be called once.
func (m *multipliedSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	before := make([]int, len(m.subs))
	for i, s := range m.subs {
		before[i] = registered(m.srv, s, topic)
	}
	out := make(chan *message.Message)
	var fwd sync.WaitGroup
	defer func() {
		m.merged = make(chan struct{})
		go func() {
			fwd.Wait()
			close(out)
			close(m.merged)
		}()
	}()
	for _, s := range m.subs {
		ch, err := s.Subscribe(ctx, topic)
		if err != nil {
			return nil, err
		}
		fwd.Go(func() {
			for msg := range ch {
				select {
				case out <- msg:
				case <-m.done:
				}
			}
		})
	}
	for i, s := range m.subs {
		if err := waitRegistered(ctx, m.srv, s, topic, before[i], 4); err != nil {
			return out, err
		}
	}
	return out, nil
}

func (m *multipliedSubscriber) Close() error {
	m.closeOnce.Do(func() {
		close(m.done)
		for _, s := range m.subs {
			_ = s.Close()
		}
		if m.merged != nil {
			<-m.merged
		}
	})
	return nil
}
