package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kindkeys"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

func runKinds(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("kinds", "kinds [--json | --schema] [KIND...]", stderr)
	asJSON := fs.Bool("json", false, "print the kinds and their keys as JSON")
	schema := fs.Bool("schema", false, "print a JSON Schema (draft 2020-12) of the whole configuration file")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	reg := kinds.Builtin()
	if *schema {
		if *asJSON || fs.NArg() > 0 {
			fmt.Fprintln(stderr, "loombridge kinds: --schema is the whole file's schema: give it alone")
			return exitUsage
		}
		b, err := pipelines.Schema(reg, kindkeys.Doc)
		if err != nil {
			fmt.Fprintf(stderr, "loombridge kinds: %v\n", err)
			return exitFailure
		}
		_, _ = stdout.Write(b)
		return exitOK
	}
	all, err := kindkeys.Describe(reg, nil)
	if err != nil {
		fmt.Fprintf(stderr, "loombridge kinds: %v\n", err)
		return exitFailure
	}
	list := all
	if fs.NArg() > 0 {
		list = nil
		for _, name := range fs.Args() {
			k, ok := findKind(all, name)
			if !ok {
				names := make([]string, len(all))
				for i, k := range all {
					names[i] = k.Name
				}
				fmt.Fprintf(stderr, "loombridge kinds: unknown kind %q (known: %s)\n", name, strings.Join(names, ", "))
				return exitUsage
			}
			list = append(list, k)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			fmt.Fprintf(stderr, "loombridge kinds: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	printKinds(stdout, list)
	return exitOK
}

func findKind(list []kindkeys.Kind, name string) (kindkeys.Kind, bool) {
	for _, k := range list {
		if k.Name == name {
			return k, true
		}
	}
	return kindkeys.Kind{}, false
}

// printKinds writes each kind, its summary and its keys: source, sink,
// connection, each key with its type and default.
func printKinds(w io.Writer, list []kindkeys.Kind) {
	for i, k := range list {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var roles []string
		for _, r := range []struct {
			name string
			s    *kindkeys.Section
		}{{"source", k.Source}, {"sink", k.Sink}, {"connection", k.Connection}} {
			if r.s != nil {
				roles = append(roles, r.name)
			}
		}
		fmt.Fprintf(w, "%s (%s): %s\n", k.Name, strings.Join(roles, ", "), k.Summary)
		section := func(heading string, s *kindkeys.Section) {
			if s == nil {
				return
			}
			fmt.Fprintf(w, "  %s:\n", heading)
			if len(s.Keys) == 0 {
				fmt.Fprintln(w, "    (no keys)")
				return
			}
			// Columns: key, type, default, description; a long default is not
			// padded to, so one payload template does not push every line right.
			const maxDefWidth = 24
			rows := make([][4]string, len(s.Keys))
			var kw, tw, dw int
			for i, key := range s.Keys {
				def := key.Default
				switch {
				case key.Required:
					def = "required"
				case key.DefaultFrom != "":
					def = "default: " + key.DefaultFrom + "'s"
				case def != "":
					def = "default: " + def
				}
				rows[i] = [4]string{key.Key, key.Type, def, key.Doc}
				kw, tw = max(kw, len(key.Key)), max(tw, len(key.Type))
				if len(def) <= maxDefWidth {
					dw = max(dw, len(def))
				}
			}
			for _, r := range rows {
				line := fmt.Sprintf("    %-*s  %-*s  %-*s  %s", kw, r[0], tw, r[1], dw, r[2], r[3])
				fmt.Fprintln(w, strings.TrimRight(line, " "))
			}
		}
		section("source keys (from:)", k.Source)
		section("sink keys (to.<sink>:, dead_letter:; also when:)", k.Sink)
		if k.Connection != nil {
			heading := "connection keys (connections.<name>:, type: " + k.Name + ")"
			if k.Name == kinds.Loom.Name {
				heading = "connection keys (connections.<name>:, type: loom or none)"
			}
			section(heading, k.Connection)
		}
	}
}
