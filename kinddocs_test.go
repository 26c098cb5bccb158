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
	var b strings.Builder
	b.WriteString("\n")
	section := func(title string, v any, skipClient bool) {
		rows := keyRows(t, reflect.TypeOf(v).Elem(), "", skipClient, c)
		fmt.Fprintf(&b, "\n### %s keys (`%s`)\n\n", title, reflect.TypeOf(v).Elem().String())
		if len(rows) == 0 {
			b.WriteString("None.\n")
			return
		}
		b.WriteString("| key | type | what it is |\n|---|---|---|\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", r[0], r[1], r[2])
		}
	}
	if k.Name == kinds.Loom.Name {
		section("Connection (`connections.<name>`)", &client.Config{}, false)
	}
	if k.Connection != nil {
		section("Connection (`connections.<name>`, `type: "+k.Name+"`)", k.Connection(), false)
	}
	if k.Source != nil {
		section("Source (`from`)", k.Source(), true)
	}
	if k.Sink != nil {
		section("Sink (`to.<sink>`, `dead_letter`)", k.Sink(), true)
	}
	b.WriteString("\n")
	return b.String()
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	secretType   = reflect.TypeOf(client.Secret(""))
	clientType   = reflect.TypeOf(client.Config{})
)

// keyRows lists the koanf keys of a struct type: key, type, description.
func keyRows(t *testing.T, typ reflect.Type, prefix string, skipClient bool, c *fieldComments) [][3]string {
	var out [][3]string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		squash := strings.Contains(f.Tag.Get("koanf"), ",squash")
		if !f.IsExported() || tag == "-" || (tag == "" && !squash) {
			continue
		}
		ft := f.Type
		if skipClient && ft == clientType {
			continue // connection keys: under connections, refused here
		}
		if squash {
			out = append(out, keyRows(t, ft, prefix, skipClient, c)...)
			continue
		}
		key := prefix + tag
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != durationType && ft.PkgPath() != "" && ft.NumField() > 0 && !strings.HasPrefix(ft.PkgPath(), "crypto/") {
			sub := keyRows(t, ft, key+".", skipClient, c)
			if len(sub) > 0 {
				out = append(out, sub...)
				continue
			}
		}
		out = append(out, [3]string{key, typeName(ft), c.describe(t, typ, f)})
	}
	return out
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
