package wire

import (
	"fmt"
	"io"
)

// DefaultRoom is the room the server uses when a hello names none.
const DefaultRoom = "default"

// Hello opens a session. Its Token is a secret: String and GoString never show it.
type Hello struct {
	Role  Role
	Name  string
	Room  string
	Token string
}

// String describes the hello without its token.
func (h Hello) String() string {
	tok := "none"
	if h.Token != "" {
		tok = "redacted"
	}
	return fmt.Sprintf("%s name=%q room=%q token=%s", h.Role, h.Name, h.Room, tok)
}

// GoString keeps the token out of %#v too.
func (h Hello) GoString() string { return "wire.Hello{" + h.String() + "}" }

// RoomOrDefault returns the room the server will use.
func (h Hello) RoomOrDefault() string {
	if h.Room == "" {
		return DefaultRoom
	}
	return h.Room
}

// Validate checks the hello against the limits, naming the offending field.
func (h Hello) Validate(lim Limits) error {
	if h.Role != RoleProducer && h.Role != RoleConsumer {
		return fmt.Errorf("wire: hello role: %w: %s", ErrBadHello, h.Role)
	}
	if err := checkLen(len(h.Name), lim.MaxName, "hello name"); err != nil {
		return err
	}
	if err := checkLen(len(h.Room), lim.MaxRoom, "hello room"); err != nil {
		return err
	}
	// The token's length may be reported, never its value.
	return checkLen(len(h.Token), lim.MaxToken, "hello token")
}

// AppendHello appends the encoded hello to dst. It does not check limits: call
// Validate first.
func AppendHello(dst []byte, h Hello) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, Version, byte(h.Role))
	dst = appendBytes(dst, []byte(h.Name))
	dst = appendBytes(dst, []byte(h.Room))
	return appendBytes(dst, []byte(h.Token))
}

// ReadHello decodes a hello.
func ReadHello(r Reader, lim Limits) (Hello, error) {
	var fixed [6]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Hello{}, fmt.Errorf("wire: hello: %w", err)
	}
	if string(fixed[:4]) != Magic {
		return Hello{}, fmt.Errorf("wire: hello magic: %w: got %q", ErrBadHello, fixed[:4])
	}
	if fixed[4] != Version {
		return Hello{}, fmt.Errorf("wire: hello version: %w: got %d, want %d", ErrBadHello, fixed[4], Version)
	}
	h := Hello{Role: Role(fixed[5])}
	if h.Role != RoleProducer && h.Role != RoleConsumer {
		return Hello{}, fmt.Errorf("wire: hello role: %w: %s", ErrBadHello, h.Role)
	}
	name, err := readBytes(r, lim.MaxName, "hello name")
	if err != nil {
		return Hello{}, err
	}
	room, err := readBytes(r, lim.MaxRoom, "hello room")
	if err != nil {
		return Hello{}, err
	}
	tok, err := readBytes(r, lim.MaxToken, "hello token")
	if err != nil {
		return Hello{}, err
	}
	h.Name, h.Room, h.Token = string(name), string(room), string(tok)
	return h, nil
}
