package loombridge_test

// docs/kinds/<kind>.md has one page per kind of pipelines/kinds. The part of
// each page between the markers below, the tables of its keys, is generated
// from the kind's definition (kinds.Builtin(): its source, sink and connection
// structs, their koanf keys and the doc comments of their fields) and checked
// here; `go test -run TestKindDocs -update-kind-docs .` writes it again. The
// prose around it is written by hand.

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

var updateKindDocs = flag.Bool("update-kind-docs", false, "write the generated key tables of docs/kinds/*.md")

const (
	genBegin = "<!-- BEGIN KEYS: generated from the kind's definition by `go test -run TestKindDocs -update-kind-docs .`; do not edit by hand -->"
	genEnd   = "<!-- END KEYS -->"
)

const modulePath = "github.com/loombridge/loombridge"

// kindDocBase holds a connection of every type, named after it, for the
// minimal endpoints below.
const kindDocBase = `
connections:
  loom: {addr: "127.0.0.1:4433"}
  nats: {type: nats, url: "nats://127.0.0.1:4222"}
  amqp: {type: amqp, amqp_uri: "amqp://127.0.0.1:5672/"}
  kafka: {type: kafka, brokers: ["127.0.0.1:9092"]}
  redis: {type: redis, addr: "127.0.0.1:6379"}
  sql: {type: sql, driver: postgres, dsn: "postgres://127.0.0.1:5432/app"}
`

// minimalEndpoints are the least a source or sink of each kind needs: checked
// as a command line's --source and --sink are, their defaults are what the
// tables show, and the keys they set are shown as required.
var minimalEndpoints = map[string][2]string{ // kind -> source, sink
	"loom":     {`{type: loom, connection: loom, room: r}`, `{type: loom, connection: loom, room: r}`},
	"file":     {`{type: file, dir: ./d, topic: t}`, `{type: file, dir: ./d}`},
	"webhook":  {"", `{type: webhook, endpoints: [{name: e, url: "https://example.com/hook"}]}`},
	"generate": {`{type: generate}`, ""},
	"stdout":   {"", `{type: stdout}`},
	"echo":     {`{type: echo, addr: "127.0.0.1:8099"}`, ""},
	"http":     {`{type: http, addr: "127.0.0.1:8080"}`, ""},
	"nats":     {`{type: nats, connection: nats, subject: s}`, `{type: nats, connection: nats, subject: s}`},
	"amqp":     {`{type: amqp, connection: amqp, queue: q}`, `{type: amqp, connection: amqp, queue: q}`},
	"kafka":    {`{type: kafka, connection: kafka, topic: t}`, `{type: kafka, connection: kafka, topic: t}`},
	"redis":    {`{type: redis, connection: redis, stream: s}`, `{type: redis, connection: redis, stream: s}`},
	"sql":      {`{type: sql, connection: sql, table: t}`, `{type: sql, connection: sql, table: t}`},
}

