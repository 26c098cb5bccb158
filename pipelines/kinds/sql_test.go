package kinds_test

import (
	"context"
	"fmt"
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
