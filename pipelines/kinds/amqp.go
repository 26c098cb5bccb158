package kinds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// AMQP is a RabbitMQ (or LavinMQ) queue as source, or an exchange as sink,
// over watermill-amqp/v3. The broker is named by a connection of type amqp:
//
//	connections:
//	  rabbit: {type: amqp, amqp_uri: "amqp://127.0.0.1:5672/", user: loombridge, password_file: /run/secrets/rabbit}
//	pipelines:
//	  in:  {from: {type: amqp, connection: rabbit, queue: orders}, ...}
//	  out: {..., to: {rabbit: {type: amqp, connection: rabbit, queue: audit}}}
//
// A sink publishes to exchange (default: the default exchange "") with
// routing_key (default: its queue). When it names a queue, the queue is
// declared (and bound to the exchange with routing_key) at start, so messages
// published before anyone consumes wait in it: without a queue bound, RabbitMQ
// drops what it cannot route. confirm (default true) waits for the broker's
// confirmation of each message: at-least-once, at a few hundred messages a
// second per channel; channel_pool_size channels publish at once. The UUID is
// the _watermill_message_uuid header and the message id; each metadata entry
// is a header (loom_key among them); the payload is the body. RabbitMQ refuses
// messages over its max_message_size (128 MiB by default in 3.x, 16 MiB in
// 4.x): max_message_bytes refuses them first, whole, to the dead letters.
var AMQP = pipelines.Kind{
	Name:       "amqp",
	Summary:    "AMQP 0-9-1 (RabbitMQ, LavinMQ): consume a queue, publish to a queue or an exchange",
	Source:     func() pipelines.SourceConfig { return &AMQPSource{} },
	Sink:       func() pipelines.SinkConfig { return &AMQPSink{} },
	Connection: func() pipelines.ConnectionConfig { return &AMQPConnection{} },
}

// Defaults of the amqp kind.
const (
	DefaultAMQPURI             = "amqp://127.0.0.1:5672/"
	DefaultAMQPPrefetch        = 16
	DefaultAMQPChannelPool     = 16
	DefaultAMQPConsumers       = 16
	DefaultAMQPMaxMessageBytes = 128 << 20
)

// AMQPConnection is connections.<name> with type: amqp.
type AMQPConnection struct {
	// AmqpURI is the broker: amqp://host:port/vhost or amqps://.
	AmqpURI string `koanf:"amqp_uri"`
	// User and Password (or PasswordFile) replace the URI's user and password,
	// so the secret need not sit in the URI.
	User         string        `koanf:"user"`
	Password     client.Secret `koanf:"password"`
	PasswordFile string        `koanf:"password_file"`
	TLS          BrokerTLS     `koanf:"tls"`
	// Reconnect is the backoff between tries after the connection is lost.
	Reconnect AMQPReconnect `koanf:"reconnect"`
}

// AMQPReconnect is the adapter's ReconnectConfig.
type AMQPReconnect struct {
	BackoffInitialInterval     time.Duration `koanf:"backoff_initial_interval"`
	BackoffRandomizationFactor float64       `koanf:"backoff_randomization_factor"`
	BackoffMultiplier          float64       `koanf:"backoff_multiplier"`
	BackoffMaxInterval         time.Duration `koanf:"backoff_max_interval"`
}

// Check implements pipelines.ConnectionConfig.
func (c *AMQPConnection) Check() error {
	c.AmqpURI = cmp.Or(c.AmqpURI, DefaultAMQPURI)
	def := wmamqp.DefaultReconnectConfig()
	r := &c.Reconnect
	r.BackoffInitialInterval = cmp.Or(r.BackoffInitialInterval, def.BackoffInitialInterval)
	r.BackoffRandomizationFactor = cmp.Or(r.BackoffRandomizationFactor, def.BackoffRandomizationFactor)
	r.BackoffMultiplier = cmp.Or(r.BackoffMultiplier, def.BackoffMultiplier)
	r.BackoffMaxInterval = cmp.Or(r.BackoffMaxInterval, 10*time.Second)
	var errs []error
	if r.BackoffInitialInterval < 0 || r.BackoffMaxInterval < r.BackoffInitialInterval {
		errs = append(errs, errors.New("reconnect.backoff_max_interval: must be at least backoff_initial_interval, both positive"))
	}
	if r.BackoffMultiplier < 1 || r.BackoffRandomizationFactor < 0 || r.BackoffRandomizationFactor > 1 {
		errs = append(errs, errors.New("reconnect.backoff_multiplier, reconnect.backoff_randomization_factor: multiplier >= 1, factor from 0 to 1"))
	}
	_, err := c.config()
	return errors.Join(append(errs, err)...)
}

