package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/loombridge/loombridge/internal/testkit"
)

// A configuration replaced by rename (as editors and ConfigMaps do) is
// reloaded without a signal, in-process through run().
func TestRunReloadsWhenTheFileIsReplaced(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	conf := func(topic string) string {
		return fmt.Sprintf(`
log: {stats_interval: 0}
pipelines:
  a:
    from: {type: generate, interval: 5ms}
    to: {f: {type: file, dir: %s, topic: %s, fsync: never}}
`, dir, topic)
	}
	writeFile(t, cfg, conf("first"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testkit.Buffer
	code := make(chan int, 1)
	go func() { code <- run(ctx, []string{"run", "-c", cfg}, nil, &out, &out) }()
	count := func(topic string) int { return len(uuids(t, filepath.Join(dir, topic+".jsonl"))) }
	waitUntil(t, "the first topic", func() bool { return count("first") > 5 })

	tmp := filepath.Join(dir, ".config.yaml.swp")
	writeFile(t, tmp, conf("second"))
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the second topic after the rename", func() bool { return count("second") > 5 })
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d\n%s", c, out.String())
	}
}
