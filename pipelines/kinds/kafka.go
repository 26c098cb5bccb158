package kinds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// Kafka is a Kafka topic, as source (a consumer group) or sink, over
// watermill-kafka/v3 (sarama). The cluster is named by a connection of type
// kafka:
//
//	connections:
//	  events: {type: kafka, brokers: ["127.0.0.1:9092"]}
//	pipelines:
//	  in:  {from: {type: kafka, connection: events, topic: orders, consumer_group: loombridge_in}, ...}
//	  out: {..., to: {events: {type: kafka, connection: events, topic: audit}}}
//
// The UUID is the _watermill_message_uuid record header, each metadata entry
// a header of its own, the payload the record's value, and loom_key also the
// record's key (so one key stays in one partition, in order). A sink waits
// for every in-sync replica (acks=all). Records are at most max_message_bytes
// (1,000,000 by default, the broker's message.max.bytes is about 1 MiB): a
// larger one fails whole and goes to the dead letters. The publisher dials
// the brokers at start: a cluster that does not answer within dial_timeout
// fails the pipeline's start, naming it.
var Kafka = pipelines.Kind{
	Name:       "kafka",
	Summary:    "Kafka topics, through a consumer group",
	Source:     func() pipelines.SourceConfig { return &KafkaSource{} },
	Sink:       func() pipelines.SinkConfig { return &KafkaSink{} },
	Connection: func() pipelines.ConnectionConfig { return &KafkaConnection{} },
}

// Defaults of the kafka kind.
const (
	DefaultKafkaDialTimeout     = 10 * time.Second
	DefaultKafkaVersion         = "2.1.0"
	DefaultKafkaMaxMessageBytes = 1000000
)

// KafkaConnection is connections.<name> with type: kafka.
type KafkaConnection struct {
	// Brokers are the bootstrap brokers, host:port each.
	Brokers []string `koanf:"brokers"`
	// ClientID names the client to the brokers; default "loombridge".
	ClientID string `koanf:"client_id"`
	// Version is the oldest Kafka version the cluster runs (default 2.1.0).
	Version string `koanf:"version"`
	// DialTimeout bounds each connection attempt.
	DialTimeout time.Duration `koanf:"dial_timeout"`
	SASL        KafkaSASL     `koanf:"sasl"`
	TLS         BrokerTLS     `koanf:"tls"`
}

// KafkaSASL authenticates by SASL.
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty is no SASL.
	Mechanism    string        `koanf:"mechanism"`
	User         string        `koanf:"user"`
	Password     client.Secret `koanf:"password"`
	PasswordFile string        `koanf:"password_file"`
}

// Check implements pipelines.ConnectionConfig.
func (c *KafkaConnection) Check() error {
	c.ClientID = cmp.Or(c.ClientID, "loombridge")
	c.Version = cmp.Or(c.Version, DefaultKafkaVersion)
	c.DialTimeout = cmp.Or(c.DialTimeout, DefaultKafkaDialTimeout)
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: must list at least one host:port"))
	}
	for _, b := range c.Brokers {
		if strings.Contains(b, "://") || !strings.Contains(b, ":") {
			errs = append(errs, fmt.Errorf("brokers: want host:port, got %q", b))
		}
	}
	if c.DialTimeout < 0 {
		errs = append(errs, errors.New("dial_timeout: must be positive"))
	}
	_, err := c.sarama()
	return errors.Join(append(errs, err)...)
}

// sarama is the client config for this connection; the password is read here.
func (c *KafkaConnection) sarama() (*sarama.Config, error) {
	cfg := sarama.NewConfig()
	var errs []error
	v, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		errs = append(errs, fmt.Errorf("version: %w", err))
	}
	cfg.Version = v
	cfg.ClientID = c.ClientID
	cfg.Net.DialTimeout = c.DialTimeout
	// Fail a start against a cluster that does not answer in seconds, not minutes.
	cfg.Metadata.Retry.Max = 1
	cfg.Metadata.Retry.Backoff = 250 * time.Millisecond
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.User != "" || c.SASL.Password != "" || c.SASL.PasswordFile != "" {
			errs = append(errs, errors.New("sasl.mechanism: must be set with sasl.user"))
		}
	case sarama.SASLTypePlaintext:
		pw, err := secret("sasl.password", c.SASL.Password, c.SASL.PasswordFile)
		errs = append(errs, err)
		cfg.Net.SASL.Enable = true
		cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		cfg.Net.SASL.User, cfg.Net.SASL.Password = c.SASL.User, pw
	default:
		errs = append(errs, fmt.Errorf("sasl.mechanism: PLAIN is supported, got %q", c.SASL.Mechanism))
	}
	tlsCfg, err := c.TLS.config()
	errs = append(errs, err)
	if tlsCfg != nil {
		cfg.Net.TLS.Enable, cfg.Net.TLS.Config = true, tlsCfg
	}
	return cfg, errors.Join(errs...)
}

