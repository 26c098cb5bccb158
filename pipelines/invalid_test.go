package pipelines_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// invalidCase is one file of testdata/invalid: a configuration that must be
// refused, with the exact error lines it must give ("# want: ..." in order)
// and the environment it is loaded with ("# env: NAME=value"; nothing else of
// the process's environment is seen).
type invalidCase struct {
	want    []string
	environ []string
}

func readInvalidCase(t *testing.T, b []byte) invalidCase {
	t.Helper()
	var c invalidCase
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "# want: "):
			c.want = append(c.want, strings.TrimPrefix(line, "# want: "))
		case strings.HasPrefix(line, "# env: "):
			c.environ = append(c.environ, strings.TrimPrefix(line, "# env: "))
		}
	}
	return c
}

func TestInvalidConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 32 {
		t.Fatalf("%d files in testdata/invalid, want at least 32", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c := readInvalidCase(t, b)
			if len(c.want) == 0 {
				t.Fatalf("%s: no \"# want:\" line", file)
			}
			cfg, err := pipelines.Parse(b, pipelines.LoadOptions{
				Kinds:   kinds.Builtin(),
				Environ: func() []string { return c.environ },
			})
			if err == nil {
				t.Fatalf("%s: loaded without error (%d pipelines); want:\n%s", file, len(cfg.Pipelines), strings.Join(c.want, "\n"))
			}
			var es pipelines.Errors
			if !errors.As(err, &es) {
				t.Fatalf("%s: error is %T, not pipelines.Errors: %v", file, err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("%s: wrong errors\ngot:\n%s\nwant:\n%s", file, prefixLines("# want: ", got), prefixLines("# want: ", c.want))
			}
		})
	}
}

func prefixLines(prefix string, lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}
