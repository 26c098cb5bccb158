package kinds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// Redis is a Redis stream over watermill-redisstream, as source (a consumer
// group by default) or sink (XADD). The server is a connection of type redis:
//
//	connections:
//	  cache: {type: redis, addr: "127.0.0.1:6379", password_file: /run/secrets/redis}
//	pipelines:
//	  in:  {from: {type: redis, connection: cache, stream: orders}, to: ...}
//	  out: {from: ..., to: {r: {type: redis, connection: cache, stream: audit}}}
//
// A stream entry has the fields _watermill_message_uuid (the UUID), payload
// (the bytes as they are) and metadata (a MessagePack map, loom_key in it):
// the adapter's own layout, so Watermill apps read and write the same entries.
// Each publisher and subscriber dials its own client, since the adapter
// closes the client it was given.
var Redis = pipelines.Kind{
	Name:       "redis",
	Summary:    "Redis Streams, through a consumer group",
	Source:     func() pipelines.SourceConfig { return &RedisSource{} },
	Sink:       func() pipelines.SinkConfig { return &RedisSink{} },
	Connection: func() pipelines.ConnectionConfig { return &RedisConnection{} },
}

// Defaults of the redis kind.
const (
	DefaultRedisAddr = "127.0.0.1:6379"
	// DefaultRedisMaxMessageBytes is Redis' own limit on one string (its
	// proto-max-bulk-len, 512 MB), which the payload field is.
	DefaultRedisMaxMessageBytes = 512 << 20
	// DefaultRedisBlockTime bounds each XREADGROUP, so a Close is never stuck
	// behind a read that blocks forever.
	DefaultRedisBlockTime = 100 * time.Millisecond
)

// RedisConnection is a Redis server: go-redis' options in snake_case.
type RedisConnection struct {
	Addr         string        `koanf:"addr"`
	Username     string        `koanf:"username"`
	Password     client.Secret `koanf:"password"`
	PasswordFile string        `koanf:"password_file"`
	DB           int           `koanf:"db"`
	PoolSize     int           `koanf:"pool_size"`
	DialTimeout  time.Duration `koanf:"dial_timeout"`
	ReadTimeout  time.Duration `koanf:"read_timeout"`
	WriteTimeout time.Duration `koanf:"write_timeout"`
}

// Check implements pipelines.ConnectionConfig.
func (c *RedisConnection) Check() error {
	c.Addr = cmp.Or(c.Addr, DefaultRedisAddr)
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr: want host:port, got %q", c.Addr))
	}
	if _, err := secretOrFile("password", c.Password, c.PasswordFile); err != nil {
		errs = append(errs, err)
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("db: must not be negative, got %d", c.DB))
	}
	if c.PoolSize < 0 {
		errs = append(errs, fmt.Errorf("pool_size: must not be negative, got %d", c.PoolSize))
	}
	errs = append(errs, negativeDurations(duration{"dial_timeout", c.DialTimeout}, duration{"read_timeout", c.ReadTimeout}, duration{"write_timeout", c.WriteTimeout})...)
	return errors.Join(errs...)
}

// NewClient dials a client of its own for one publisher or subscriber.
func (c *RedisConnection) NewClient() (*redis.Client, error) {
	pw, err := secretOrFile("password", c.Password, c.PasswordFile)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(&redis.Options{
		Addr:         c.Addr,
		Username:     c.Username,
		Password:     string(pw),
		DB:           c.DB,
		PoolSize:     c.PoolSize,
		DialTimeout:  c.DialTimeout,
		ReadTimeout:  c.ReadTimeout,
		WriteTimeout: c.WriteTimeout,
	}), nil
}

// RedisSource reads a stream, by default as consumer `consumer` (the host's
// name) of group `consumer_group` (the pipeline's name), so a restart goes
// on where the group was. fan_out: true reads without a group, from
// fan_out_oldest_id, which must then be given: "0" (the stream's start) or
// "$" (only what is added after subscribing: what came before is missed).
type RedisSource struct {
	Connection string `koanf:"connection"`
	Stream     string `koanf:"stream"`
	// FanOut reads without a consumer group: every subscriber gets every entry.
	FanOut bool `koanf:"fan_out"`
	// The adapter's SubscriberConfig, in snake_case.
	ConsumerGroup          string        `koanf:"consumer_group"`
	Consumer               string        `koanf:"consumer"`
	NackResendSleep        time.Duration `koanf:"nack_resend_sleep"`
	BlockTime              time.Duration `koanf:"block_time"`
	ClaimInterval          time.Duration `koanf:"claim_interval"`
	ClaimBatchSize         int64         `koanf:"claim_batch_size"`
	MaxIdleTime            time.Duration `koanf:"max_idle_time"`
	CheckConsumersInterval time.Duration `koanf:"check_consumers_interval"`
	ConsumerTimeout        time.Duration `koanf:"consumer_timeout"`
	OldestID               string        `koanf:"oldest_id"`
	FanOutOldestID         string        `koanf:"fan_out_oldest_id"`
}

// RedisSink adds each message to a stream (XADD).
type RedisSink struct {
	Connection string `koanf:"connection"`
	// Stream defaults to the source's topic (a room's name).
	Stream string `koanf:"stream"`
	// DefaultMaxlen caps the stream's length (approximately, MAXLEN ~); 0 is
	// no cap. Capped streams drop their oldest entries, read or not.
	DefaultMaxlen int64 `koanf:"default_maxlen"`
	// MaxMessageBytes refuses larger payloads (to the dead letters) rather than
	// have Redis refuse them; at most Redis' 512 MB.
	MaxMessageBytes int64 `koanf:"max_message_bytes"`
}

