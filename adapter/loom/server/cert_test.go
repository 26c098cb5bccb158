package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/quic-go/quic-go"
)

// A client that trusts only the file WriteCA wrote completes a TLS handshake.
func TestWriteCA(t *testing.T) {
	s := start(t, Config{})
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteCA(path); err != nil {
		t.Fatalf("WriteCA: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, s.CertPEM()) {
		t.Fatalf("file holds %q, want CertPEM", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode: %v, %v; want 0644", fi.Mode(), err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(got) {
		t.Fatal("no certificate in the written file")
	}
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{alpnLoom}, MinVersion: tls.VersionTLS13}
	conn, err := quic.DialAddr(testCtx(t), s.Addr(), tc, nil)
	if err != nil {
		t.Fatalf("dial trusting the written CA: %v", err)
	}
	_ = conn.CloseWithError(0, "")
}

func TestWriteCANoCertificate(t *testing.T) {
	s := start(t, Config{TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return nil, os.ErrNotExist
	}}})
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := s.WriteCA(path); err == nil {
		t.Fatal("WriteCA succeeded without a certificate")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a file was written: %v", err)
	}
}
