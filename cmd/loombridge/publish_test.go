package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// router is a loomtest router and the file holding its CA, as dev writes it.
type router struct {
	srv *loomtest.Server
	ca  string
}

func startRouter(t *testing.T) router {
	t.Helper()
	srv, err := loomtest.Start(loomtest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return router{srv, ca}
}

// target is the command line flags that reach room on r.
func (r router) target(room string) []string {
	return []string{"--addr", r.srv.Addr(), "--ca-file", r.ca, "--room", room}
}

// clientConfig verifies the router with its CA file, as a user's would.
func (r router) clientConfig() client.Config {
	c := client.Config{Addr: r.srv.Addr()}
	c.TLS.CAFile = r.ca
	return c
}

// subscribe consumes room with the real adapter, from before anything is
// published (Loom drops messages of a room nobody consumes), and returns a
// function that waits for n messages.
func (r router) subscribe(t *testing.T, room string) func(n int) []*message.Message {
	t.Helper()
	sub, err := loom.NewSubscriber(loom.SubscriberConfig{Client: r.clientConfig(), Consumers: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = sub.Close() })
	ch, err := sub.Subscribe(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	if err := r.srv.WaitConsumers(wctx, room, 2); err != nil {
		t.Fatal(err)
	}
	// Ack at once, as a consumer would: a confirm publish waits for the ack.
	acked := make(chan *message.Message, 1024)
	go func() {
		for m := range ch {
			m.Ack()
			acked <- m
		}
	}()
	return func(n int) []*message.Message {
		t.Helper()
		var got []*message.Message
		timeout := time.After(wait)
		for len(got) < n {
			select {
			case m := <-acked:
				got = append(got, m)
			case <-timeout:
				t.Fatalf("got %d of %d messages", len(got), n)
			}
		}
		return got
	}
}

// waitConsumers waits until room has n consumer streams.
func (r router) waitConsumers(t *testing.T, room string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.srv.WaitConsumers(ctx, room, n); err != nil {
		t.Fatal(err)
	}
}

func payloads(msgs []*message.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Payload))
	}
	sort.Strings(out)
	return out
}

