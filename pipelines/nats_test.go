package pipelines_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/loombridge/loombridge/pipelines"
)

// dropNATSStream deletes a test's stream.
func dropNATSStream(t testing.TB, stream string) {
	nc, err := nats.Connect("nats://"+natsAddr, nats.Timeout(10*time.Second))
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err == nil {
		err = js.DeleteStream(stream)
	}
	if err != nil {
		t.Logf("cleanup: delete stream %s: %v", stream, err)
	}
}

// nats-server is stopped and started again while messages cross: every
// message the feed published (confirm mode: a consumer of rt_in took it)
// reaches the end (all of them, since the run completes); duplicates are
// counted and logged.
func TestNATSRestartLosesNothing(t *testing.T) {
	n := 5000
	if raceEnabled {
		n = 1000 // .ci/run runs 5,000 without -race
	}
	rt := startRoundTrip(t, brokerKind(t, "nats"), mixedMessages(n))
	t.Cleanup(func() { ensureNATS(t) })
	waitLong(t, "the run to be under way", 10*time.Minute, func() bool { return countLines(rt.outPath()) >= n/5 })
	restartService(t, "nats", natsAddr,
		[]string{"start-stop-daemon", "--stop", "--oknodo", "--retry", "30", "--exec", "/usr/sbin/nats-server"},
		natsStartCommand, 2*time.Second)
	rt.wait()
	closeEngine(t, rt.engine)
	dups := rt.check()
	t.Logf("nats restart: %d messages, %d duplicates, all %d delivered", n, dups, n)
}

var natsStartCommand = []string{"start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server", "--",
	"-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log"}

// ensureNATS starts nats-server if it does not answer, and waits for it.
func ensureNATS(t *testing.T) {
	if c, err := dialQuick(natsAddr); err == nil {
		c.Close()
		return
	}
	if out, err := execCombined(natsStartCommand...); err != nil {
		t.Errorf("starting nats-server: %v: %s", err, out)
	}
	waitService(t, "nats", natsAddr)
}

// A 64 MiB Loom message (64 MiB less 1 KiB of payload, so that the envelope
// fits Loom's own limit) into NATS (max_payload 1 MiB here) fails whole with an
// error naming the limit and goes to the dead letters; nothing reaches the
// stream. Under -race the message is 4 MiB (still over the limit): 64 MiB
// through the Loom hop took minutes on a loaded machine, and the Loom
// producer, its confirm late, sent it again (at least once: each copy is
// dead-lettered whole). .ci/run runs the 64 MiB size without -race.
func TestNATSTooLargeGoesToDeadLetters(t *testing.T) {
	needBroker(t, "nats", natsAddr)
	size := 67107840
	if raceEnabled {
		size = 4 << 20
	}
	dir := t.TempDir()
	s := suffix()
	subject, stream := "lbtest.big."+s, "LBTEST_BIG_"+s
	t.Cleanup(func() { dropNATSStream(t, stream) })
	cfg := parse(t, fill(`
log: {stats_interval: 0}
connections:
  local: {embedded: true}
  bus: {type: nats, url: "nats://@ADDR@"}
pipelines:
  feed:
    from: {type: generate, interval: 0, count: 1, payload: big, pad_to: @SIZE@}
    to:
      room: {type: loom, connection: local, room: big, format: envelope}
  to_nats:
    from: {type: loom, connection: local, room: big}
    to:
      bus: {type: nats, connection: bus, subject: @SUBJECT@, stream: @STREAM@}
    retry: {max_retries: 1, initial_interval: 1ms, max_interval: 1ms}
    dead_letter: {type: file, dir: @DIR@, topic: dead, fsync: never}
`, "@ADDR@", natsAddr, "@SUBJECT@", subject, "@STREAM@", stream, "@DIR@", dir, "@SIZE@", strconv.Itoa(size)))
	e := startEngine(t, cfg)
	dead := filepath.Join(dir, "dead.jsonl")
	waitLong(t, "the dead letter", 5*time.Minute, func() bool { return countLines(dead) >= 1 })
	closeEngine(t, e)
	msgs := readMessages(t, dead)
	if len(msgs) == 0 {
		t.Fatal("no dead letter")
	}
	var reason string
	for _, m := range msgs {
		if m.UUID != msgs[0].UUID {
			t.Errorf("dead letters of two messages (%s, %s); one was sent", msgs[0].UUID, m.UUID)
		}
		if len(m.Payload) != size {
			t.Errorf("dead letter payload is %d bytes, want %d: not the whole message", len(m.Payload), size)
		}
		reason = m.Metadata["reason_poisoned"]
		if !strings.Contains(reason, "max_payload") || !strings.Contains(reason, "1048576") || m.Metadata[pipelines.MetadataDeadSinks] != "bus" {
			t.Errorf("dead letter metadata %v: want the limit (max_payload, 1048576) named", m.Metadata)
		}
	}
	if len(msgs) > 1 {
		t.Logf("%d dead letters of the one message: the Loom hop delivered it again (at least once)", len(msgs))
	}
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	info, err := js.StreamInfo(stream)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("stream has %d messages, want none", info.State.Msgs)
	}
	t.Logf("dead letter reason: %s", reason)
}
