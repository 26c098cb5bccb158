package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
)

func TestDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	stdout, stderr, stop, done := startCmd(t, strings.NewReader(""), "dev", "--addr", "127.0.0.1:0", "--dir", dir)
	eventually(t, "the dev banner", func() bool { return strings.Contains(stdout.String(), "Ctrl-C stops the router") })
	banner := stdout.String()
	addr := regexp.MustCompile(`(?m)^addr: (\S+)$`).FindStringSubmatch(banner)
	ca := regexp.MustCompile(`(?m)^ca_file: (\S+)$`).FindStringSubmatch(banner)
	if addr == nil || ca == nil {
		t.Fatalf("banner without addr or ca_file:\n%s", banner)
	}
	if want := filepath.Join(dir, "loom-ca.pem"); ca[1] != want {
		t.Errorf("ca_file %s, want %s", ca[1], want)
	}
	for _, want := range []string{
		"connections:\n  dev:\n    addr: " + addr[1] + "\n    tls:\n      ca_file: " + ca[1] + "\n",
		"loombridge consume --addr " + addr[1] + " --ca-file " + ca[1] + " --room demo",
		"loombridge publish --addr " + addr[1] + " --ca-file " + ca[1] + " --room demo",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	// One message through the dev router, verified with the CA file it wrote.
	cc := client.Config{Addr: addr[1]}
	cc.TLS.CAFile = ca[1]
	sub, err := loom.NewSubscriber(loom.SubscriberConfig{Client: cc, Consumers: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := loom.NewPublisher(loom.PublisherConfig{Client: cc, Mode: loom.ModeFireAndForget}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The consumer stream may not be open yet, and Loom drops messages of a
	// room nobody consumes: publish again until one arrives.
	var got *message.Message
	for got == nil {
		if err := pub.Publish("demo", message.NewMessage("u1", []byte("hello dev"))); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-msgs:
			got.Ack()
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no message through the dev router")
		}
	}
	if string(got.Payload) != "hello dev" {
		t.Fatalf("payload %q", got.Payload)
	}
	// The consumer goes first: a message it still held would keep the
	// publisher's Close waiting for its confirm.
	cancel()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}

	stop()
	if res := waitResult(t, done); res.code != exitOK {
		t.Fatalf("code %d, stderr %q", res.code, stderr.String())
	}
	if _, err := os.Stat(ca[1]); err != nil {
		t.Errorf("the CA file is kept: %v", err)
	}
}

func TestDevRefusesNonLoopback(t *testing.T) {
	res := runCmd(t, context.Background(), "", "dev", "--addr", "0.0.0.0:4433", "--dir", t.TempDir())
	if res.code != exitUsage || !strings.Contains(res.stderr, "loopback only") {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
}

func TestQuoting(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/a/loom-ca.pem": "/tmp/a/loom-ca.pem",
		"127.0.0.1:4433":     "127.0.0.1:4433",
		"/tmp/my dir/ca.pem": `"/tmp/my dir/ca.pem"`,
		"-x":                 `"-x"`,
	} {
		if got := yamlQuote(in); got != want {
			t.Errorf("yamlQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := shellQuote("/tmp/it's here"); got != `'/tmp/it'\''s here'` {
		t.Errorf("shellQuote: %s", got)
	}
}
