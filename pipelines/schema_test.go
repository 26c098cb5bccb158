package pipelines_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// The schema keeps in step with the loader: at every level the loader checks
// for unknown keys (the top level, a pipeline, a Loom or broker connection,
// each kind's source, sink and dead letter), the properties the schema allows
// are exactly the keys the loader's own "unknown key" message lists as valid.
// The loader is asked, not the structs, so a key it handles by hand counts.
func TestSchemaKeysAreTheLoadersKeys(t *testing.T) {
	reg := kinds.Builtin()
	b, err := pipelines.Schema(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}

	// A config with an unknown key zz at every level: each level's message
	// lists the keys valid there.
	var y strings.Builder
	y.WriteString("zz: 1\nlog: {zz: 1}\nhttp: {zz: 1}\ntracing: {zz: 1}\nbuffers: {zz: 1}\nconnections:\n  c_loom: {addr: \"127.0.0.1:4433\", zz: 1}\n")
	for _, name := range reg.ConnectionNames() {
		fmt.Fprintf(&y, "  c_%s: {type: %s, zz: 1}\n", name, name)
	}
	y.WriteString("pipelines:\n  p:\n    from: {type: generate}\n    to: {s: {type: stdout}}\n    zz: 1\n    retry: {zz: 1}\n    buffer: {zz: 1}\n")
	for _, name := range reg.Names(true) {
		fmt.Fprintf(&y, "  src_%s:\n    from: {type: %s, zz: 1}\n    to: {s: {type: stdout}}\n", name, name)
	}
	for _, name := range reg.Names(false) {
		fmt.Fprintf(&y, "  sink_%s:\n    from: {type: generate}\n    to: {s: {type: %s, zz: 1}}\n    dead_letter: {type: %s, zz: 1}\n", name, name, name)
	}
	_, err = pipelines.Parse([]byte(y.String()), pipelines.LoadOptions{Kinds: reg, Environ: func() []string { return nil }})
	if err == nil {
		t.Fatal("a config with unknown keys loaded")
	}
	valid := map[string][]string{} // path -> keys the loader lists
	for _, m := range regexp.MustCompile(`(?m)^\s*(\S*?)\.?zz: unknown key \(valid keys here: ([a-z0-9_, ]+)\)`).FindAllStringSubmatch(err.Error(), -1) {
		valid[m[1]] = strings.Split(m[2], ", ")
	}

	defs := schema["$defs"].(map[string]any)
	// props returns the properties the schema allows for type name in a
	// $defs entry with a rule per type ("" for the object's own properties).
	props := func(def, name string) []string {
		var p map[string]any
		d, _ := defs[def].(map[string]any)
		switch {
		case def == "":
			p = schema["properties"].(map[string]any)
		case name == "":
			p = d["properties"].(map[string]any)
		default:
			for _, r := range d["allOf"].([]any) {
				r := r.(map[string]any)
				if r["if"].(map[string]any)["properties"].(map[string]any)["type"].(map[string]any)["const"] == name {
					p = r["then"].(map[string]any)["properties"].(map[string]any)
				}
			}
		}
		out := make([]string, 0, len(p))
		for k := range p {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	check := func(path string, schemaKeys []string, drop ...string) {
		t.Helper()
		loader, ok := valid[path]
		if !ok {
			t.Errorf("%s: the loader reported no unknown key zz here (got:\n%v)", path, err)
			return
		}
		loader = slices.DeleteFunc(slices.Clone(loader), func(k string) bool { return slices.Contains(drop, k) })
		sort.Strings(loader)
		if !slices.Equal(loader, schemaKeys) {
			t.Errorf("%s: the loader accepts %v, the schema %v", path, loader, schemaKeys)
		}
	}
	// nested returns the properties of an object schema, or of the object
	// in an anyOf (a key that may also be left empty).
	nested := func(s any) []string {
		m := s.(map[string]any)
		if alts, ok := m["anyOf"].([]any); ok {
			for _, a := range alts {
				if a.(map[string]any)["type"] == "object" {
					m = a.(map[string]any)
				}
			}
		}
		var out []string
		for k := range m["properties"].(map[string]any) {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	top := schema["properties"].(map[string]any)
	pl := defs["pipeline"].(map[string]any)["properties"].(map[string]any)
	for _, key := range []string{"log", "http", "tracing", "buffers"} {
		check(key, nested(top[key]))
	}
	check("pipelines.p.retry", nested(pl["retry"]))
	check("pipelines.p.buffer", nested(pl["buffer"]))
	check("", props("", ""))
	check("pipelines.p", props("pipeline", ""))
	check("connections.c_loom", props("connection", "loom"))
	for _, name := range reg.ConnectionNames() {
		check("connections.c_"+name, props("connection", name))
	}
	for _, name := range reg.Names(true) {
		check("pipelines.src_"+name+".from", props("source", name))
	}
	for _, name := range reg.Names(false) {
		check("pipelines.sink_"+name+".to.s", props("sink", name))
		// The loader lists when at a dead letter but refuses it there.
		check("pipelines.sink_"+name+".dead_letter", props("dead_letter", name), "when")
	}
	if n := 9 + len(reg.ConnectionNames()) + len(reg.Names(true)) + 2*len(reg.Names(false)); len(valid) != n {
		t.Errorf("the loader reported unknown keys at %d places, the test checked %d: %v", len(valid), n, valid)
	}
}
