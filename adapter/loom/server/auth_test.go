package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/loombridge/loombridge/adapter/loom/wire"
)

// syncBuf collects log output from several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tokenAuth() Auth {
	return Auth{Mode: ModeToken, Tokens: []TokenRule{
		{Token: "tok-producer-secret", Principal: "p", Rooms: []string{"orders"}, Roles: []string{"produce"}},
		{Token: "tok-consumer-secret", Principal: "c", Rooms: []string{"*"}, Roles: []string{"consume"}},
	}}
}

func TestTokenAuthQUIC(t *testing.T) {
	logs := &syncBuf{}
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

// clientCA makes a CA and a client certificate it signed for cn.
func clientCA(t *testing.T, cn string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMTLSAndBoth(t *testing.T) {
	pool, alice := clientCA(t, "alice")
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
