package pipelines_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// The keys an unknown key's message lists for a Loom source and sink are
// exactly those accepted there: each listed key, given alone, loads; each
// connection key (addr, token, tls, ...) is refused as belonging under
// connections and is not listed.
func TestLoomTypoListsOnlyAcceptedKeys(t *testing.T) {
	// A valid value of each key of a Loom source or sink; a key missing here
	// fails the test, so a new key gets checked too.
	samples := map[string]string{
		"consumers": "2", "max_message_bytes": "1000", "nack_resend_delay": "1s", "reconnect": "{max: 5s}",
		"batch_size": "10", "buffer": "{max_messages: 10}", "close_timeout": "1s", "format": "envelope", "mode": "fire_and_forget",
		"publish_timeout": "1s", "stream_timeout": "1s", "streams": "2",
		"when": "'true'",
	}
	connKeys := map[string]string{
		"addr": `"loom.example:4433"`, "transport": "h3", "name": "x", "token": "secret", "token_file": "/tmp/token",
		"tls": "{insecure_skip_verify: true}", "chunk_size": "1024", "dial_timeout": "1s", "keep_alive": "1s", "idle_timeout": "1s",
	}
	load := func(from, to string) error {
		_, err := pipelines.Parse([]byte(`
connections:
  main: {embedded: true}
pipelines:
  p:
    from: {type: loom, connection: main, room: a`+from+`}
    to:
      s: {type: loom, connection: main, room: b`+to+`}
`), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
		return err
	}
	err := load(", roon: x", ", roon: x")
	if err == nil {
		t.Fatal("a typo loaded")
	}
	lists := regexp.MustCompile(`pipelines\.p\.(from|to\.s)\.roon: unknown key \(valid keys here: ([a-z_, ]+)\)`).FindAllStringSubmatch(err.Error(), -1)
	if len(lists) != 2 {
		t.Fatalf("want the valid keys of the source and the sink, got:\n%v", err)
	}
	for _, l := range lists {
		where, keys := l[1], strings.Split(l[2], ", ")
		listed := map[string]bool{}
		for _, k := range keys {
			listed[k] = true
			if k == "type" || k == "connection" || k == "room" {
				continue
			}
			v, ok := samples[k]
			if !ok {
				t.Errorf("%s lists %q, which this test has no sample value for", where, k)
				continue
			}
			kv := ", " + k + ": " + v
			var err error
			if where == "from" {
				err = load(kv, "")
			} else {
				err = load("", kv)
			}
			if err != nil {
				t.Errorf("%s lists %s as valid, but %s is refused: %v", where, k, strings.TrimPrefix(kv, ", "), err)
			}
		}
		for k, v := range connKeys {
			if listed[k] {
				t.Errorf("%s lists the connection key %s as valid", where, k)
			}
			kv := ", " + k + ": " + v
			var err error
			if where == "from" {
				err = load(kv, "")
			} else {
				err = load("", kv)
			}
			if err == nil || !strings.Contains(err.Error(), "belong under connections") {
				t.Errorf("%s: %s not refused as a connection key: %v", where, k, err)
			}
		}
	}
}
