package server

import (
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// Auth modes, as in loomd's auth.mode.
const (
	ModeDisabled = "disabled" // everyone may produce and consume everywhere
	ModeToken    = "token"    // the hello's token must match a TokenRule
	ModeMTLS     = "mtls"     // the client certificate's common name must match a CertRule
	// ModeBoth accepts a session when either a token rule or a certificate rule
	// allows it (not both at once): loomd's documentation does not say, and this is
	// the permissive reading.
	ModeBoth = "both"
)

// Auth is the server's authorisation policy. The zero value disables it.
type Auth struct {
	Mode   string // ModeDisabled (default), ModeToken, ModeMTLS or ModeBoth
	Tokens []TokenRule
	Certs  []CertRule
}

// TokenRule lets the holder of Token act as Principal in Rooms ("*" for all) with
// Roles ("produce", "consume").
type TokenRule struct {
	Token, Principal string
	Rooms            []string
	Roles            []string
}

// CertRule lets a client whose verified certificate has CommonName act as Principal in
// Rooms ("*" for all) with Roles ("produce", "consume").
type CertRule struct {
	CommonName, Principal string
	Rooms                 []string
	Roles                 []string
}

func (a Auth) validate() error {
	switch a.Mode {
	case "", ModeDisabled, ModeToken, ModeMTLS, ModeBoth:
		return nil
	}
	return fmt.Errorf("loom server: unknown auth mode %q", a.Mode)
}

// allow reports whether the session may open, and as whom. certs are the client's
// verified certificates, leaf first. The token is compared in constant time and never
// logged; a rule with an empty token matches nothing.
func (a Auth) allow(h wire.Hello, certs []*x509.Certificate) (principal string, ok bool) {
	room := h.RoomOrDefault()
	role := "produce"
	if h.Role == wire.RoleConsumer {
		role = "consume"
	}
	mode := a.Mode
	if mode == "" || mode == ModeDisabled {
		return "", true
	}
	if mode == ModeToken || mode == ModeBoth {
		for _, r := range a.Tokens {
			if r.Token != "" && subtle.ConstantTimeCompare([]byte(r.Token), []byte(h.Token)) == 1 && grants(r.Rooms, r.Roles, room, role) {
				return r.Principal, true
			}
		}
	}
	if (mode == ModeMTLS || mode == ModeBoth) && len(certs) > 0 {
		cn := certs[0].Subject.CommonName
		for _, r := range a.Certs {
			if r.CommonName == cn && grants(r.Rooms, r.Roles, room, role) {
				return r.Principal, true
			}
		}
	}
	return "", false
}

func grants(rooms, roles []string, room, role string) bool {
	return (slices.Contains(rooms, "*") || slices.Contains(rooms, room)) && slices.Contains(roles, role)
}