// config is the adapter's connection config; the password is read here.
func (c *AMQPConnection) config() (wmamqp.ConnectionConfig, error) {
	var errs []error
	u, err := amqp.ParseURI(c.AmqpURI)
	if err != nil {
		// amqp.ParseURI's errors do not repeat the URI, which may hold a password.
		return wmamqp.ConnectionConfig{}, fmt.Errorf("amqp_uri: %w", err)
	}
	pw, err := secret("password", c.Password, c.PasswordFile)
	errs = append(errs, err)
	if c.User != "" {
		u.Username = c.User
	}
	if pw != "" {
		if c.User == "" {
			errs = append(errs, errors.New("user: must be set with password"))
		}
		u.Password = pw
	}
	tlsCfg, err := c.TLS.config()
	errs = append(errs, err)
	if tlsCfg != nil && u.Scheme != "amqps" {
		errs = append(errs, errors.New("tls: needs an amqps:// amqp_uri"))
	}
	r := c.Reconnect
	return wmamqp.ConnectionConfig{
		AmqpURI:   u.String(),
		TLSConfig: tlsCfg,
		Reconnect: &wmamqp.ReconnectConfig{
			BackoffInitialInterval:     r.BackoffInitialInterval,
			BackoffRandomizationFactor: r.BackoffRandomizationFactor,
			BackoffMultiplier:          r.BackoffMultiplier,
			BackoffMaxInterval:         r.BackoffMaxInterval,
		},
	}, errors.Join(errs...)
}

// AMQPTopology is what a source or sink declares: its queue, and the exchange
// it is bound to.
type AMQPTopology struct {
	// Queue is the queue read (source) or declared and bound at start (sink).
	Queue string `koanf:"queue"`
	// Exchange, when set, is declared with ExchangeType; "" is the default
	// exchange, which routes by queue name.
	Exchange     string `koanf:"exchange"`
	ExchangeType string `koanf:"exchange_type"`
	// RoutingKey binds the queue to the exchange (source), or is what a sink
	// publishes with (default its queue).
	RoutingKey string `koanf:"routing_key"`
	// Durable queues and exchanges survive a broker restart (default true).
	Durable *bool `koanf:"durable"`
}

func (t *AMQPTopology) setDefaults() {
	if t.Exchange != "" && t.ExchangeType == "" {
		t.ExchangeType = "direct"
	}
	t.Durable = boolOr(t.Durable, true)
}

func (t *AMQPTopology) check() []error {
	var errs []error
	switch t.ExchangeType {
	case "", "direct", "fanout", "topic", "headers":
	default:
		errs = append(errs, fmt.Errorf("exchange_type: direct, fanout, topic or headers, got %q", t.ExchangeType))
	}
	if t.Exchange == "" && t.ExchangeType != "" {
		errs = append(errs, errors.New("exchange_type: only with exchange"))
	}
	return errs
}

// adapterConfig is the adapter's config for this topology, the names fixed
// (not derived from the topic).
func (t *AMQPTopology) adapterConfig(conn wmamqp.ConnectionConfig) wmamqp.Config {
	queue, exchange, key := t.Queue, t.Exchange, t.RoutingKey
	return wmamqp.Config{
		Connection: conn,
		Marshaler:  amqpMarshaler{},
		Exchange: wmamqp.ExchangeConfig{
			GenerateName: wmamqp.GenerateExchangeNameConstant(exchange),
			Type:         t.ExchangeType,
			Durable:      *t.Durable,
		},
		Queue: wmamqp.QueueConfig{
			GenerateName: wmamqp.GenerateQueueNameConstant(queue),
			Durable:      *t.Durable,
		},
		QueueBind:       wmamqp.QueueBindConfig{GenerateRoutingKey: func(string) string { return key }},
		Publish:         wmamqp.PublishConfig{GenerateRoutingKey: func(string) string { return key }},
		TopologyBuilder: &wmamqp.DefaultTopologyBuilder{},
	}
}

// AMQPSource consumes a queue.
type AMQPSource struct {
	Connection   string `koanf:"connection"`
	AMQPTopology `koanf:",squash"`
	// PrefetchCount is how many unacked messages the broker sends ahead.
	PrefetchCount int `koanf:"prefetch_count"`
	// NoRequeueOnNack drops (or dead-letters, by the queue's own policy) a
	// nacked message instead of queueing it again.
	NoRequeueOnNack bool `koanf:"no_requeue_on_nack"`
	// Consumer is the consumer tag; default the broker's.
	Consumer string `koanf:"consumer"`
	// Exclusive makes this the queue's only consumer.
	Exclusive bool `koanf:"exclusive"`
	// Consumers is how many consumers, each on its own channel, take messages
	// at once. Each handles one message at a time, waiting for its ack, so 1
	// keeps the queue's order and the default, DefaultAMQPConsumers, trades
	// order for throughput.
	Consumers int `koanf:"consumers"`
}