// Check implements pipelines.SourceConfig.
func (c *RedisSource) Check(d pipelines.Deps) error {
	_, err := connectionOf[*RedisConnection](d, c.Connection, "redis")
	errs := []error{err}
	if c.Stream == "" {
		errs = append(errs, errors.New("stream: must be set"))
	}
	if c.FanOut {
		if c.ConsumerGroup != "" || c.Consumer != "" {
			errs = append(errs, errors.New("consumer_group, consumer: fan_out reads without a group; drop them or fan_out"))
		}
		if c.FanOutOldestID == "" {
			errs = append(errs, errors.New(`fan_out_oldest_id: must be set with fan_out: "0" reads the stream from its start, "$" only what is added after subscribing (what came before is missed)`))
		}
	} else {
		if c.FanOutOldestID != "" {
			errs = append(errs, errors.New("fan_out_oldest_id: only with fan_out: true (a group starts at oldest_id)"))
		}
		c.ConsumerGroup = cmp.Or(c.ConsumerGroup, d.Pipeline)
		if c.Consumer == "" {
			c.Consumer, _ = os.Hostname()
			c.Consumer = cmp.Or(c.Consumer, "loombridge")
		}
	}
	c.BlockTime = cmp.Or(c.BlockTime, DefaultRedisBlockTime)
	errs = append(errs, negativeDurations(duration{"block_time", c.BlockTime}, duration{"claim_interval", c.ClaimInterval},
		duration{"max_idle_time", c.MaxIdleTime}, duration{"check_consumers_interval", c.CheckConsumersInterval},
		duration{"consumer_timeout", c.ConsumerTimeout})...)
	if c.NackResendSleep < 0 && c.NackResendSleep != redisstream.NoSleep {
		errs = append(errs, fmt.Errorf("nack_resend_sleep: must not be negative, got %s", c.NackResendSleep))
	}
	if c.ClaimBatchSize < 0 {
		errs = append(errs, fmt.Errorf("claim_batch_size: must not be negative, got %d", c.ClaimBatchSize))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig.
func (c *RedisSource) Topic() string { return c.Stream }

// subscriberConfig is the adapter's config these keys make, without its client.
func (c *RedisSource) subscriberConfig() redisstream.SubscriberConfig {
	return redisstream.SubscriberConfig{
		Consumer:                      c.Consumer,
		ConsumerGroup:                 c.ConsumerGroup,
		NackResendSleep:               c.NackResendSleep,
		BlockTime:                     c.BlockTime,
		ClaimInterval:                 c.ClaimInterval,
		ClaimBatchSize:                c.ClaimBatchSize,
		MaxIdleTime:                   c.MaxIdleTime,
		CheckConsumersInterval:        c.CheckConsumersInterval,
		ConsumerTimeout:               c.ConsumerTimeout,
		OldestId:                      c.OldestID,
		FanOutOldestId:                c.FanOutOldestID,
		DisableIndefiniteInitialBlock: true, // else Close waits on a read that never returns
	}
}

// NewSubscriber implements pipelines.SourceConfig.
func (c *RedisSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	conn, err := connectionOf[*RedisConnection](d, c.Connection, "redis")
	if err != nil {
		return nil, err
	}
	return c.NewSubscriberWith(conn, d.Logger)
}

// NewSubscriberWith builds the subscriber on a connection's keys, with a
// client of its own (the adapter closes it).
func (c *RedisSource) NewSubscriberWith(conn *RedisConnection, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	cl, err := conn.NewClient()
	if err != nil {
		return nil, err
	}
	cfg := c.subscriberConfig()
	cfg.Client = cl
	s, err := redisstream.NewSubscriber(cfg, logger)
	if err != nil {
		_ = cl.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return s, nil
}

// Check implements pipelines.SinkConfig.
func (c *RedisSink) Check(d pipelines.Deps) error {
	_, err := connectionOf[*RedisConnection](d, c.Connection, "redis")
	errs := []error{err}
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, DefaultRedisMaxMessageBytes)
	if c.MaxMessageBytes < 0 || c.MaxMessageBytes > DefaultRedisMaxMessageBytes {
		errs = append(errs, fmt.Errorf("max_message_bytes: must be from 1 to Redis' limit of %d (512 MB), got %d", DefaultRedisMaxMessageBytes, c.MaxMessageBytes))
	}
	if c.DefaultMaxlen < 0 {
		errs = append(errs, fmt.Errorf("default_maxlen: must not be negative, got %d", c.DefaultMaxlen))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SinkConfig.
func (c *RedisSink) Topic() string { return c.Stream }

// NewPublisher implements pipelines.SinkConfig.
func (c *RedisSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	conn, err := connectionOf[*RedisConnection](d, c.Connection, "redis")
	if err != nil {
		return nil, err
	}
	return c.NewPublisherWith(conn, d.Logger)
}

// NewPublisherWith builds the publisher on a connection's keys, with a
// client of its own (the adapter closes it).
func (c *RedisSink) NewPublisherWith(conn *RedisConnection, logger watermill.LoggerAdapter) (message.Publisher, error) {
	cl, err := conn.NewClient()
	if err != nil {
		return nil, err
	}
	p, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: cl, DefaultMaxlen: c.DefaultMaxlen}, logger)
	if err != nil {
		_ = cl.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return sizeLimited{Publisher: p, limit: func(m *message.Message) error {
		if n := int64(len(m.Payload)); n > c.MaxMessageBytes {
			return fmt.Errorf("%w: message %s has a %d-byte payload, over the redis sink's max_message_bytes of %d (Redis' own limit for one string is 512 MB)", errTooLarge, m.UUID, n, c.MaxMessageBytes)
		}
		return nil
	}}, nil
}
