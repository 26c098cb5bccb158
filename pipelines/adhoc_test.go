package pipelines_test

import (
	"strings"
	"testing"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

func TestParseSinkAndSource(t *testing.T) {
	dir := t.TempDir()
	sink, deps, err := pipelines.ParseSink([]byte(`{type: file, dir: `+dir+`, topic: x}`), nil, kinds.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	if sink.Topic() != "x" || deps.Pipeline != pipelines.AdhocPipeline {
		t.Fatalf("topic %q, pipeline %q", sink.Topic(), deps.Pipeline)
	}
	src, _, err := pipelines.ParseSource([]byte(`{type: generate, count: 1}`), nil, kinds.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	if src.Topic() != pipelines.AdhocPipeline {
		t.Fatalf("generate topic %q", src.Topic())
	}
}

func TestParseAdhocErrors(t *testing.T) {
	base, err := pipelines.Parse([]byte(`
connections:
  local: {embedded: true}
pipelines:
  p: {from: {type: generate}, to: {out: {type: stdout}}}
`), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		sink       bool
		want       []string
	}{
		{"unknown kind", `{type: nope}`, true, []string{"sink.type: unknown sink kind \"nope\""}},
		{"source only kind as sink", `{type: generate}`, true, []string{"is a source kind only"}},
		{"unknown key", `{type: file, topic: x, bogus: 1}`, true, []string{"sink.bogus: unknown key"}},
		{"check", `{type: file, topic: x}`, true, []string{"sink.dir: must not be empty"}},
		{"when refused", `{type: stdout, when: 'true'}`, true, []string{"sink.when: not allowed"}},
		{"missing topic", `{type: file, dir: /tmp}`, false, []string{"source.topic: must be set"}},
		{"embedded", `{type: loom, connection: local, room: r}`, false, []string{"source.connection:", "embedded", "loombridge run"}},
		{"unknown connection", `{type: loom, connection: other, room: r}`, true, []string{`no connection "other"`}},
		{"empty", ``, true, []string{"sink: empty"}},
		{"bad yaml", `{type: [`, true, []string{"sink: YAML"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.sink {
				_, _, err = pipelines.ParseSink([]byte(tc.yaml), base, kinds.Builtin())
			} else {
				_, _, err = pipelines.ParseSource([]byte(tc.yaml), base, kinds.Builtin())
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}
