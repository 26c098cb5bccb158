package kinds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/internal/brokertest"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// Many concurrent Publish calls through several sinks into one table while a
// consumer group reads it: every row the sinks inserted reaches the source.
// The source reads the adapter's default batches of 100 and takes a
// millisecond per message, so its read transactions hold their gap locks
// long enough for INSERTs to queue behind them: without the sinks' table
// lock this lost 63 to 68 rows of 4,000 in each of 3 runs. On MySQL/MariaDB the
// offsets are AUTO_INCREMENT values, taken before the row is in the table: an
// INSERT that took offset 10 can land after one that took 11 was read and its
// offset acked, and the group, reading offset > 11 from then on, would never
// see row 10. The sink must not let that happen.
func TestSQLConcurrentPublishersLoseNothing(t *testing.T) {
	for _, c := range []struct{ driver, dsn string }{
		{"mysql", brokertest.MySQLDSN},
		{"postgres", brokertest.PostgresDSN},
	} {
		t.Run(c.driver, func(t *testing.T) { sqlConcurrentPublishers(t, c.driver, c.dsn) })
	}
}

func sqlConcurrentPublishers(t *testing.T, driver, dsn string) {
	cfg := parseConfig(t, `
connections:
  db: {type: sql, driver: `+driver+`, dsn: "`+dsn+`"}
pipelines:
  in:
    from: {type: sql, connection: db, table: t, poll_interval: 1ms, subscribe_batch_size: 100}
    to: {o: {type: stdout}}
  out:
    from: {type: generate}
    to: {r: {type: sql, connection: db, table: t}}
`)
	conn := cfg.Connections["db"].Broker.(*kinds.SQLConnection)
	src := *cfg.Pipelines["in"].From.Source.(*kinds.SQLSource)
	sink := *cfg.Pipelines["out"].To["r"].Sink.(*kinds.SQLSink)
	prefix := suitePrefix()
	t.Cleanup(func() { dropSQLTables(t, conn, prefix) })
	table := prefix + "_concurrent"
	src.Table, sink.Table = table, table
	logger := watermill.NopLogger{}

	// Several sinks, as several pipelines or loombridge processes would
	// have, each with its own pool.
	pubs := make([]message.Publisher, 8)
	for i := range pubs {
		pub, err := sink.NewPublisherWith(context.Background(), conn, logger)
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		pubs[i] = pub
	}
	sub, err := src.NewSubscriberWith(conn, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, table)
	if err != nil {
		t.Fatal(err)
	}

	n, publishers := 4000, 48
	if raceEnabled {
		n = 2000
	}
	got := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			mu.Lock()
			got[m.UUID]++
			mu.Unlock()
			// A pipeline takes a moment per message, while the batch's
			// read transaction (and its locks) stays open.
			time.Sleep(time.Millisecond)
			m.Ack()
		}
	}()

	next := make(chan int)
	var wg sync.WaitGroup
	for w := range publishers {
		pub := pubs[w%len(pubs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := pub.Publish(table, message.NewMessage(fmt.Sprintf("m%d", i), []byte("x"))); err != nil {
					t.Errorf("publish m%d: %v", i, err)
				}
			}
		}()
	}
	start := time.Now()
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("%d rows inserted by %d goroutines through %d sinks in %s", n, publishers, len(pubs), time.Since(start).Round(time.Millisecond))

	// Every row is in the table now; the group reads the rest within moments
	// (the deadline only catches a row it skipped for good).
	end := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		have := len(got)
		mu.Unlock()
		if have >= n || time.Now().After(end) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	_ = sub.Close()
	<-done
	missing := 0
	for i := range n {
		if got[fmt.Sprintf("m%d", i)] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("row m%d was inserted and never read", i)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d rows never read by the consumer group", missing, n)
	}
}

// The MySQL sink refuses, before anything is sent, a message whose INSERT
// (payload, metadata as JSON, and a reserve) would be over the server's
// max_allowed_packet, and checks the messages of one call in order: the
// first one refused, for whichever limit, names the error. A message that
// fits is then inserted as usual.
func TestMySQLSinkRefusesOverMaxAllowedPacket(t *testing.T) {
	cfg := parseConfig(t, `
connections:
  db: {type: sql, driver: mysql, dsn: "`+brokertest.MySQLDSN+`"}
pipelines:
  out:
    from: {type: generate}
    to: {r: {type: sql, connection: db, table: t, max_message_bytes: 16777216}}
`)
	conn := cfg.Connections["db"].Broker.(*kinds.SQLConnection)
	sink := *cfg.Pipelines["out"].To["r"].Sink.(*kinds.SQLSink)
	prefix := suitePrefix()
	t.Cleanup(func() { dropSQLTables(t, conn, prefix) })
	sink.Table = prefix + "_packet"
	db, err := conn.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var packet int64
	if err := db.QueryRow("SELECT @@max_allowed_packet").Scan(&packet); err != nil {
		t.Fatal(err)
	}
	if packet > sink.MaxMessageBytes {
		t.Skipf("max_allowed_packet %d is over max_message_bytes %d", packet, sink.MaxMessageBytes)
	}
	pub, err := sink.NewPublisherWith(context.Background(), conn, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	// Its payload fits max_allowed_packet, not with its metadata.
	overPacket := message.NewMessage("over-packet", make([]byte, packet-1024-100))
	overPacket.Metadata.Set("k", strings.Repeat("v", 200))
	md, _ := json.Marshal(overPacket.Metadata)
	n := int64(len(overPacket.Payload))
	wantPacket := fmt.Sprintf("message too large: message over-packet needs a %d-byte INSERT (payload %d, metadata %d), over the MySQL server's max_allowed_packet of %d",
		n+int64(len(md))+1024, n, len(md), packet)
	overBytes := message.NewMessage("over-bytes", make([]byte, sink.MaxMessageBytes+1))
	wantBytes := fmt.Sprintf("message too large: message over-bytes has a %d-byte payload, over the sql sink's max_message_bytes of %d",
		len(overBytes.Payload), sink.MaxMessageBytes)
	for _, c := range []struct {
		msgs []*message.Message
		want string
	}{
		{[]*message.Message{overPacket}, wantPacket},
		{[]*message.Message{message.NewMessage("ok", []byte("x")), overPacket, overBytes}, wantPacket},
		{[]*message.Message{overBytes, overPacket}, wantBytes},
	} {
		if err := pub.Publish(sink.Table, c.msgs...); err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %s", err, c.want)
		}
	}
	var rows int
	if err := db.QueryRow("SELECT COUNT(*) FROM `" + sink.Table + "`").Scan(&rows); err != nil || rows != 0 {
		t.Errorf("after refused calls: %d rows, %v; want none", rows, err)
	}
	if err := pub.Publish(sink.Table, message.NewMessage("fits", []byte("x"))); err != nil {
		t.Errorf("a message that fits: %v", err)
	}
}
