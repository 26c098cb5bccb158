package pipelines_test

import (
	"fmt"
	"os/exec"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const rabbitURI = "amqp://guest:guest@" + rabbitAddr + "/"

// rabbitQueue deletes the test's queue at the end.
func rabbitQueue(t *testing.T, queue string) {
	t.Cleanup(func() {
		conn, err := amqp.Dial(rabbitURI)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err == nil {
			_, err = ch.QueueDelete(queue, false, false, false)
			ch.Close()
		}
		if err != nil {
			t.Logf("cleanup: delete queue %s: %v", queue, err)
		}
	})
}

func amqpRoundTrip(t *testing.T, n int) *roundTrip {
	needBroker(t, "rabbitmq", rabbitAddr)
	queue := "lbtest_rt_" + suffix()
	rabbitQueue(t, queue)
	return startRoundTrip(t, mixedMessages(n),
		`{type: amqp, amqp_uri: "`+rabbitURI+`"}`,
		fmt.Sprintf(`{type: amqp, connection: broker, queue: %s}`, queue),
		fmt.Sprintf(`{type: amqp, connection: broker, queue: %s}`, queue))
}

// 10,000 messages of mixed sizes (empty, binary, up to 200 KiB) from Loom to
// RabbitMQ and from RabbitMQ back to Loom: counts match; payloads, UUIDs,
// keys and metadata are intact.
func TestAMQPRoundTrip(t *testing.T) {
	n := 10000
	if raceEnabled {
		n = 1000 // each Loom hop costs several times the CPU under -race; .ci/run runs 10,000 without
	}
	rt := amqpRoundTrip(t, n)
	rt.wait()
	st := rt.engine.Stats()
	closeEngine(t, rt.engine)
	dups := rt.check()
	t.Logf("%d messages loom -> amqp -> loom in %s (%.0f msg/s end to end), %d duplicates; to_broker %+v from_broker %+v",
		n, rt.duration.Round(time.Millisecond), float64(n)/rt.duration.Seconds(), dups, st["to_broker"], st["from_broker"])
	if dups != 0 {
		t.Errorf("%d duplicates without any failure", dups)
	}
}

// ensureRabbit starts RabbitMQ's app (or the whole server) if it does not
// answer, and waits for it.
func ensureRabbit(t *testing.T) {
	if c, err := dialQuick(rabbitAddr); err == nil {
		c.Close()
		return
	}
	if out, err := exec.Command("rabbitmqctl", "start_app").CombinedOutput(); err != nil {
		t.Logf("rabbitmqctl start_app: %v: %s; starting the server", err, out)
		if out, err := exec.Command("rabbitmq-server", "-detached").CombinedOutput(); err != nil {
			t.Errorf("rabbitmq-server -detached: %v: %s", err, out)
		}
	}
	waitService(t, "rabbitmq", rabbitAddr)
}
