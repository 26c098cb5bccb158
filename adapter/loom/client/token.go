package client

import (
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// tokenCheck is how often, at most, a client looks at its token_file again.
const tokenCheck = time.Second

// tokenSource is the token a client's hellos carry. A token_file is read at dial
// and looked at again (its size and modification time: one stat) at most once per
// tokenCheck as streams open: a token rotated in the file is used from the next
// stream on, without a new connection. Without it, a consumer refused after a
// rotation gone wrong (the server restarted with new tokens, the file not yet
// updated) would retry over its connection with the old token until that
// connection ended, however soon the file was fixed.
type tokenSource struct {
	cfg    Config
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	tok     string
	size    int64
	mod     time.Time
	checked time.Time
}

func newTokenSource(cfg Config, logger watermill.LoggerAdapter) (*tokenSource, error) {
	t := &tokenSource{cfg: cfg, logger: logger, checked: time.Now()}
	if cfg.TokenFile != "" {
		if fi, err := os.Stat(cfg.TokenFile); err == nil {
			t.size, t.mod = fi.Size(), fi.ModTime()
		}
	}
	tok, err := cfg.token()
	if err != nil {
		return nil, err
	}
	t.tok = tok
	return t, nil
}

// get returns the token, and whether it differs from the one get returned before.
// A file that changed but cannot be read (in the middle of a rotation, say) keeps
// the token read before, and is tried again at the next check.
func (t *tokenSource) get() (tok string, changed bool) {
	if t.cfg.TokenFile == "" {
		return t.tok, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if now.Sub(t.checked) < tokenCheck {
		return t.tok, false
	}
	t.checked = now
	fi, err := os.Stat(t.cfg.TokenFile)
	if err != nil || (fi.Size() == t.size && fi.ModTime().Equal(t.mod)) {
		return t.tok, false
	}
	tok, err = t.cfg.token() // its errors name the file, never the token
	if err != nil {
		t.logger.Error("Loom token_file changed but cannot be read; keeping the token read before", err, nil)
		return t.tok, false
	}
	t.size, t.mod = fi.Size(), fi.ModTime()
	changed = tok != t.tok
	t.tok = tok
	return tok, changed
}