func TestPublishFile(t *testing.T) {
	r := startRouter(t)
	recv := r.subscribe(t, "files")
	body := append(bytes.Repeat([]byte("loom "), 50_000), 0, 1, 2, 0xff)
	path := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	res := runCmd(t, context.Background(), "", append(append([]string{"publish"}, r.target("files")...), path)...)
	if res.code != exitOK || !strings.Contains(res.stderr, "published 1 messages (250004 bytes) in ") {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
	got := recv(1)
	if !bytes.Equal(got[0].Payload, body) {
		t.Fatalf("payload of %d bytes differs", len(got[0].Payload))
	}
	// Loom does not tell a producer whether anyone consumed: publish says so.
	if !strings.Contains(res.stderr, `warning: Loom discards messages for a room no consumer is connected to`) || !strings.Contains(res.stderr, `room "files"`) {
		t.Errorf("no warning about rooms without consumers: %q", res.stderr)
	}
}

func TestPublishDirectory(t *testing.T) {
	r := startRouter(t)
	recv := r.subscribe(t, "dir")
	dir := t.TempDir()
	for name, body := range map[string]string{"b.txt": "bee", "a.txt": "ay", "c.json": `{"c":1}`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil { // skipped
		t.Fatal(err)
	}
	res := runCmd(t, context.Background(), "", append(append([]string{"publish", "--uuid-from-name"}, r.target("dir")...), dir)...)
	if res.code != exitOK || !strings.Contains(res.stderr, "published 3 messages (12 bytes)") {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
	byUUID := map[string]string{}
	for _, m := range recv(3) {
		byUUID[m.UUID] = string(m.Payload)
	}
	want := map[string]string{"a.txt": "ay", "b.txt": "bee", "c.json": `{"c":1}`}
	for k, v := range want {
		if byUUID[k] != v {
			t.Errorf("message %s: %q, want %q (all: %v)", k, byUUID[k], v, byUUID)
		}
	}
}

func TestPublishStdinWhole(t *testing.T) {
	r := startRouter(t)
	recv := r.subscribe(t, "stdin")
	for _, args := range [][]string{nil, {"-"}} {
		res := runCmd(t, context.Background(), "line one\n\nline two\n", append(append([]string{"publish"}, r.target("stdin")...), args...)...)
		if res.code != exitOK || !strings.Contains(res.stderr, "published 1 messages (19 bytes)") {
			t.Fatalf("%v: code %d, stderr %q", args, res.code, res.stderr)
		}
		if got := recv(1); string(got[0].Payload) != "line one\n\nline two\n" {
			t.Fatalf("payload %q", got[0].Payload)
		}
	}
}

func TestPublishStdinLines(t *testing.T) {
	r := startRouter(t)
	recv := r.subscribe(t, "lines")
	res := runCmd(t, context.Background(), "alpha\r\nbeta\n\n\ngamma", append([]string{"publish", "--split", "lines"}, r.target("lines")...)...)
	if res.code != exitOK || !strings.Contains(res.stderr, "published 3 messages (14 bytes)") {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
	if got := payloads(recv(3)); strings.Join(got, ",") != "alpha,beta,gamma" {
		t.Fatalf("payloads %q", got)
	}
}

func TestPublishKeyAndMetadata(t *testing.T) {
	r := startRouter(t)
	recv := r.subscribe(t, "meta")
	args := append([]string{"publish", "--key", "customer-7", "--metadata", "team=blue", "--metadata", "note=a=b"}, r.target("meta")...)
	res := runCmd(t, context.Background(), "hello", args...)
	if res.code != exitOK {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
	m := recv(1)[0]
	for k, want := range map[string]string{"loom_key": "customer-7", "team": "blue", "note": "a=b"} {
		if got := m.Metadata.Get(k); got != want {
			t.Errorf("metadata %s = %q, want %q (all %v)", k, got, want, m.Metadata)
		}
	}

	// Raw: the key crosses as the Loom key, nothing else does.
	res = runCmd(t, context.Background(), "raw", append([]string{"publish", "--key", "k2", "--format", "raw"}, r.target("meta")...)...)
	if res.code != exitOK {
		t.Fatalf("raw: code %d, stderr %q", res.code, res.stderr)
	}
	if m := recv(1)[0]; m.Metadata.Get("loom_key") != "k2" || string(m.Payload) != "raw" {
		t.Fatalf("raw: %v %q", m.Metadata, m.Payload)
	}
}

func TestPublishConnectionFromConfig(t *testing.T) {
	r := startRouter(t)
	recv := r.subscribe(t, "cfg")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	err := os.WriteFile(cfg, []byte(`
connections:
  main: {addr: "`+r.srv.Addr()+`", tls: {ca_file: "`+r.ca+`"}}
  local: {embedded: true}
`), 0o644) // connections only, as the dev command's snippet: no pipeline needed
	if err != nil {
		t.Fatal(err)
	}
	res := runCmd(t, context.Background(), "via config", "publish", "-c", cfg, "--connection", "main", "--room", "cfg", "--mode", "fire_and_forget")
	if res.code != exitOK {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
	if got := recv(1); string(got[0].Payload) != "via config" {
		t.Fatalf("payload %q", got[0].Payload)
	}
	res = runCmd(t, context.Background(), "x", "publish", "-c", cfg, "--connection", "local", "--room", "cfg")
	if res.code != exitUsage || !strings.Contains(res.stderr, `connection "local" is embedded`) || !strings.Contains(res.stderr, "loombridge run") {
		t.Fatalf("embedded: code %d, stderr %q", res.code, res.stderr)
	}
	res = runCmd(t, context.Background(), "x", "publish", "-c", cfg, "--connection", "nope", "--room", "cfg")
	if res.code != exitUsage || !strings.Contains(res.stderr, `no connection "nope" (have: local, main)`) {
		t.Fatalf("unknown connection: code %d, stderr %q", res.code, res.stderr)
	}
}

func TestPublishSinkFile(t *testing.T) {
	dir := t.TempDir()
	res := runCmd(t, context.Background(), "one\ntwo\nthree\n", "publish", "--split", "lines", "--key", "k", "--metadata", "src=cli",
		"--sink", "{type: file, dir: '"+dir+"', topic: x, fsync: never}")
	if res.code != exitOK || !strings.Contains(res.stderr, "published 3 messages (11 bytes)") {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "x.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
	var got []string
	for _, l := range lines {
		m, err := file.UnmarshalLine([]byte(l), "loom_key")
		if err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if m.Metadata.Get("loom_key") != "k" || m.Metadata.Get("src") != "cli" {
			t.Errorf("metadata %v", m.Metadata)
		}
		got = append(got, string(m.Payload))
	}
	if strings.Join(got, ",") != "one,two,three" { // one sink, one batch: in order
		t.Fatalf("payloads %q", got)
	}
}

func TestPublishFailureExits1(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := runCmd(t, context.Background(), "x", "publish", "--sink", "{type: file, dir: '"+filepath.Join(blocker, "sub")+"', topic: x}")
	if res.code != exitFailure || !strings.Contains(res.stderr, "loombridge publish:") {
		t.Fatalf("code %d, stderr %q", res.code, res.stderr)
	}
}

func TestPublishBadFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "conns.yaml")
	if err := os.WriteFile(cfg, []byte("connections:\n  dev: {addr: '127.0.0.1:4433', transport: tcp}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := []string{"--addr", "127.0.0.1:4433", "--room", "r"}
	sink := []string{"--sink", "{type: stdout}"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", nil, "no target"},
		{"addr without room", []string{"--addr", "127.0.0.1:4433"}, "--addr needs --room"},
		{"two targets", append(append([]string{}, addr...), sink...), "alternatives"},
		{"connection without config", []string{"--connection", "x", "--room", "r"}, "needs -c FILE"},
		{"room with sink", append([]string{"--room", "r"}, sink...), "write room: in the YAML"},
		{"tls flag with sink", append([]string{"--ca-file", "x.pem"}, sink...), "go with --addr"},
		{"bad transport", append([]string{"--transport", "tcp"}, addr...), "--transport"},
		{"bad split", append([]string{"--split", "words"}, addr...), "--split: want whole or lines"},
		{"format with sink", append([]string{"--format", "raw"}, sink...), "with --sink write them in the YAML"},
		{"raw with metadata", append([]string{"--format", "raw", "--metadata", "a=b"}, addr...), "--format raw carries neither"},
		{"bad metadata", append([]string{"--metadata", "novalue"}, addr...), "want key=value"},
		{"key twice", append([]string{"--key", "a", "--metadata", "loom_key=b"}, addr...), "give the key once"},
		{"two paths", append(append([]string{}, addr...), "a", "b"), "one PATH at most"},
		{"uuid from stdin", append([]string{"--uuid-from-name"}, addr...), "needs a PATH and --split whole"},
		{"missing path", append(append([]string{}, addr...), filepath.Join(dir, "nope")), "no such file"},
		{"lines of a directory", append(append([]string{"--split", "lines"}, addr...), dir), "a directory is always one message per file"},
		{"invalid sink", []string{"--sink", "{type: file, topic: x, fsync: sometimes}"}, "sink.dir: must not be empty"},
		{"unknown sink key", []string{"--sink", "{type: stdout, colour: red}"}, "sink.colour: unknown key"},
		{"missing ca file", []string{"--addr", "127.0.0.1:4433", "--room", "r", "--ca-file", filepath.Join(dir, "none.pem")}, "tls.ca_file"},
		{"config with a bad connection", []string{"-c", cfg, "--connection", "dev", "--room", "r"}, "connections.dev.transport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCmd(t, context.Background(), "", append([]string{"publish"}, tc.args...)...)
			if res.code != exitUsage || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("code %d, stderr %q, want %q", res.code, res.stderr, tc.want)
			}
		})
	}
}