func TestKindDocs(t *testing.T) {
	reg := kinds.Builtin()
	names := map[string]bool{}
	for _, n := range append(append(reg.Names(true), reg.Names(false)...), reg.ConnectionNames()...) {
		names[n] = true
	}
	comments := &fieldComments{byType: map[string]map[string]string{}}
	for name := range names {
		k, _ := reg.Lookup(name)
		want := kindKeys(t, k, comments)
		path := filepath.Join("docs", "kinds", name+".md")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("kind %s has no page: %v", name, err)
			continue
		}
		page := string(b)
		i, j := strings.Index(page, genBegin), strings.Index(page, genEnd)
		if i < 0 || j < i {
			t.Errorf("%s: no generated section (the lines %q … %q)", path, genBegin, genEnd)
			continue
		}
		got := page[i+len(genBegin) : j]
		if got == want {
			continue
		}
		if *updateKindDocs {
			if err := os.WriteFile(path, []byte(page[:i+len(genBegin)]+want+page[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: keys written", path)
			continue
		}
		t.Errorf("%s: the generated keys differ from the kind's definition; run go test -run TestKindDocs -update-kind-docs . (want:\n%s)", path, want)
	}
	entries, err := os.ReadDir(filepath.Join("docs", "kinds"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".md")
		if ok && n != "README" && !names[n] {
			t.Errorf("docs/kinds/%s: no kind %q in kinds.Builtin()", e.Name(), n)
		}
	}
}

// kindKeys renders the key tables of a kind.
func kindKeys(t *testing.T, k pipelines.Kind, c *fieldComments) string {
	base, err := pipelines.Parse([]byte(kindDocBase), pipelines.LoadOptions{Kinds: kinds.Builtin(), AllowNoPipelines: true, Environ: func() []string { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	var baseTree struct {
		Connections map[string]map[string]any `yaml:"connections"`
	}
	if err := yaml.Unmarshal([]byte(kindDocBase), &baseTree); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("\n")
	// section writes the table of v's type, with the defaults checked holds;
	// the keys of set are required.
	section := func(heading string, typ reflect.Type, checked reflect.Value, set map[string]any, skipClient bool) {
		rows := keyRows(t, typ, checked, "", skipClient, c)
		fmt.Fprintf(&b, "\n### %s (`%s`)\n\n", heading, typ.String())
		if len(rows) == 0 {
			b.WriteString("None.\n")
			return
		}
		b.WriteString("| key | type | default | what it is |\n|---|---|---|---|\n")
		for _, r := range rows {
			def := r.def
			if _, ok := set[r.key]; ok && r.key != "type" {
				def = "required"
			}
			for key, val := range set { // derived from a required key: say which
				if sv, ok := val.(string); ok && key != "type" && key != r.key && def == "`"+sv+"`" {
					def = "`" + key + "`'s"
				}
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.key, r.typ, def, r.doc)
		}
	}
	endpoint := func(heading, minimal string, sink bool) {
		var ep any
		var err error
		if sink {
			ep, _, err = pipelines.ParseSink([]byte(minimal), base, kinds.Builtin())
		} else {
			ep, _, err = pipelines.ParseSource([]byte(minimal), base, kinds.Builtin())
		}
		if err != nil {
			t.Fatalf("kind %s: %s %s: %v", k.Name, heading, minimal, err)
		}
		var set map[string]any
		if err := yaml.Unmarshal([]byte(minimal), &set); err != nil {
			t.Fatal(err)
		}
		v := reflect.ValueOf(ep).Elem()
		// The adapter's own defaults, applied when the adapter is built rather
		// than by the kind's check: an embedded adapter config's SetDefaults.
		for i := range v.NumField() {
			if f := v.Field(i); f.CanAddr() && v.Type().Field(i).IsExported() {
				if d, ok := f.Addr().Interface().(interface{ SetDefaults() }); ok {
					d.SetDefaults()
				}
			}
		}
		section(heading, v.Type(), v, set, true)
	}
	if k.Name == kinds.Loom.Name {
		cl := base.Connections["loom"].Client
		cl.SetDefaults()
		v := reflect.ValueOf(&cl).Elem()
		section("Connection keys: `connections.<name>`", v.Type(), v, map[string]any{"addr": nil}, false)
	}
	if k.Connection != nil {
		v := reflect.ValueOf(base.Connections[k.Name].Broker).Elem()
		section("Connection keys: `connections.<name>`, `type: "+k.Name+"`", v.Type(), v, baseTree.Connections[k.Name], false)
	}
	if k.Source != nil {
		endpoint("Source keys: `from`", minimalEndpoints[k.Name][0], false)
	}
	if k.Sink != nil {
		endpoint("Sink keys: `to.<sink>`, `dead_letter`", minimalEndpoints[k.Name][1], true)
	}
	b.WriteString("\n")
	return b.String()
}

// keyRow is one key of a table.
type keyRow struct{ key, typ, def, doc string }

var (
	durationType = reflect.TypeOf(time.Duration(0))
	secretType   = reflect.TypeOf(client.Secret(""))
	clientType   = reflect.TypeOf(client.Config{})
)

// keyRows lists the koanf keys of a struct type, with the value each has in
// checked (a checked endpoint of that type, or the zero Value for none) as
// its default.
func keyRows(t *testing.T, typ reflect.Type, checked reflect.Value, prefix string, skipClient bool, c *fieldComments) []keyRow {
	var out []keyRow
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		squash := strings.Contains(f.Tag.Get("koanf"), ",squash")
		if !f.IsExported() || tag == "-" || (tag == "" && !squash) {
			continue
		}
		var fv reflect.Value
		if checked.IsValid() {
			fv = checked.Field(i)
		}
		ft := f.Type
		if skipClient && ft == clientType {
			continue // connection keys: under connections, refused here
		}
		if squash {
			out = append(out, keyRows(t, ft, fv, prefix, skipClient, c)...)
			continue
		}
		key := prefix + tag
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			if fv.IsValid() {
				if fv.IsNil() {
					fv = reflect.Value{}
				} else {
					fv = fv.Elem()
				}
			}
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && strings.HasPrefix(ft.Elem().PkgPath(), modulePath) {
			// A list of mappings (a webhook's endpoints): each item's keys, as
			// key[].item_key, with the row of the list itself first.
			out = append(out, keyRow{key, "list of mappings", "", c.describe(t, typ, f)})
			out = append(out, keyRows(t, ft.Elem(), reflect.Value{}, key+"[].", skipClient, c)...)
			continue
		}
		if ft.Kind() == reflect.Struct && ft != durationType && ft.PkgPath() != "" && ft.NumField() > 0 && !strings.HasPrefix(ft.PkgPath(), "crypto/") {
			sub := keyRows(t, ft, fv, key+".", skipClient, c)
			if len(sub) > 0 {
				out = append(out, sub...)
				continue
			}
		}
		out = append(out, keyRow{key, typeName(ft), defaultOf(fv), c.describe(t, typ, f)})
	}
	return out
}

// defaultOf shows a checked value as a default: nothing for a zero value,
// `<pipeline>` and `<host name>` for what comes from the pipeline and host.
func defaultOf(v reflect.Value) string {
	if !v.IsValid() || v.IsZero() {
		return ""
	}
	var s string
	switch {
	case v.Type() == durationType:
		s = time.Duration(v.Int()).String()
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Map:
		if v.Len() == 0 {
			return ""
		}
		s = fmt.Sprint(v.Interface())
	default:
		s = fmt.Sprint(v.Interface())
	}
	if s == pipelines.AdhocPipeline || strings.Contains(s, "_"+pipelines.AdhocPipeline) {
		s = strings.ReplaceAll(s, pipelines.AdhocPipeline, "<pipeline>")
	}
	if h, err := os.Hostname(); err == nil && h != "" && s == h {
		s = "<host name>"
	}
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "`", "'")
	return "`" + s + "`"
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == secretType:
		return "string (secret)"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Struct:
		return "mapping"
	}
	return t.Kind().String()
}

// fieldComments reads the doc comments of struct fields from the module's
// source, by package directory and type name.
type fieldComments struct {
	byType map[string]map[string]string // "pkgpath.Type" -> field -> comment
}

var spaces = regexp.MustCompile(`\s+`)

func (c *fieldComments) describe(t *testing.T, typ reflect.Type, f reflect.StructField) string {
	id := typ.PkgPath() + "." + typ.Name()
	fields, ok := c.byType[id]
	if !ok {
		fields = c.load(t, typ)
		c.byType[id] = fields
	}
	doc := spaces.ReplaceAllString(strings.TrimSpace(fields[f.Name]), " ")
	// "Durable is the consumer's name" reads as the key's row: "the consumer's name".
	if rest, ok := strings.CutPrefix(doc, f.Name+" "); ok {
		doc = strings.TrimPrefix(rest, "is ")
	}
	doc = strings.ReplaceAll(doc, "|", `\|`)
	if doc == "" && f.Name == "Connection" {
		doc = "the name of a connection under `connections:`"
	}
	return doc
}

func (c *fieldComments) load(t *testing.T, typ reflect.Type) map[string]string {
	out := map[string]string{}
	rel, ok := strings.CutPrefix(typ.PkgPath(), modulePath)
	if !ok {
		return out // outside the module: no comments
	}
	dir := "." + rel
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	for _, path := range files {
		file, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != typ.Name() {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			for _, fl := range st.Fields.List {
				doc := fl.Doc.Text()
				if doc == "" {
					doc = fl.Comment.Text()
				}
				for _, n := range fl.Names {
					out[n.Name] = doc
				}
			}
			return false
		})
	}
	return out
}
