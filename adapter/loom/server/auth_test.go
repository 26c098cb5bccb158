package server

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net/http"
	"testing"

	"github.com/loombridge/loombridge/internal/testkit"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

func tokenAuth() Auth {
	return Auth{Mode: ModeToken, Tokens: []TokenRule{
		{Token: "tok-producer-secret", Principal: "p", Rooms: []string{"orders"}, Roles: []string{"produce"}},
		{Token: "tok-consumer-secret", Principal: "c", Rooms: []string{"*"}, Roles: []string{"consume"}},
	}}
}

func TestTokenAuthQUIC(t *testing.T) {
	logs := &testkit.Buffer{}
	s := start(t, Config{Auth: tokenAuth(), Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	conn := dialQUIC(t, s, nil, nil)
	for _, tc := range []struct {
		name        string
		role        wire.Role
		room, token string
	}{
		{"wrong token", wire.RoleProducer, "orders", "nope-secret"},
		{"no token", wire.RoleConsumer, "orders", ""},
		{"wrong role", wire.RoleConsumer, "orders", "tok-producer-secret"},
		{"wrong room", wire.RoleProducer, "other", "tok-producer-secret"},
		{"default room not granted", wire.RoleProducer, "", "tok-producer-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Refused
			p := openQUIC(t, conn, tc.role, tc.room, tc.token)
			readEOF(t, p.str) // refused: the stream is closed, nothing else
			if got := s.Stats().Refused; got != before+1 {
				t.Fatalf("Refused = %d, want %d", got, before+1)
			}
		})
	}
	// The right tokens get through.
	out := make(chan got, 1)
	c := quicConsumer(t, conn, "orders", "tok-consumer-secret", 0, out, false)
	if err := s.WaitConsumers(testCtx(t), "orders", 1); err != nil {
		t.Fatal(err)
	}
	p := openQUIC(t, conn, wire.RoleProducer, "orders", "tok-producer-secret")
	p.write(msg("k", 0, true, []byte("x")))
	checkBody(t, recv(t, out), "k", []byte("x"))
	c.ack(1)
	producerFinish(t, p)
	if st := s.RoomStats("orders"); st.Refused != 3 || st.Acked != 1 {
		t.Fatalf("room stats %+v", st)
	}
	if bytes.Contains([]byte(logs.String()), []byte("secret")) {
		t.Fatalf("a token reached the log:\n%s", logs.String())
	}
	if logs.String() == "" {
		t.Fatal("nothing logged")
	}
}

func TestTokenAuthHTTP3(t *testing.T) {
	s := start(t, Config{Auth: tokenAuth()})
	tr := h3Transport(t, s)
	p := openH3(t, tr, s, http.MethodPost, "/stream", hello(wire.RoleProducer, "orders", "bad-token"))
	if code := p.response().StatusCode; code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", code)
	}
	p = openH3(t, tr, s, http.MethodPost, "/stream", hello(wire.RoleConsumer, "orders", "tok-producer-secret"))
	if code := p.response().StatusCode; code != http.StatusUnauthorized {
		t.Fatalf("wrong role: status %d, want 401", code)
	}
	p = openH3(t, tr, s, http.MethodPost, "/stream", hello(wire.RoleProducer, "orders", "tok-producer-secret"))
	p.write(msg("k", 0, true, []byte("x"))) // no consumer: discarded
	producerFinish(t, p)
	if st := s.Stats(); st.Refused != 2 || st.Discarded != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMTLSAndBoth(t *testing.T) {
	cc := testkit.NewClientCert(t, "alice")
	pool, alice := cc.CAs, cc.TLS
	rules := []CertRule{{CommonName: "alice", Principal: "alice", Rooms: []string{"*"}, Roles: []string{"consume"}}}
	for _, mode := range []string{ModeMTLS, ModeBoth} {
		t.Run(mode, func(t *testing.T) {
			auth := tokenAuth()
			auth.Mode, auth.Certs = mode, rules
			s := start(t, Config{TLSConfig: &tls.Config{ClientCAs: pool}, Auth: auth})

			// With the certificate: accepted.
			withCert := dialQUIC(t, s, nil, &alice)
			quicConsumer(t, withCert, "x", "", 0, make(chan got), false)
			if err := s.WaitConsumers(testCtx(t), "x", 1); err != nil {
				t.Fatal(err)
			}
			// The certificate grants consume only.
			readEOF(t, openQUIC(t, withCert, wire.RoleProducer, "x", "").str)

			noCert := dialQUIC(t, s, nil, nil)
			readEOF(t, openQUIC(t, noCert, wire.RoleConsumer, "x", "").str)
			// A token is enough in "both" only.
			tok := openQUIC(t, noCert, wire.RoleConsumer, "x", "tok-consumer-secret")
			if mode == ModeMTLS {
				readEOF(t, tok.str)
				if st := s.Stats(); st.Refused != 3 {
					t.Fatalf("stats %+v", st)
				}
			} else {
				if err := s.WaitConsumers(testCtx(t), "x", 2); err != nil {
					t.Fatal(err)
				}
				if st := s.Stats(); st.Refused != 2 {
					t.Fatalf("stats %+v", st)
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{PartitionFull: "sometimes"},
		{ChunkFull: "never"},
		{Auth: Auth{Mode: "magic"}},
		{Addr: "not an address"},
	} {
		if s, err := Start(cfg); err == nil {
			_ = s.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}

// SetAuth changes the rules only while the server is stopped (loomd does not
// reload them live), and keeps the mode (it decides the TLS handshake).
func TestSetAuthOnlyWhileStopped(t *testing.T) {
	rules := func(tok string) Auth {
		return Auth{Mode: ModeToken, Tokens: []TokenRule{{Token: tok, Principal: "p", Rooms: []string{"*"}, Roles: []string{"consume"}}}}
	}
	s := start(t, Config{Auth: rules("v1")})
	if err := s.SetAuth(rules("v2")); err == nil {
		t.Fatal("SetAuth while running: no error")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAuth(Auth{Mode: ModeDisabled}); err == nil {
		t.Fatal("SetAuth with another mode: no error")
	}
	if err := s.SetAuth(rules("v2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.auth.Load().allow(wire.Hello{Role: wire.RoleConsumer, Room: "r", Token: "v2"}, nil); !ok {
		t.Fatal("the new rule does not allow its token")
	}
	if _, ok := s.auth.Load().allow(wire.Hello{Role: wire.RoleConsumer, Room: "r", Token: "v1"}, nil); ok {
		t.Fatal("the old rule still allows its token")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAuth(rules("v3")); err == nil {
		t.Fatal("SetAuth after Close: no error")
	}
}
