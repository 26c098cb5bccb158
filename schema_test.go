package loombridge_test

// docs/config.schema.json is the JSON Schema of the configuration file that
// `loombridge kinds --schema` prints (pipelines.Schema); it is committed for
// editors and checked here: `go test -run TestConfigSchemaFile -update-schema .`
// writes it again. The configurations of the README, docs/ and
// config.example.yaml validate against it, and unknown keys do not.

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kindkeys"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

var updateSchema = flag.Bool("update-schema", false, "write docs/config.schema.json")

const schemaPath = "docs/config.schema.json"

func TestConfigSchemaFile(t *testing.T) {
	want, err := pipelines.Schema(kinds.Builtin(), kindkeys.Doc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(schemaPath)
	if err == nil && bytes.Equal(got, want) {
		return
	}
	if *updateSchema {
		if err := os.WriteFile(schemaPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s written", schemaPath)
		return
	}
	t.Errorf("%s differs from what pipelines.Schema generates (%v); run go test -run TestConfigSchemaFile -update-schema .", schemaPath, err)
}

// compiledSchema compiles the generated schema with a draft 2020-12 validator.
func compiledSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := pipelines.Schema(kinds.Builtin(), kindkeys.Doc)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(pipelines.SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(pipelines.SchemaID)
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return s
}

// yamlInstance turns a YAML document into what a JSON Schema validates, as
// an editor's YAML language server does.
func yamlInstance(t *testing.T, text string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(text), &v); err != nil {
		t.Fatalf("not YAML: %v", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestSchemaValidatesTheExamples(t *testing.T) {
	s := compiledSchema(t)
	b, err := os.ReadFile("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(yamlInstance(t, string(b))); err != nil {
		t.Errorf("config.example.yaml: %v", err)
	}
	n := 0
	for _, path := range markdownFiles(t) {
		for _, blk := range fencedBlocks(t, path, "yaml") {
			first, _, _ := strings.Cut(blk.text, "\n")
			if strings.HasPrefix(strings.TrimSpace(first), "# fragment") {
				continue // partial: no whole file to validate
			}
			n++
			if err := s.Validate(yamlInstance(t, blk.text)); err != nil {
				t.Errorf("%s:%d: the configuration loads but the schema refuses it:\n%v", path, blk.line, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("no whole configuration in README.md and docs/ to validate")
	}
}

// Unknown keys, refused by the loader at every level, are refused by the
// schema too; the same configuration without them passes, so it is the key
// that is refused.
func TestSchemaRefusesUnknownKeys(t *testing.T) {
	s := compiledSchema(t)
	const good = `
connections:
  main: {addr: "loom.example:4433", token: "${LOOM_TOKEN}"}
  bus: {type: nats, url: "nats://127.0.0.1:4222"}
pipelines:
  p:
    from: {type: loom, connection: main, room: a}
    to:
      out: {type: nats, connection: bus, subject: s, when: "true"}
    dead_letter: {type: file, dir: ./dead}
    retry: {max_retries: 5, initial_interval: 1s}
    concurrency: "${CONCURRENCY}"
    buffer:
  q:
    from: {type: generate}
    to: {out: {type: stdout}}
    retry:
`
	// The schema and the loader agree: both take good, both refuse each bad.
	load := func(cfg string) error {
		_, err := pipelines.Parse([]byte(cfg), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string {
			return []string{"LOOM_TOKEN=t", "CONCURRENCY=4"}
		}})
		return err
	}
	if err := load(good); err != nil {
		t.Fatalf("the loader refuses the valid configuration: %v", err)
	}
	if err := s.Validate(yamlInstance(t, good)); err != nil {
		t.Fatalf("a valid configuration is refused: %v", err)
	}
	for name, bad := range map[string][2]string{
		"top level":                     {"pipelines:\n", "colour: red\npipelines:\n"},
		"pipeline":                      {"    concurrency:", "    colour: red\n    concurrency:"},
		"source":                        {"room: a}", "room: a, colour: red}"},
		"sink":                          {"subject: s,", "subject: s, colour: red,"},
		"dead letter":                   {"dir: ./dead}", "dir: ./dead, when: \"true\"}"},
		"loom connection":               {"token: \"${LOOM_TOKEN}\"}", "token: \"${LOOM_TOKEN}\", colour: red}"},
		"nats connection":               {"url: \"nats://127.0.0.1:4222\"}", "url: \"nats://127.0.0.1:4222\", room: x}"},
		"retry":                         {"max_retries: 5,", "max_retries: 5, colour: red,"},
		"a source key at a sink's kind": {"subject: s,", "subject: s, durable: d,"},
		"a connection key at a source":  {"room: a}", "room: a, addr: \"x:1\"}"},
	} {
		cfg := strings.Replace(good, bad[0], bad[1], 1)
		if cfg == good {
			t.Fatalf("%s: the replacement did not apply", name)
		}
		if load(cfg) == nil {
			t.Errorf("%s: the loader accepts it, so the schema should too:\n%s", name, cfg)
		}
		if err := s.Validate(yamlInstance(t, cfg)); err == nil {
			t.Errorf("%s: the schema accepts an unknown key:\n%s", name, cfg)
		}
	}
}
