package pipelines_test

import (
	"os/exec"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

const rabbitURI = "amqp://guest:guest@" + rabbitAddr + "/"

// dropRabbitQueue deletes a test's queue.
func dropRabbitQueue(t testing.TB, queue string) {
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