// AMQPSink publishes to an exchange.
type AMQPSink struct {
	Connection   string `koanf:"connection"`
	AMQPTopology `koanf:",squash"`
	// Confirm waits for the broker to confirm each message (publisher
	// confirms): nothing is acked at the source before the broker has it.
	Confirm *bool `koanf:"confirm"`
	// ChannelPoolSize is how many channels publish at once.
	ChannelPoolSize int `koanf:"channel_pool_size"`
	// Mandatory asks the broker to return what no queue takes (returns are
	// only logged by the broker: declare a queue instead).
	Mandatory bool `koanf:"mandatory"`
	// Persistent messages are written to disk by durable queues (default true).
	Persistent *bool `koanf:"persistent"`
	// Transactional publishes each batch in a transaction (slow).
	Transactional bool `koanf:"transactional"`
	// MaxMessageBytes refuses larger bodies before they are sent; keep it at
	// the broker's max_message_size.
	MaxMessageBytes int `koanf:"max_message_bytes"`
}

// Check implements pipelines.SourceConfig.
func (c *AMQPSource) Check(d pipelines.Deps) error {
	c.setDefaults()
	c.PrefetchCount = cmp.Or(c.PrefetchCount, DefaultAMQPPrefetch)
	c.Consumers = cmp.Or(c.Consumers, DefaultAMQPConsumers)
	_, err := connectionOf[*AMQPConnection](d, c.Connection, "amqp")
	errs := append([]error{err}, c.check()...)
	if c.Queue == "" {
		errs = append(errs, errors.New("queue: must be set (the queue read; declared when missing)"))
	}
	if c.Consumers < 1 {
		errs = append(errs, fmt.Errorf("consumers: must be at least 1, got %d", c.Consumers))
	}
	if c.Exclusive && c.Consumers > 1 {
		errs = append(errs, errors.New("exclusive: allows one consumer: set consumers: 1"))
	}
	if c.PrefetchCount < 1 {
		errs = append(errs, fmt.Errorf("prefetch_count: must be at least 1, got %d", c.PrefetchCount))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig: the queue.
func (c *AMQPSource) Topic() string { return c.Queue }

// amqpConfig returns the adapter's connection config of the connection called
// name.
func amqpConfig(d pipelines.Deps, name string) (wmamqp.ConnectionConfig, error) {
	conn, err := connectionOf[*AMQPConnection](d, name, "amqp")
	if err != nil {
		return wmamqp.ConnectionConfig{}, err
	}
	return conn.config()
}

// NewSubscriber implements pipelines.SourceConfig.
func (c *AMQPSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	cc, err := amqpConfig(d, c.Connection)
	if err != nil {
		return nil, err
	}
	cfg := c.adapterConfig(cc)
	cfg.Consume = wmamqp.ConsumeConfig{
		NoRequeueOnNack: c.NoRequeueOnNack,
		Consumer:        c.Consumer,
		Exclusive:       c.Exclusive,
		Qos:             wmamqp.QosConfig{PrefetchCount: c.PrefetchCount},
	}
	sub, err := wmamqp.NewSubscriber(cfg, d.Logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: %s: %w", redactURI(cc.AmqpURI), err)
	}
	return &fanIn{Subscriber: sub, n: c.Consumers, closing: make(chan struct{})}, nil
}

// fanIn subscribes n times to the same topic (n consumers of the queue, each
// on its own channel) and merges what they deliver: the adapter's consumer
// waits for each message's ack before it takes the next.
type fanIn struct {
	message.Subscriber
	n         int
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (f *fanIn) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	var wg sync.WaitGroup
	for range f.n {
		ch, err := f.Subscriber.Subscribe(ctx, topic)
		if err != nil {
			return nil, err // those started stop at Close
		}
		wg.Add(1)
		f.wg.Add(1)
		go func() {
			defer wg.Done()
			defer f.wg.Done()
			for m := range ch {
				select {
				case out <- m:
				case <-f.closing:
					m.Nack()
				case <-ctx.Done():
					m.Nack()
				}
			}
		}()
	}
	// Tracked too: Close returns only once out is closed, as Watermill's
	// Subscriber contract asks (the universal suite checks it at once).
	f.wg.Go(func() { wg.Wait(); close(out) })
	return out, nil
}

func (f *fanIn) Close() error {
	f.closeOnce.Do(func() { close(f.closing) })
	err := f.Subscriber.Close()
	f.wg.Wait()
	return err
}

// Check implements pipelines.SinkConfig.
func (c *AMQPSink) Check(d pipelines.Deps) error {
	c.setDefaults()
	if c.RoutingKey == "" && c.Exchange == "" {
		c.RoutingKey = c.Queue
	}
	c.Confirm = boolOr(c.Confirm, true)
	c.Persistent = boolOr(c.Persistent, true)
	c.ChannelPoolSize = cmp.Or(c.ChannelPoolSize, DefaultAMQPChannelPool)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultAMQPMaxMessageBytes)
	_, err := connectionOf[*AMQPConnection](d, c.Connection, "amqp")
	errs := append([]error{err}, c.check()...)
	if c.Exchange == "" && c.Queue == "" && c.RoutingKey == "" {
		errs = append(errs, errors.New("queue: set queue (published to through the default exchange), or exchange and routing_key"))
	}
	if c.Exchange == "" && c.Queue != "" && c.RoutingKey != c.Queue {
		errs = append(errs, fmt.Errorf("routing_key: the default exchange routes by queue name: leave it out, or set exchange"))
	}
	if c.ChannelPoolSize < 1 {
		errs = append(errs, fmt.Errorf("channel_pool_size: must be at least 1, got %d", c.ChannelPoolSize))
	}
	if c.MaxMessageBytes < 1 {
		errs = append(errs, fmt.Errorf("max_message_bytes: must be positive, got %d", c.MaxMessageBytes))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SinkConfig: the queue, or the exchange's name.
func (c *AMQPSink) Topic() string {
	if c.Queue != "" {
		return c.Queue
	}
	return c.Exchange
}

// NewPublisher implements pipelines.SinkConfig.
func (c *AMQPSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	cc, err := amqpConfig(d, c.Connection)
	if err != nil {
		return nil, err
	}
	cfg := c.adapterConfig(cc)
	cfg.Marshaler = amqpMarshaler{notPersistent: !*c.Persistent}
	cfg.Publish.Mandatory = c.Mandatory
	cfg.Publish.Transactional = c.Transactional
	cfg.Publish.ChannelPoolSize = c.ChannelPoolSize
	cfg.Publish.ConfirmDelivery = *c.Confirm
	pub, err := wmamqp.NewPublisher(cfg, d.Logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: %s: %w", redactURI(cc.AmqpURI), err)
	}
	if err := c.declare(pub.Connection(), cfg); err != nil {
		_ = pub.Close()
		return nil, err
	}
	// Refused before sending: what the broker would refuse.
	return sizeLimited{Publisher: pub, limit: func(m *message.Message) error {
		if len(m.Payload) > c.MaxMessageBytes {
			return &TooLargeError{Backend: "amqp", UUID: m.UUID, Size: len(m.Payload), Limit: c.MaxMessageBytes,
				Setting: "the sink's max_message_bytes; RabbitMQ's max_message_size is 128 MiB by default in 3.x, 16 MiB in 4.x, at most 512 MiB"}
		}
		return nil
	}}, nil
}

// declare declares, at start, the exchange and the queue with its binding,
// so what is published before the first consumer waits in the queue.
func (c *AMQPSink) declare(conn *amqp.Connection, cfg wmamqp.Config) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open a channel: %w", err)
	}
	defer ch.Close()
	b := wmamqp.DefaultTopologyBuilder{}
	if c.Queue == "" {
		if err := b.ExchangeDeclare(ch, c.Exchange, cfg); err != nil {
			return fmt.Errorf("amqp: declare exchange %s: %w", c.Exchange, err)
		}
		return nil
	}
	if err := b.BuildTopology(ch, wmamqp.BuildTopologyParams{Topic: c.Queue, QueueName: c.Queue, ExchangeName: c.Exchange, RoutingKey: c.RoutingKey}, cfg, watermill.NopLogger{}); err != nil {
		return fmt.Errorf("amqp: declare queue %s: %w", c.Queue, err)
	}
	return nil
}

// amqpMarshaler is the adapter's DefaultMarshaler, with the UUID also set as
// the AMQP message id (and read from it when the header is missing, as from
// producers that are not Watermill), and a delivery of a closed channel
// refused rather than made into an empty message.
type amqpMarshaler struct{ notPersistent bool }

func (m amqpMarshaler) Marshal(msg *message.Message) (amqp.Publishing, error) {
	for k := range msg.Metadata {
		if len(k) > 255 {
			return amqp.Publishing{}, fmt.Errorf("amqp: metadata key %.40q... of message %s is over 255 bytes, the AMQP limit", k, msg.UUID)
		}
	}
	p, err := wmamqp.DefaultMarshaler{NotPersistentDeliveryMode: m.notPersistent}.Marshal(msg)
	p.MessageId = msg.UUID
	return p, err
}

func (m amqpMarshaler) Unmarshal(d amqp.Delivery) (*message.Message, error) {
	if d.Acknowledger == nil {
		return nil, errors.New("amqp: empty delivery (the channel closed)")
	}
	msg, err := wmamqp.DefaultMarshaler{}.Unmarshal(d)
	if err != nil {
		return nil, err
	}
	if msg.UUID == "" && d.MessageId != "" {
		msg.UUID = d.MessageId
	}
	return msg, nil
}
