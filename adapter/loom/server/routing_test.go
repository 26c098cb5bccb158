package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// assignment maps each partition to the winning consumer id.
func assignment(rm *room, partitions int) map[uint64]uint64 {
	out := map[uint64]uint64{}
	for p := range uint64(partitions) {
		var best *consumer
		var bestScore uint64
		for _, c := range rm.consumers {
			if sc := score(p, c.id); best == nil || sc > bestScore {
				best, bestScore = c, sc
			}
		}
		out[p] = best.id
	}
	return out
}

func TestRendezvousMovesOnlyWhatChanges(t *testing.T) {
	const partitions = 4096
	rm := newRoom("r")
	for id := uint64(1); id <= 5; id++ {
		rm.consumers = append(rm.consumers, &consumer{id: id})
	}
	before := assignment(rm, partitions)
	share := map[uint64]int{}
	for _, id := range before {
		share[id]++
	}
	for id, n := range share {
		if n < partitions/5/2 {
			t.Errorf("consumer %d wins only %d of %d partitions", id, n, partitions)
		}
	}

	rm.consumers = append(rm.consumers, &consumer{id: 6})
	after := assignment(rm, partitions)
	moved := 0
	for p, id := range after {
		if id != before[p] {
			moved++
			if id != 6 {
				t.Fatalf("partition %d moved from %d to %d, not to the new consumer", p, before[p], id)
			}
		}
	}
	if moved == 0 {
		t.Fatal("the new consumer won no partition")
	}

	rm.consumers = append(rm.consumers[:2], rm.consumers[3:]...) // consumer 3 leaves
	final := assignment(rm, partitions)
	for p, id := range final {
		if id != after[p] && after[p] != 3 {
			t.Fatalf("partition %d moved from %d to %d though its consumer stayed", p, after[p], id)
		}
	}
	// pick agrees with the partition of a key.
	for i := range 100 {
		key := fmt.Sprint("key-", i)
		if got := rm.pick(key, partitions).id; got != final[partitionOf(key, partitions)] {
			t.Fatalf("pick(%q) = %d", key, got)
		}
	}
}

// sendKeys sends one message per key and returns which consumer got each.
func sendKeys(t *testing.T, p *sess, out chan got, keys []string) map[string]int {
	t.Helper()
	for _, k := range keys {
		p.write(msg(k, 0, true, []byte(k)))
	}
	where := map[string]int{}
	for range keys {
		g := recv(t, out)
		where[g.hdr.Key] = g.from
	}
	return where
}

func TestRoutingStable(t *testing.T) {
	s := start(t, Config{})
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 64)
	quicConsumer(t, conn, "r", "", 0, out, true)
	quicConsumer(t, conn, "r", "", 1, out, true)
	if err := s.WaitConsumers(testCtx(t), "r", 2); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := range 64 {
		keys = append(keys, fmt.Sprint("key-", i))
	}
	p := openQUIC(t, conn, wire.RoleProducer, "r", "")
	first := sendKeys(t, p, out, keys)
	count := map[int]int{}
	for _, from := range first {
		count[from]++
	}
	if count[0] == 0 || count[1] == 0 {
		t.Fatalf("one consumer got every key: %v", count)
	}
	if again := sendKeys(t, p, out, keys); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("same keys routed differently:\n%v\n%v", first, again)
	}

	quicConsumer(t, conn, "r", "", 2, out, true)
	if err := s.WaitConsumers(testCtx(t), "r", 3); err != nil {
		t.Fatal(err)
	}
	third := sendKeys(t, p, out, keys)
	moved := 0
	for k, from := range third {
		if from != first[k] {
			moved++
			if from != 2 {
				t.Fatalf("key %q moved from consumer %d to %d", k, first[k], from)
			}
		}
	}
	if moved == 0 || moved == len(keys) {
		t.Fatalf("%d of %d keys moved to the new consumer", moved, len(keys))
	}
	producerFinish(t, p)
}

