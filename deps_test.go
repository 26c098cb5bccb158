package loombridge_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Dependencies point one way: cmd -> pipelines -> adapter -> internal. A
// package (its non-test files) imports nothing of the layers above it.
func TestDependenciesPointOneWay(t *testing.T) {
	const mod = "github.com/loombridge/loombridge/"
	above := map[string][]string{
		"internal":  {"adapter", "pipelines", "cmd"},
		"adapter":   {"pipelines", "cmd"},
		"pipelines": {"cmd"},
	}
	for layer, forbidden := range above {
		err := filepath.WalkDir(layer, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, up := range forbidden {
					if strings.HasPrefix(p, mod+up+"/") || p == mod+up {
						t.Errorf("%s imports %s: %s must not depend on %s", path, p, layer, up)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
