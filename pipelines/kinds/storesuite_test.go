package kinds_test

// Watermill's universal Pub/Sub suite (github.com/ThreeDotsLabs/watermill/pubsub/tests)
// run on the publishers and subscribers the redis and sql kinds build from a parsed
// configuration, against the real servers on loopback (.ci/services starts them), so
// the adapter config the kinds generate is the one proven. Only what a test needs to
// vary is changed on the parsed config: the consumer group the suite asks for, and a
// consumer name per subscriber (each stands for another loombridge instance).
// Topics carry a prefix of this run, and what the suite created is dropped at the end.

import (
	"context"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"

	"github.com/loombridge/loombridge/internal/brokertest"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

func parseConfig(t *testing.T, yaml string) *pipelines.Config {
	t.Helper()
	cfg, err := pipelines.Parse([]byte(yaml), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// suitePrefix names what one run of the suite creates, for the clean-up.
func suitePrefix() string { return "lbs" + strings.ToLower(watermill.NewShortUUID()[:6]) }

func suiteFeatures(prefix string, f tests.Features) tests.Features {
	// Under -race every message costs several times the CPU, and the full
	// counts took minutes on a loaded 2-core machine: -race runs upstream's
	// short counts (.ci/run's full-size run covers the Loom adapter's suite,
	// not these).
	f.ForceShort = raceEnabled
	f.GenerateTopicFunc = func(tctx tests.TestContext) string { return prefix + "_" + string(tctx.TestID) }
	return f
}

func TestUniversalRedis(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, `
connections:
  r: {type: redis, addr: "`+brokertest.RedisAddr+`"}
pipelines:
  in:
    from: {type: redis, connection: r, stream: s, block_time: 10ms, claim_interval: 3s, max_idle_time: 5s}
    to: {o: {type: stdout}}
  out:
    from: {type: generate}
    to: {r: {type: redis, connection: r}}
`)
	conn := cfg.Connections["r"].Broker.(*kinds.RedisConnection)
	src := *cfg.Pipelines["in"].From.Source.(*kinds.RedisSource)
	sink := cfg.Pipelines["out"].To["r"].Sink.(*kinds.RedisSink)
	logger := watermill.NopLogger{}
	prefix := suitePrefix()
	t.Cleanup(func() { dropRedisStreams(t, conn, prefix) })
	withGroup := pubSubWithGroup(
		func() (message.Publisher, error) { return sink.NewPublisherWith(conn, logger) },
		func(group string) (message.Subscriber, error) {
			s := src
			s.ConsumerGroup, s.Consumer = group, watermill.NewShortUUID()
			return s.NewSubscriberWith(conn, logger)
		})
	tests.TestPubSub(t, suiteFeatures(prefix, tests.Features{
		ConsumerGroups:                      true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		NewSubscriberReceivesOldMessages:    true,
	}), func(t *testing.T) (message.Publisher, message.Subscriber) {
		return withGroup(t, watermill.NewShortUUID())
	}, withGroup)
}

func dropRedisStreams(t *testing.T, conn *kinds.RedisConnection, prefix string) {
	cl, err := conn.NewClient()
	if err != nil {
		t.Error(err)
		return
	}
	defer cl.Close()
	if err := brokertest.DropKeys(cl, prefix+"_"); err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// pubSubWithGroup is the universal suite's constructor of a publisher and a
// subscriber in a consumer group, from the kind's two constructors; both are
// closed at the test's end.
func pubSubWithGroup(newPub func() (message.Publisher, error), newSub func(group string) (message.Subscriber, error)) func(*testing.T, string) (message.Publisher, message.Subscriber) {
	return func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := newPub()
		if err != nil {
			t.Fatal(err)
		}
		sub, err := newSub(group)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, pub, sub)
		return pub, sub
	}
}

// closeAtEnd closes what a suite test left open (some upstream tests do
// not close their Pub/Sub), so goleak sees only real leaks.
func closeAtEnd(t *testing.T, pub message.Publisher, sub message.Subscriber) {
	t.Cleanup(func() {
		_ = sub.Close()
		_ = pub.Close()
	})
}

func TestUniversalPostgres(t *testing.T) { sqlSuite(t, "postgres", brokertest.PostgresDSN) }

func TestUniversalMySQL(t *testing.T) { sqlSuite(t, "mysql", brokertest.MySQLDSN) }

func sqlSuite(t *testing.T, driver, dsn string) {
	t.Parallel()
	cfg := parseConfig(t, `
connections:
  db: {type: sql, driver: `+driver+`, dsn: "`+dsn+`"}
pipelines:
  in:
    from: {type: sql, connection: db, table: t, poll_interval: 1ms, resend_interval: 5ms}
    to: {o: {type: stdout}}
  out:
    from: {type: generate}
    to: {r: {type: sql, connection: db, table: t}}
`)
	conn := cfg.Connections["db"].Broker.(*kinds.SQLConnection)
	src := *cfg.Pipelines["in"].From.Source.(*kinds.SQLSource)
	sink := cfg.Pipelines["out"].To["r"].Sink.(*kinds.SQLSink)
	logger := watermill.NopLogger{}
	prefix := suitePrefix()
	t.Cleanup(func() { dropSQLTables(t, conn, prefix) })
	withGroup := pubSubWithGroup(
		func() (message.Publisher, error) { return sink.NewPublisherWith(context.Background(), conn, logger) },
		func(group string) (message.Subscriber, error) {
			s := src
			s.ConsumerGroup = group
			return s.NewSubscriberWith(conn, logger)
		})
	tests.TestPubSub(t, suiteFeatures(prefix, tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: true,
		GuaranteedOrder:     true,
		Persistent:          true,
	}), func(t *testing.T) (message.Publisher, message.Subscriber) {
		return withGroup(t, "")
	}, withGroup)
}

// dropSQLTables drops the tables whose names start with prefix.
func dropSQLTables(t *testing.T, conn *kinds.SQLConnection, prefix string) {
	db, err := conn.Open()
	if err != nil {
		t.Error(err)
		return
	}
	defer db.Close()
	if err := brokertest.DropTables(db, conn.Driver, prefix); err != nil {
		t.Errorf("clean-up: %v", err)
	}
}
