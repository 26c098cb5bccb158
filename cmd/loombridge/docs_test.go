package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docBlockAfter returns the content of the first fenced block after marker in
// a Markdown file.
func docBlockAfter(t *testing.T, doc, path, marker string) string {
	t.Helper()
	i := strings.Index(doc, marker)
	if i < 0 {
		t.Fatalf("%s: no %q", path, marker)
	}
	rest := doc[i+len(marker):]
	open := strings.Index(rest, "```")
	if open < 0 {
		t.Fatalf("%s: no block after %q", path, marker)
	}
	rest = rest[open:]
	rest = rest[strings.Index(rest, "\n")+1:]
	end := strings.Index(rest, "```")
	if end < 0 {
		t.Fatalf("%s: the block after %q is not closed", path, marker)
	}
	return rest[:end]
}

// The sample output of validate in docs/configuration.md is what validate
// prints for the sample configuration next to it.
func TestDocsValidateExample(t *testing.T) {
	const path = "../../docs/configuration.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	config := docBlockAfter(t, string(b), path, "<!-- validate example: config -->")
	want := docBlockAfter(t, string(b), path, "<!-- validate example: output -->")
	t.Chdir(t.TempDir())
	if err := os.WriteFile(filepath.Join(".", "config.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, context.Background(), "", "validate", "-c", "config.yaml")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	if r.stderr != want {
		t.Errorf("%s shows:\n%s\nvalidate prints:\n%s", path, want, r.stderr)
	}
}