// KafkaSource reads a topic in a consumer group.
type KafkaSource struct {
	Connection string `koanf:"connection"`
	// TopicName is the topic read.
	TopicName string `koanf:"topic"`
	// ConsumerGroup commits the offsets, so a restart resumes; default
	// loombridge_<pipeline>.
	ConsumerGroup string `koanf:"consumer_group"`
	// InitialOffset is where a new group starts: oldest (default) or newest.
	InitialOffset string `koanf:"initial_offset"`
	// NackResendSleep is the pause before a nacked message is handled again.
	NackResendSleep time.Duration `koanf:"nack_resend_sleep"`
	// ReconnectRetrySleep is the pause between two tries to reconnect.
	ReconnectRetrySleep time.Duration `koanf:"reconnect_retry_sleep"`
}

// KafkaSink publishes to a topic.
type KafkaSink struct {
	Connection string `koanf:"connection"`
	// TopicName is the topic written.
	TopicName string `koanf:"topic"`
	// MaxMessageBytes refuses larger records before they are sent; keep it at
	// most the broker's message.max.bytes.
	MaxMessageBytes int `koanf:"max_message_bytes"`
}

func checkTopic(topic string) error {
	if topic == "" {
		return errors.New("topic: must be set")
	}
	if len(topic) > 249 || strings.Trim(topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return fmt.Errorf("topic: %q is not a Kafka topic (letters, digits, '.', '_', '-'; at most 249)", topic)
	}
	return nil
}

// Check implements pipelines.SourceConfig.
func (c *KafkaSource) Check(d pipelines.Deps) error {
	c.ConsumerGroup = cmp.Or(c.ConsumerGroup, "loombridge_"+d.Pipeline)
	c.InitialOffset = cmp.Or(c.InitialOffset, "oldest")
	_, err := connectionOf[*KafkaConnection](d, c.Connection, "kafka")
	errs := []error{err, checkTopic(c.TopicName)}
	if c.InitialOffset != "oldest" && c.InitialOffset != "newest" {
		errs = append(errs, fmt.Errorf("initial_offset: oldest or newest, got %q", c.InitialOffset))
	}
	if c.NackResendSleep < 0 || c.ReconnectRetrySleep < 0 {
		errs = append(errs, errors.New("nack_resend_sleep, reconnect_retry_sleep: must not be negative"))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig.
func (c *KafkaSource) Topic() string { return c.TopicName }

// kafkaConfig returns the connection called name and a sarama config for it,
// which the source or sink then completes.
func kafkaConfig(d pipelines.Deps, name string) (*KafkaConnection, *sarama.Config, error) {
	conn, err := connectionOf[*KafkaConnection](d, name, "kafka")
	if err != nil {
		return nil, nil, err
	}
	sc, err := conn.sarama()
	return conn, sc, err
}

// NewSubscriber implements pipelines.SourceConfig.
func (c *KafkaSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	conn, sc, err := kafkaConfig(d, c.Connection)
	if err != nil {
		return nil, err
	}
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	if c.InitialOffset == "newest" {
		sc.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers:               conn.Brokers,
		Unmarshaler:           wmkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: sc,
		ConsumerGroup:         c.ConsumerGroup,
		NackResendSleep:       c.NackResendSleep,
		ReconnectRetrySleep:   c.ReconnectRetrySleep,
	}, d.Logger)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return sub, nil
}

// Check implements pipelines.SinkConfig.
func (c *KafkaSink) Check(d pipelines.Deps) error {
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultKafkaMaxMessageBytes)
	_, err := connectionOf[*KafkaConnection](d, c.Connection, "kafka")
	errs := []error{err, checkTopic(c.TopicName)}
	if c.MaxMessageBytes < 1 {
		errs = append(errs, fmt.Errorf("max_message_bytes: must be positive, got %d", c.MaxMessageBytes))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SinkConfig.
func (c *KafkaSink) Topic() string { return c.TopicName }

// NewPublisher implements pipelines.SinkConfig. sarama dials the brokers
// here; a cluster that does not answer fails within about two dial_timeouts.
func (c *KafkaSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	conn, sc, err := kafkaConfig(d, c.Connection)
	if err != nil {
		return nil, err
	}
	sc.Producer.Return.Successes = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Retry.Max = 10
	sc.Producer.MaxMessageBytes = c.MaxMessageBytes
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers:               conn.Brokers,
		Marshaler:             wmkafka.NewWithPartitioningMarshaler(func(_ string, m *message.Message) (string, error) { return m.Metadata.Get("loom_key"), nil }),
		OverwriteSaramaConfig: sc,
	}, d.Logger)
	if err != nil {
		return nil, fmt.Errorf("kafka: brokers %s did not answer: %w", strings.Join(conn.Brokers, ","), err)
	}
	// Refused before sending: a record over max_message_bytes.
	return sizeLimited{Publisher: pub, limit: func(m *message.Message) error {
		size := len(m.Payload) + len(m.UUID) + len(wmkafka.UUIDHeaderKey) + len(m.Metadata.Get("loom_key")) + 64
		for k, v := range m.Metadata {
			size += len(k) + len(v) + 8
		}
		if size > c.MaxMessageBytes {
			return &TooLargeError{Backend: "kafka", UUID: m.UUID, Size: size, Limit: c.MaxMessageBytes,
				Setting: "the sink's max_message_bytes; the broker's message.max.bytes (about 1 MiB by default) must allow it too"}
		}
		return nil
	}}, nil
}
