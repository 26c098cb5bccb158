package kinds_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/loombridge/loombridge/adapter/webhook"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// The universal suite's own helper (TestConcurrentClose's multiplier)
		// leaves its forwarding goroutines behind.
		goleak.IgnoreTopFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func2"),
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill/internal/subscriber.(*multiplier).Subscribe.func3"),
		// watermill-redisstream's reader sleeps 500 ms after a failed read (the
		// one Close causes) before it sees the subscriber closed and returns:
		// upstream's, and it ends by itself; seen outliving a loaded run.
		goleak.IgnoreAnyFunction("github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream.(*Subscriber).read"))
}

func deps() pipelines.Deps {
	return pipelines.Deps{Pipeline: "p", Logger: watermill.NopLogger{}}
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(time.Minute):
		t.Fatal("no message")
		return nil
	}
}

// The generator counts from 1, renders payload and key, pads, makes a nacked
// message again with the same UUID and counter, and stops at count.
func TestGenerate(t *testing.T) {
	iv := time.Duration(0)
	c := &kinds.GenerateSource{Interval: &iv, Count: 3, Payload: "n={{.N}}", Key: "k{{mod .N 2}}", PadTo: 8}
	if err := c.Check(deps()); err != nil {
		t.Fatal(err)
	}
	sub, err := c.NewSubscriber(context.Background(), deps())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), c.Topic())
	if err != nil {
		t.Fatal(err)
	}
	m1 := next(t, ch)
	if string(m1.Payload) != "n=1     " || m1.Metadata.Get("loom_key") != "k1" {
		t.Fatalf("first message %q key %q", m1.Payload, m1.Metadata.Get("loom_key"))
	}
	m1.Nack()
	again := next(t, ch)
	if again.UUID != m1.UUID || string(again.Payload) != string(m1.Payload) {
		t.Fatalf("after a nack got %s %q, want the same message", again.UUID, again.Payload)
	}
	again.Ack()
	for want := 2; want <= 3; want++ {
		m := next(t, ch)
		if !strings.HasPrefix(string(m.Payload), "n="+string(rune('0'+want))) {
			t.Fatalf("message %d: %q", want, m.Payload)
		}
		m.Ack()
	}
	select {
	case m := <-ch:
		t.Fatalf("message after count: %q", m.Payload)
	case <-time.After(100 * time.Millisecond): // the absence of a 4th message, given a moment
	}
	if c.Topic() != "p" {
		t.Errorf("topic %q, want the pipeline's name", c.Topic())
	}
}

func TestGenerateCheck(t *testing.T) {
	neg := -time.Second
	c := &kinds.GenerateSource{Interval: &neg, Count: -1, Payload: "{{.Nope}}", InFlight: -1}
	err := c.Check(deps())
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"interval: must not be negative", "count: must not be negative", "payload:", "in_flight: must be >= 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// The echo receiver verifies signatures, answers 204 once the message is
// acked, 500 on a nack, 401 on a bad signature, and stops cleanly.
func TestEcho(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	c := &kinds.EchoSource{Addr: "127.0.0.1:0", Path: "/hook", Secrets: []string{secret}, MetadataHeaders: map[string]string{"X-Tenant": "tenant"}}
	if err := c.Check(deps()); err != nil {
		t.Fatal(err)
	}
	sub, err := c.NewSubscriber(context.Background(), deps())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), c.Topic())
	if err != nil {
		t.Fatal(err)
	}
	addr := sub.(interface{ Addr() string }).Addr()
	post := func(id string, body []byte, sign bool) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hook", bytes.NewReader(body))
		req.Header.Set("webhook-id", id)
		req.Header.Set("X-Tenant", "acme")
		if sign {
			ts := time.Now()
			sig, err := webhook.Sign(id, ts, body, secret)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
			req.Header.Set("webhook-signature", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("x", []byte("unsigned"), false); code != http.StatusUnauthorized {
		t.Errorf("unsigned request: %d, want 401", code)
	}
	codes := make(chan int, 2)
	go func() { codes <- post("id-1", []byte("hello"), true) }()
	m := next(t, ch)
	if m.UUID != "id-1" || string(m.Payload) != "hello" || m.Metadata.Get("tenant") != "acme" {
		t.Fatalf("message %s %q %v", m.UUID, m.Payload, m.Metadata)
	}
	m.Ack()
	if code := <-codes; code != http.StatusNoContent {
		t.Errorf("acked: %d, want 204", code)
	}
	go func() { codes <- post("id-2", []byte("again"), true) }()
	next(t, ch).Nack()
	if code := <-codes; code != http.StatusInternalServerError {
		t.Errorf("nacked: %d, want 500", code)
	}
}

// The stdout sink prints the file sink's JSONL line.
func TestStdout(t *testing.T) {
	var buf bytes.Buffer
	d := deps()
	d.Stdout = &buf
	pub, err := (&kinds.StdoutSink{}).NewPublisher(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage("u1", []byte{0xff, 0x00})
	m.Metadata.Set("loom_key", "k")
	if err := pub.Publish("t", m); err != nil {
		t.Fatal(err)
	}
	want := `{"uuid":"u1","key":"k","metadata":{"loom_key":"k"},"payload":"/wA=","payload_encoding":"base64"}` + "\n"
	if buf.String() != want {
		t.Errorf("got  %s\nwant %s", buf.String(), want)
	}
}

// A template ranging over a huge literal is refused, not run for minutes.
func TestGenerateRefusesHugeRange(t *testing.T) {
	c := &kinds.GenerateSource{Payload: "{{range 1000000000}}x{{end}}"}
	err := c.Check(deps())
	if err == nil || !strings.Contains(err.Error(), "payload: range over 1000000000: at most 100000") {
		t.Fatalf("error %v", err)
	}
}

// A DSN's password appears neither in a connection printed with %+v nor in
// the error of a failed start.
func TestSQLConnectionRedactsDSN(t *testing.T) {
	for _, c := range []*kinds.SQLConnection{
		{Driver: "postgres", DSN: "postgres://u:topsecret@127.0.0.1:1/x?connect_timeout=5"},
		{Driver: "mysql", DSN: "u:topsecret@tcp(127.0.0.1:1)/x?timeout=5s"},
	} {
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
		if s := fmt.Sprintf("%+v %#v", *c, *c); strings.Contains(s, "topsecret") {
			t.Errorf("printed: %s", s)
		}
		sink := &kinds.SQLSink{SQLTable: kinds.SQLTable{Table: "t", PayloadType: "BYTEA"}}
		yes := true
		sink.InitializeSchema = &yes
		_, err := sink.NewPublisherWith(context.Background(), c, watermill.NopLogger{})
		if err == nil || strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%s: error %v", c.Driver, err)
		}
	}
}
