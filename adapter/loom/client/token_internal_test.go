package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// A token_file is read again when it changed (size or modification time) and
// tokenCheck has passed; a file that cannot be read keeps the token read before,
// and the log says so without the token.
func TestTokenSourceRereadsChangedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	write := func(tok string) {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	cfg := Config{TokenFile: path}
	cfg.SetDefaults()
	var logged strings.Builder
	ts, err := newTokenSource(cfg, watermill.NewStdLoggerWithOut(&logged, false, false))
	if err != nil {
		t.Fatal(err)
	}
	elapse := func() { ts.checked = time.Now().Add(-2 * tokenCheck) }

	if tok, changed := ts.get(); tok != "first" || changed {
		t.Fatalf("get = %q, %v; want the token read at dial, unchanged", tok, changed)
	}
	write("second-token")
	if tok, _ := ts.get(); tok != "first" {
		t.Fatalf("get within tokenCheck of the last look = %q, want %q (the file is looked at once per %s)", tok, "first", tokenCheck)
	}
	elapse()
	if tok, changed := ts.get(); tok != "second-token" || !changed {
		t.Fatalf("get after the file changed = %q, %v; want %q, changed", tok, changed, "second-token")
	}
	elapse()
	if tok, changed := ts.get(); tok != "second-token" || changed {
		t.Fatalf("get with the file unchanged = %q, %v; want %q, unchanged", tok, changed, "second-token")
	}

	// Mid-rotation: the file is there but holds more than a token may be.
	if err := os.WriteFile(path, []byte(strings.Repeat("x", cfg.Limits.MaxToken+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	elapse()
	if tok, changed := ts.get(); tok != "second-token" || changed {
		t.Fatalf("get with an unreadable token_file = %q, %v; want the token read before", tok, changed)
	}
	if !strings.Contains(logged.String(), "token_file") || strings.Contains(logged.String(), "second-token") {
		t.Fatalf("log %q: want the failure named, and no token in it", logged.String())
	}
}
