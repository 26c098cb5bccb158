package kinds

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/loombridge/loombridge/adapter/loom/client"
)

// maxSecretFile bounds what a *_file key reads, so that a FIFO or a device
// named by mistake is refused rather than read forever.
const maxSecretFile = 64 << 10

// readSecretFile reads a password, token or DSN from a file, trimmed of the
// surrounding whitespace. Errors name the file, never its content.
func readSecretFile(path string) (client.Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s: longer than %d bytes", path, maxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	return client.Secret(s), nil
}

// secretOrFile returns value, or the content of file; key names the pair in
// errors ("password").
func secretOrFile(key string, value client.Secret, file string) (client.Secret, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("%s, %s_file: set one, not both", key, key)
	case file != "":
		s, err := readSecretFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", key, err)
		}
		return s, nil
	}
	return value, nil
}
