package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/adapter/loom"
)

// publishTo sends msgs to room with the real adapter, in envelope format so
// UUIDs and metadata cross.
func (r router) publishTo(t *testing.T, room string, msgs ...*message.Message) {
	t.Helper()
	pub, err := loom.NewPublisher(loom.PublisherConfig{Client: r.clientConfig(), Format: loom.FormatEnvelope}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(room, msgs...); err != nil {
		t.Fatal(err)
	}
}

func newMsg(uuid, key, payload string) *message.Message {
	m := message.NewMessage(uuid, []byte(payload))
	if key != "" {
		m.Metadata.Set("loom_key", key)
	}
	return m
}

// jsonLine is the shape of a consume line.
type jsonLine struct {
	UUID            string            `json:"uuid"`
	Key             string            `json:"key"`
	Metadata        map[string]string `json:"metadata"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding"`
}

func parseLines(t *testing.T, out string) []jsonLine {
	t.Helper()
	var ls []jsonLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var jl jsonLine
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&jl); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		ls = append(ls, jl)
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].UUID < ls[j].UUID })
	return ls
}

func TestConsumeCount(t *testing.T) {
	r := startRouter(t)
	args := append([]string{"consume", "--count", "2"}, r.target("c")...)
	_, stderr, _, done := startCmd(t, strings.NewReader(""), args...)
	r.waitConsumers(t, "c", 4) // the source's default consumers
	r.publishTo(t, "c",
		newMsg("id-1", "k1", `{"n":1}`),
		newMsg("id-2", "", string([]byte{0xff, 0xfe})),
	)
	res := waitResult(t, done)
	if res.code != exitOK {
		t.Fatalf("code %d, stderr %q", res.code, stderr.String())
	}
	ls := parseLines(t, res.stdout)
	if len(ls) != 2 {
		t.Fatalf("%d lines: %q", len(ls), res.stdout)
	}
	if l := ls[0]; l.UUID != "id-1" || l.Key != "k1" || l.Payload != `{"n":1}` || l.Metadata["loom_key"] != "k1" || l.Metadata["loom_room"] != "c" {
		t.Errorf("line 1: %+v", l)
	}
	if l := ls[1]; l.UUID != "id-2" || l.Key != "id-2" || l.Payload != "//4=" || l.PayloadEncoding != "base64" {
		t.Errorf("line 2 (no key: the UUID is the Loom key): %+v", l)
	}
}

func TestConsumeOutDir(t *testing.T) {
	r := startRouter(t)
	out := filepath.Join(t.TempDir(), "out")
	args := append([]string{"consume", "--count", "3", "--out-dir", out}, r.target("o")...)
	_, stderr, _, done := startCmd(t, strings.NewReader(""), args...)
	r.waitConsumers(t, "o", 4)
	r.publishTo(t, "o",
		newMsg("report.pdf", "k", "%PDF"),
		newMsg("../../escape", "k", "nope"),
		newMsg(".meta", "k", "hidden"),
	)
	res := waitResult(t, done)
	if res.code != exitOK || res.stdout != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", res.code, res.stdout, stderr.String())
	}
	for name, want := range map[string]string{"report.pdf": "%PDF", "_._.._escape": "nope", "_meta": "hidden"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, ".meta", "report.pdf.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if meta["uuid"] != "report.pdf" || meta["key"] != "k" || meta["payload"] != nil {
		t.Errorf("sidecar %s", b)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 4 { // three payloads and .meta
		t.Errorf("%d entries in out dir", len(entries))
	}
}

