// The README's code blocks are tested here, next to README.md, so that what a
// reader copies works.
//
// Conventions for README.md and every Markdown file under docs/ (the
// reference moved there; what a reader copies from it works too):
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
//     starts with `# fragment` is only a part of one: it is checked to be valid YAML.
//   - In README.md every whole configuration is a recipe, run end to end by
//     recipes_test.go; whole configurations that only illustrate keys belong in
//     docs/.
//   - The README's first 30 lines hold the two commands: the run on the embedded
//     default and the test command, which .ci/run calls verbatim.
package loombridge_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

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

// markdownFiles are the files whose blocks are checked: README.md and the
// reference under docs/.
func markdownFiles(t *testing.T) []string {
	files := []string{"README.md"}
	for _, pattern := range []string{"docs/*.md", "docs/*/*.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

func TestReadmeGoBlocksCompile(t *testing.T) {
	type goBlock struct {
		path string
		block
	}
	var blocks []goBlock
	for _, path := range markdownFiles(t) {
		for _, b := range fencedBlocks(t, path, "go") {
			blocks = append(blocks, goBlock{path, b})
		}
	}
	if len(blocks) == 0 {
		t.Fatal("README.md and docs/ have no ```go block; this test finds none to check")
	}
	for _, b := range blocks {
		if !startsWithPackage(b.text) {
			t.Errorf("%s:%d: a ```go block must be a whole file starting with its package clause", b.path, b.line)
		}
		if formatted, err := format.Source([]byte(b.text)); err != nil {
			t.Errorf("%s:%d: gofmt: %v", b.path, b.line, err)
		} else if string(formatted) != b.text {
			t.Errorf("%s:%d: the block is not gofmt-formatted; gofmt makes it:\n%s", b.path, b.line, formatted)
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
	for i, b := range blocks {
		dir := filepath.Join(tmp, fmt.Sprintf("block%d_line%d", i, b.line))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		abs, err := filepath.Abs(b.path)
		if err != nil {
			t.Fatal(err)
		}
		// The line directive makes every message point into the Markdown file.
		src := fmt.Sprintf("//line %s:%d\n%s", abs, b.line, b.text)
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
	n := 0
	for _, path := range markdownFiles(t) {
		for _, b := range fencedBlocks(t, path, "yaml") {
			n++
			first, _, _ := strings.Cut(b.text, "\n")
			if strings.HasPrefix(strings.TrimSpace(first), "# fragment") {
				var v any
				if err := yaml.Unmarshal([]byte(b.text), &v); err != nil {
					t.Errorf("%s:%d: not valid YAML: %v", path, b.line, err)
				}
				continue
			}
			_, err := pipelines.Parse([]byte(b.text), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: readmeEnviron})
			if err != nil {
				t.Errorf("%s:%d: the configuration does not validate (mark a partial one with a first line \"# fragment\"):\n%v", path, b.line, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("README.md and docs/ have no ```yaml block; this test finds none to check")
	}
}

// The README opens with the two commands, within its first 30 lines: the run on
// the embedded default and the test command, which .ci/run calls verbatim.
func TestReadmeOpensWithTheTwoCommands(t *testing.T) {
	const (
		runCmd  = "go run ./cmd/loombridge run -c config.example.yaml"
		testCmd = "go test -race -count=1 -timeout 20m ./..."
	)
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	head := strings.Join(lines[:min(30, len(lines))], "\n")
	for _, c := range []string{runCmd, testCmd} {
		if !strings.Contains(head, "\n"+c+"\n") {
			t.Errorf("README.md: the first 30 lines lack the command line %q", c)
		}
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "\n"+testCmd+"\n") {
		t.Errorf(".ci/run does not call the README's test command %q verbatim", testCmd)
	}
}

// Every relative link of README.md and docs/ leads to a file that exists and,
// with a #fragment, to a heading of that file (GitHub's anchors).
func TestMarkdownLinksResolve(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := map[string]bool{}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		inside := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inside = !inside
			}
			if inside || !strings.HasPrefix(line, "#") {
				continue
			}
			a[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
		anchors[path] = a
		return a
	}
	for _, path := range markdownFiles(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(target, "#")
			dest := path
			if file != "" {
				dest = filepath.Join(filepath.Dir(path), file)
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %s: %v", path, target, err)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(dest, ".md") && !anchorsOf(dest)[frag] {
				t.Errorf("%s: link %s: %s has no heading with the anchor #%s", path, target, dest, frag)
			}
		}
	}
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces made
// hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
