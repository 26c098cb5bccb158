package pipelines_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Loom -> Kafka -> Loom, like the NATS and RabbitMQ round trips. No Kafka
// broker runs on this machine: the test runs only when KAFKA_BROKERS names
// one or more (host:port, comma-separated).
func TestKafkaRoundTrip(t *testing.T) {
	brokers := os.Getenv("KAFKA_BROKERS")
	if brokers == "" {
		t.Skip("KAFKA_BROKERS is not set: no Kafka broker to test against")
	}
	const n = 10000
	s := suffix()
	list := `["` + strings.Join(strings.Split(brokers, ","), `","`) + `"]`
	rt := startRoundTrip(t, mixedMessages(n),
		`{type: kafka, brokers: `+list+`}`,
		fmt.Sprintf(`{type: kafka, connection: broker, topic: lbtest_rt_%s}`, s),
		fmt.Sprintf(`{type: kafka, connection: broker, topic: lbtest_rt_%s, consumer_group: rt_%s}`, s, s))
	rt.wait()
	closeEngine(t, rt.engine)
	dups := rt.check()
	t.Logf("%d messages loom -> kafka -> loom in %s, %d duplicates", n, rt.duration, dups)
}