func TestOneInFlightAndProducerPacing(t *testing.T) {
	s := start(t, Config{})
	conn := dialQUIC(t, s, nil, nil)
	out := make(chan got, 4)
	c := quicConsumer(t, conn, "", "", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
		t.Fatal(err)
	}
	a := openQUIC(t, conn, wire.RoleProducer, "", "")
	b := openQUIC(t, conn, wire.RoleProducer, "", "")
	// a sends two messages at once; the second must not be read before the first is acked.
	a.write(append(msg("a1", 0, true, []byte("1")), msg("a2", 0, true, []byte("2"))...))
	g := recv(t, out)
	checkBody(t, g, "a1", []byte("1"))
	b.write(msg("b1", 0, true, []byte("3")))
	eventually(t, "b1 queued", func() bool { return s.queued("") == 1 })
	recvNone(t, out, 200*time.Millisecond) // b1 waits for the ack of a1
	if st := s.Stats(); st.Received != 2 {
		t.Fatalf("Received = %d: producer a was read past its unacked message", st.Received)
	}
	c.ack(g.hdr.ID + 100) // unknown id: ignored
	c.write([]byte{7, 1}) // unknown frame type: ignored
	recvNone(t, out, 100*time.Millisecond)
	c.ack(g.hdr.ID)
	g = recv(t, out)
	checkBody(t, g, "b1", []byte("3"))
	c.ack(g.hdr.ID)
	g = recv(t, out)
	checkBody(t, g, "a2", []byte("2"))
	if g.hdr.ID != 3 {
		t.Fatalf("a2 has id %d", g.hdr.ID)
	}
	c.ack(g.hdr.ID)
	producerFinish(t, a)
	producerFinish(t, b)
	if st := s.Stats(); st.Received != 3 || st.Acked != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBacklogFull(t *testing.T) {
	for _, policy := range []string{FullDropNewest, FullDropOldest, FullBlock} {
		t.Run(policy, func(t *testing.T) {
			s := start(t, Config{MaxBacklogDepth: 2, PartitionFull: policy})
			conn := dialQUIC(t, s, nil, nil)
			out := make(chan got, 8)
			c := quicConsumer(t, conn, "", "", 0, out, false)
			if err := s.WaitConsumers(testCtx(t), "", 1); err != nil {
				t.Fatal(err)
			}
			var ps []*sess
			for i := 1; i <= 4; i++ {
				p := openQUIC(t, conn, wire.RoleProducer, "", "")
				ps = append(ps, p)
				key := fmt.Sprint("m", i)
				p.write(msg(key, 0, true, []byte(key)))
				switch i {
				case 1:
					checkBody(t, recv(t, out), "m1", []byte("m1")) // in flight, not acked
				case 2, 3:
					eventually(t, "queued", func() bool { return s.queued("") == i-1 })
				}
			}
			ackNext := func(want string) {
				t.Helper()
				g := recv(t, out)
				checkBody(t, g, want, []byte(want))
				c.ack(g.hdr.ID)
			}
			switch policy {
			case FullDropNewest:
				eventually(t, "drop", func() bool { return s.Stats().DroppedFull == 1 })
				c.ack(1)
				ackNext("m2")
				ackNext("m3")
				recvNone(t, out, 100*time.Millisecond)
				// m4's producer was released at once.
				ps[3].write(msg("m5", 0, true, []byte("m5")))
				ackNext("m5")
			case FullDropOldest:
				eventually(t, "drop", func() bool { return s.Stats().DroppedFull == 1 })
				c.ack(1)
				ackNext("m3")
				// m2's producer was released (loomd might strand it).
				ps[1].write(msg("m5", 0, true, []byte("m5")))
				ackNext("m4")
				ackNext("m5")
			case FullBlock:
				// m4's producer waits for room, and is not read further meanwhile. Its
				// header is read first (waited for: on a loaded machine that can take
				// longer than the pause below); the pause gives a wrong read of m4b
				// time to show.
				eventually(t, "m4 read", func() bool { return s.Stats().Received == 4 })
				ps[3].write(msg("m4b", 0, true, []byte("m4b")))
				time.Sleep(100 * time.Millisecond)
				if st := s.Stats(); st.DroppedFull != 0 || st.Received != 4 || s.queued("") != 2 {
					t.Fatalf("stats %+v, queued %d", st, s.queued(""))
				}
				c.ack(1)
				ackNext("m2")
				ackNext("m3")
				ackNext("m4")
				ackNext("m4b")
				if st := s.Stats(); st.DroppedFull != 0 {
					t.Fatalf("stats %+v", st)
				}
			}
			for _, p := range ps {
				producerFinish(t, p)
			}
		})
	}
}
