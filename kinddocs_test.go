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
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/pipelines/kindkeys"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

var updateKindDocs = flag.Bool("update-kind-docs", false, "write the generated key tables of docs/kinds/*.md")

const (
	genBegin = "<!-- BEGIN KEYS: generated from the kind's definition by `go test -run TestKindDocs -update-kind-docs .`; do not edit by hand -->"
	genEnd   = "<!-- END KEYS -->"
)

const modulePath = "github.com/loombridge/loombridge"

func TestKindDocs(t *testing.T) {
	comments := &fieldComments{byType: map[string]map[string]string{}, seen: map[string]string{}}
	described, err := kindkeys.Describe(kinds.Builtin(), func(typ reflect.Type, f reflect.StructField) string { return comments.describe(t, typ, f) })
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, k := range described {
		name := k.Name
		names[name] = true
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
	checkFieldDocs(t, comments.seen)
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

// kindKeys renders the key tables of a kind from kindkeys, the listing
// `loombridge kinds` prints, with the fields' doc comments.
func kindKeys(t *testing.T, k kindkeys.Kind, c *fieldComments) string {
	var b strings.Builder
	b.WriteString("\n")
	section := func(heading string, s *kindkeys.Section) {
		fmt.Fprintf(&b, "\n### %s (`%s`)\n\n", heading, s.GoType)
		if len(s.Keys) == 0 {
			b.WriteString("None.\n")
			return
		}
		b.WriteString("| key | type | default | what it is |\n|---|---|---|---|\n")
		for _, r := range s.Keys {
			def := ""
			switch {
			case r.Required:
				def = "required"
			case r.DefaultFrom != "":
				def = "`" + r.DefaultFrom + "`'s"
			case r.Default != "":
				def = "`" + strings.ReplaceAll(strings.ReplaceAll(r.Default, "|", `\|`), "`", "'") + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.Key, r.Type, def, r.Doc)
		}
	}
	if k.Connection != nil {
		heading := "Connection keys: `connections.<name>`"
		if k.Name != kinds.Loom.Name {
			heading += ", `type: " + k.Name + "`"
		}
		section(heading, k.Connection)
	}
	if k.Source != nil {
		section("Source keys: `from`", k.Source)
	}
	if k.Sink != nil {
		section("Sink keys: `to.<sink>`, `dead_letter`", k.Sink)
	}
	b.WriteString("\n")
	return b.String()
}

// fieldComments reads the doc comments of struct fields from the module's
// source, by package directory and type name.
type fieldComments struct {
	byType map[string]map[string]string // "pkgpath.Type" -> field -> comment
	seen   map[string]string            // kindkeys.DocKey -> what describe said
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
	if doc == "" && f.Name == "Connection" {
		doc = "the name of a connection under `connections:`"
	}
	if doc != "" {
		c.seen[kindkeys.DocKey(typ, f)] = doc
	}
	return strings.ReplaceAll(doc, "|", `\|`)
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

// fieldDocsPath holds the descriptions of the keys for `loombridge kinds`,
// generated from the fields' doc comments, which the binary has no source
// to read: one source of truth, copied here and checked.
const fieldDocsPath = "pipelines/kindkeys/fielddocs.go"

func checkFieldDocs(t *testing.T, docs map[string]string) {
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("// Code generated by `go test -run TestKindDocs -update-kind-docs .` from the fields' doc comments; DO NOT EDIT.\n\n")
	b.WriteString("package kindkeys\n\n// fieldDocs describes the kinds' keys by DocKey, for the listing at run time.\nvar fieldDocs = map[string]string{\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "\t%s: %s,\n", strconv.Quote(k), strconv.Quote(docs[k]))
	}
	b.WriteString("}\n")
	want, err := format.Source([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(fieldDocsPath)
	if err == nil && string(got) == string(want) {
		return
	}
	if *updateKindDocs {
		if err := os.WriteFile(fieldDocsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s written", fieldDocsPath)
		return
	}
	t.Errorf("%s differs from the fields' doc comments (%v); run go test -run TestKindDocs -update-kind-docs .", fieldDocsPath, err)
}