func TestConsumePeekFileSource(t *testing.T) {
	dir := t.TempDir()
	var data []byte
	for _, p := range []string{"first", "second", "third"} {
		l, err := file.MarshalLine(newMsg("id-"+p, "", p), "loom_key")
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, l...)
	}
	if err := os.WriteFile(filepath.Join(dir, "t.jsonl"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	source := []string{"--source", "{type: file, dir: '" + dir + "', topic: t}"}
	consume := func(extra ...string) []string {
		t.Helper()
		res := runCmd(t, context.Background(), "", append(append([]string{"consume"}, source...), extra...)...)
		if res.code != exitOK {
			t.Fatalf("%v: code %d, stderr %q", extra, res.code, res.stderr)
		}
		var got []string
		for _, l := range parseLines(t, res.stdout) {
			got = append(got, l.Payload)
		}
		sort.Strings(got)
		return got
	}
	offset := filepath.Join(dir, "t.jsonl.offset")

	for range 2 {
		if got := consume("--ack=false"); strings.Join(got, ",") != "first,second,third" {
			t.Fatalf("peek: %q", got)
		}
		if _, err := os.Stat(offset); !os.IsNotExist(err) {
			t.Fatalf("peek wrote an offset: %v", err)
		}
	}
	if got := consume("--count", "2"); strings.Join(got, ",") != "first,second" {
		t.Fatalf("consume 2: %q", got)
	}
	before, err := os.ReadFile(offset)
	if err != nil {
		t.Fatal(err)
	}
	if got := consume("--ack=false"); strings.Join(got, ",") != "third" {
		t.Fatalf("peek after the offset: %q", got)
	}
	after, _ := os.ReadFile(offset)
	if string(before) != string(after) {
		t.Fatalf("peek moved the offset: %s -> %s", before, after)
	}
	if got := consume(); strings.Join(got, ",") != "third" {
		t.Fatalf("consume the rest: %q", got)
	}
	if got := consume(); len(got) != 0 {
		t.Fatalf("all consumed, yet: %q", got)
	}
}

func TestConsumePeekLoom(t *testing.T) {
	r := startRouter(t)
	args := append([]string{"consume", "--ack=false", "--count", "1"}, r.target("p")...)
	_, stderr, _, done := startCmd(t, strings.NewReader(""), args...)
	r.waitConsumers(t, "p", 4)
	pub, err := loom.NewPublisher(loom.PublisherConfig{Client: r.clientConfig(), Mode: loom.ModeFireAndForget}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish("p", newMsg("x", "k", "peeked")); err != nil {
		t.Fatal(err)
	}
	res := waitResult(t, done)
	if ls := parseLines(t, res.stdout); res.code != exitOK || len(ls) != 1 || ls[0].Payload != "peeked" {
		t.Fatalf("code %d, stdout %q, stderr %q", res.code, res.stdout, stderr.String())
	}
}

func TestConsumeStopsOnCancelAndTimeout(t *testing.T) {
	r := startRouter(t)
	_, stderr, stop, done := startCmd(t, strings.NewReader(""), append([]string{"consume"}, r.target("idle")...)...)
	r.waitConsumers(t, "idle", 4)
	stop()
	if res := waitResult(t, done); res.code != exitOK {
		t.Fatalf("cancel: code %d, stderr %q", res.code, stderr.String())
	}

	res := runCmd(t, context.Background(), "", append([]string{"consume", "--timeout", "200ms"}, r.target("idle")...)...)
	if res.code != exitOK {
		t.Fatalf("timeout without count: code %d, stderr %q", res.code, res.stderr)
	}
	res = runCmd(t, context.Background(), "", append([]string{"consume", "--timeout", "200ms", "--count", "1"}, r.target("idle")...)...)
	if res.code != exitFailure || !strings.Contains(res.stderr, "with 0 of 1 messages") {
		t.Fatalf("timeout before count: code %d, stderr %q", res.code, res.stderr)
	}
}

func TestConsumeBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", nil, "no target"},
		{"negative count", []string{"--count", "-1", "--source", "{type: generate}"}, "--count: must not be negative"},
		{"arguments", []string{"--source", "{type: generate}", "extra"}, "unexpected arguments: extra"},
		{"sink kind as source", []string{"--source", "{type: stdout}"}, `source.type: "stdout" is a sink kind only`},
		{"file without topic", []string{"--source", "{type: file, dir: /tmp}"}, "source.topic: must be set"},
		{"room with source", []string{"--room", "r", "--source", "{type: generate}"}, "write room: in the YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runCmd(t, context.Background(), "", append([]string{"consume"}, tc.args...)...)
			if res.code != exitUsage || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("code %d, stderr %q, want %q", res.code, res.stderr, tc.want)
			}
		})
	}
}

func TestConsumeGenerateSource(t *testing.T) {
	res := runCmd(t, context.Background(), "", "consume", "--count", "3", "--source", "{type: generate, interval: 0, payload: 'n{{.N}}', key: k}")
	ls := parseLines(t, res.stdout)
	if res.code != exitOK || len(ls) != 3 || ls[0].Key != "k" {
		t.Fatalf("code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"0b6b7c1e-aaaa":  "0b6b7c1e-aaaa",
		"report.pdf":     "report.pdf",
		"..":             "_.",
		".":              "_",
		"":               "_",
		"a/b\\c d":       "a_b_c_d",
		"é":              "_",
		".meta":          "_meta",
		"x\x00y":         "x_y",
		"dir/../../etc/": "dir_.._.._etc_",
	} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
	long := safeName(strings.Repeat("a", 300))
	if len(long) > 128 || long == safeName(strings.Repeat("a", 301)) {
		t.Errorf("long names: %q", long)
	}
}
