package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/pipelines/kindkeys"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// kinds lists every kind of the registry validate uses, each with its
// summary and the keys of its source, sink and connection.
func TestKindsListsEveryKind(t *testing.T) {
	r := runCmd(t, context.Background(), "", "kinds")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	reg := kinds.Builtin()
	for _, name := range append(reg.Names(true), reg.Names(false)...) {
		k, _ := reg.Lookup(name)
		if k.Summary == "" {
			t.Errorf("kind %s has no Summary", name)
		}
		if !strings.Contains(r.stdout, "\n"+name+" (") && !strings.HasPrefix(r.stdout, name+" (") {
			t.Errorf("kind %s is not listed:\n%s", name, r.stdout)
		}
	}
	// A few keys as the loader has them: required, defaulted by Check, and
	// derived from another key.
	for _, want := range []string{
		"nats (source, sink, connection): ",
		"  source keys (from:):\n    connection ",
		"    room ",
		"    subject            string    required            what is read",
		"routing_key        string   default: queue's",
		"  connection keys (connections.<name>:, type: nats)",
		"  connection keys (connections.<name>:, type: loom or none)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("no %q in:\n%s", want, r.stdout)
		}
	}
	for i, line := range strings.Split(r.stdout, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("line %d ends in a space: %q", i+1, line)
		}
	}
}

func TestKindsJSON(t *testing.T) {
	r := runCmd(t, context.Background(), "", "kinds", "--json", "stdout", "nats")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []kindkeys.Kind
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if len(got) != 2 || got[0].Name != "stdout" || got[1].Name != "nats" {
		t.Fatalf("want stdout and nats, in that order, got %+v", got)
	}
	if got[0].Sink == nil || got[0].Source != nil || got[0].Connection != nil {
		t.Errorf("stdout is a sink only: %+v", got[0])
	}
	n := got[1]
	if n.Source == nil || n.Sink == nil || n.Connection == nil {
		t.Fatalf("nats has a source, a sink and a connection: %+v", n)
	}
	keys := map[string]kindkeys.Key{}
	for _, k := range n.Connection.Keys {
		keys[k.Key] = k
	}
	if k := keys["url"]; !k.Required || k.Type != "string" {
		t.Errorf("connections.<name>.url of nats: %+v, want a required string", k)
	}
	if k, ok := keys["reconnect_wait"]; !ok || k.Type != "duration" || k.Default == "" {
		t.Errorf("reconnect_wait of nats: %+v, want a duration with a default", k)
	}
	// Descriptions come from the fields' doc comments (pipelines/kindkeys's
	// generated table): most keys have one.
	described := 0
	for _, k := range n.Source.Keys {
		if k.Doc != "" {
			described++
		}
	}
	if described < len(n.Source.Keys)/2 {
		t.Errorf("only %d of %d keys of a nats source are described: %+v", described, len(n.Source.Keys), n.Source.Keys)
	}
}

func TestKindsSchema(t *testing.T) {
	r := runCmd(t, context.Background(), "", "kinds", "--schema")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// The committed schema is the generated one (checked at the repository
	// root); the command prints the same bytes.
	want, err := os.ReadFile("../../docs/config.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if r.stdout != string(want) {
		t.Error("kinds --schema differs from docs/config.schema.json")
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if s["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema is %v", s["$schema"])
	}
}

func TestKindsUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"kinds", "nosuch"},
		{"kinds", "--schema", "--json"},
		{"kinds", "--schema", "nats"},
		{"kinds", "--bogus"},
	} {
		r := runCmd(t, context.Background(), "", args...)
		if r.code != exitUsage || r.stderr == "" || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and a message", args, r.code, r.stdout, r.stderr, exitUsage)
		}
	}
	r := runCmd(t, context.Background(), "", "kinds", "nosuch")
	if !strings.Contains(r.stderr, "known: amqp, ") {
		t.Errorf("the message does not list the kinds: %q", r.stderr)
	}
	r = runCmd(t, context.Background(), "", "help", "kinds")
	if r.code != exitOK || !strings.Contains(r.stdout, "--schema") || !strings.Contains(r.stdout, "--json") {
		t.Errorf("help kinds: exit %d, %q", r.code, r.stdout)
	}
	r = runCmd(t, context.Background(), "", "help")
	if !strings.Contains(r.stdout, "  kinds ") {
		t.Errorf("the usage does not list kinds:\n%s", r.stdout)
	}
}

// The keys kinds lists are those the schema allows (which a test of
// pipelines holds to the loader's): at each source, sink and connection,
// the first part of every listed key, and nothing more but type and when.
func TestKindsListsTheSchemasKeys(t *testing.T) {
	var s struct {
		Defs map[string]struct {
			AllOf []struct {
				If struct {
					Properties struct {
						Type struct {
							Const string `json:"const"`
						} `json:"type"`
					} `json:"properties"`
				} `json:"if"`
				Then struct {
					Properties map[string]any `json:"properties"`
				} `json:"then"`
			} `json:"allOf"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal([]byte(runCmd(t, context.Background(), "", "kinds", "--schema").stdout), &s); err != nil {
		t.Fatal(err)
	}
	schemaKeys := func(def, kind string) []string {
		var out []string
		for _, r := range s.Defs[def].AllOf {
			if r.If.Properties.Type.Const == kind {
				for k := range r.Then.Properties {
					if k != "type" && k != "when" {
						out = append(out, k)
					}
				}
			}
		}
		slices.Sort(out)
		return out
	}
	listed := func(sec *kindkeys.Section) []string {
		var out []string
		for _, k := range sec.Keys {
			first, _, _ := strings.Cut(strings.SplitN(k.Key, "[]", 2)[0], ".")
			if !slices.Contains(out, first) {
				out = append(out, first)
			}
		}
		slices.Sort(out)
		return out
	}
	var list []kindkeys.Kind
	if err := json.Unmarshal([]byte(runCmd(t, context.Background(), "", "kinds", "--json").stdout), &list); err != nil {
		t.Fatal(err)
	}
	for _, k := range list {
		for _, c := range []struct {
			def string
			sec *kindkeys.Section
		}{{"source", k.Source}, {"sink", k.Sink}, {"connection", k.Connection}} {
			if c.sec == nil {
				continue
			}
			want := schemaKeys(c.def, k.Name)
			if got := listed(c.sec); !slices.Equal(got, want) {
				t.Errorf("%s %s: kinds lists %v, the schema allows %v", k.Name, c.def, got, want)
			}
		}
	}
}
