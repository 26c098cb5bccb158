// The README's code blocks are tested here, next to README.md, so that what a
// reader copies works.
//
// Conventions for README.md:
//
//   - Every ```go block is a whole Go file that a reader can copy: it starts with
//     its package clause (comments before it are fine), imports what it uses and is
//     gofmt-formatted. Each block is written to a directory of its own in a
//     temporary directory inside the module (so imports of this module resolve)
//     and checked with `go vet`, which type-checks it as the compiler does. There
//     are no fragments: text that is not meant to compile belongs in a block with
//     another language (```text).
//   - Every ```yaml block is a whole configuration and must load as
//     `loombridge validate` loads it (pipelines.Parse with kinds.Builtin()), with
//     the environment readmeEnviron below and nothing else. A block whose first line
//     is `# fragment` is only a part of one: it is checked to be valid YAML.
package loombridge_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// readmeEnviron is the environment the README's configurations are validated
// with: placeholders for the variables they reference, as a reader would set them.
func readmeEnviron() []string {
	return []string{
		"LOOM_TOKEN=placeholder-token",
		"BILLING_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
}

// block is one fenced code block of a Markdown file.
type block struct {
	line int    // line number of the block's first content line
	text string // the content, without the fences
}

// fencedBlocks returns the content of every block fenced by ```lang.
func fencedBlocks(t *testing.T, path, lang string) []block {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		out    []block
		cur    *block
		inside bool // in any fenced block, of whatever language
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fence := strings.HasPrefix(strings.TrimSpace(line), "```")
		switch {
		case fence && !inside:
			inside = true
			if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "```")) == lang {
				cur = &block{line: n + 1}
			}
		case fence && inside:
			inside = false
			if cur != nil {
				out = append(out, *cur)
				cur = nil
			}
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if inside {
		t.Fatalf("%s: a fenced block is not closed", path)
	}
	return out
}

func TestReadmeGoBlocksCompile(t *testing.T) {
	blocks := fencedBlocks(t, "README.md", "go")
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block; this test finds none to check")
	}
	readme, err := filepath.Abs("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if !startsWithPackage(b.text) {
			t.Errorf("README.md:%d: a ```go block must be a whole file starting with its package clause", b.line)
		}
		if formatted, err := format.Source([]byte(b.text)); err != nil {
			t.Errorf("README.md:%d: gofmt: %v", b.line, err)
		} else if string(formatted) != b.text {
			t.Errorf("README.md:%d: the block is not gofmt-formatted; gofmt makes it:\n%s", b.line, formatted)
		}
	}
	if t.Failed() {
		return
	}
	if testing.Short() {
		t.Skip("-short: the blocks are not compiled")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to compile with: %v", err)
	}

	// A directory inside the module, so that the module's packages resolve; the
	// leading underscore keeps ./... patterns away from it should one be left over.
	tmp, err := os.MkdirTemp(".", "_readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	args := []string{"vet"}
	for _, b := range blocks {
		dir := filepath.Join(tmp, fmt.Sprintf("line%d", b.line))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// The line directive makes every message point into README.md.
		src := fmt.Sprintf("//line %s:%d\n%s", readme, b.line, b.text)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "./"+filepath.ToSlash(dir))
	}
	cmd := exec.Command(goCmd, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startsWithPackage reports whether src's first line that is neither blank nor
// a comment is a package clause.
func startsWithPackage(src string) bool {
	inComment := false
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case inComment:
			if _, after, ok := strings.Cut(line, "*/"); ok {
				inComment = false
				if strings.TrimSpace(after) != "" {
					return strings.HasPrefix(strings.TrimSpace(after), "package ")
				}
			}
		case line == "" || strings.HasPrefix(line, "//"):
		case strings.HasPrefix(line, "/*"):
			inComment = !strings.Contains(line[2:], "*/")
		default:
			return strings.HasPrefix(line, "package ")
		}
	}
	return false
}

func TestReadmeYAMLBlocksValidate(t *testing.T) {
	blocks := fencedBlocks(t, "README.md", "yaml")
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```yaml block; this test finds none to check")
	}
	for _, b := range blocks {
		first, _, _ := strings.Cut(b.text, "\n")
		if strings.TrimSpace(first) == "# fragment" {
			var v any
			if err := yaml.Unmarshal([]byte(b.text), &v); err != nil {
				t.Errorf("README.md:%d: not valid YAML: %v", b.line, err)
			}
			continue
		}
		_, err := pipelines.Parse([]byte(b.text), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: readmeEnviron})
		if err != nil {
			t.Errorf("README.md:%d: the configuration does not validate (mark a partial one with a first line \"# fragment\"):\n%v", b.line, err)
		}
	}
}
