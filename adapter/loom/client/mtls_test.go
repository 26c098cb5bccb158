package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/internal/testkit"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/adapter/loom/loomtest"
)

// writeClientCert makes a CA and a client certificate for cn signed by it, writes
// the certificate and key as PEM files, and returns their paths and the CA pool.
func writeClientCert(t *testing.T, cn string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c := testkit.NewClientCert(t, cn)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, c.CAs
}

func TestMutualTLS(t *testing.T) {
	certFile, keyFile, pool := writeClientCert(t, "bridge")
	srv := startRouter(t, loomtest.Config{
		TLSConfig: &tls.Config{ClientCAs: pool},
		Auth: loomtest.Auth{Mode: loomtest.ModeMTLS, Certs: []loomtest.CertRule{
			{CommonName: "bridge", Principal: "bridge", Rooms: []string{"*"}, Roles: []string{"produce", "consume"}},
		}},
	})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			tlsCfg := client.TLSConfig{CAFile: ca, ServerName: "localhost", CertFile: certFile, KeyFile: keyFile}
			c, err := client.Dial(ctxT(t), client.Config{Addr: srv.Addr(), Transport: tr, TLS: tlsCfg}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			k := consume(t, srv, c, "m"+tr, 1)
			p, err := c.Produce(ctxT(t), "m"+tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Send(ctxT(t), "k", 2, strings.NewReader("hi")); err != nil {
				t.Fatal(err)
			}
			if m, err := k.Next(ctxT(t)); err != nil || m.Key != "k" {
				t.Fatalf("with a client certificate: %v", err)
			}

			// Without the certificate the same hello is refused.
			anon, err := client.Dial(ctxT(t), client.Config{Addr: srv.Addr(), Transport: tr, TLS: client.TLSConfig{CAFile: ca, ServerName: "localhost"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer anon.Close()
			ctx := ctxT(t)
			k2, err := anon.Consume(ctx, "m"+tr)
			if err == nil {
				_, err = k2.Next(ctx)
				_ = k2.Close()
			}
			if !errors.Is(err, client.ErrRefused) {
				t.Fatalf("without a certificate: got %v, want ErrRefused", err)
			}
		})
	}
	if _, err := client.Dial(context.Background(), client.Config{Addr: srv.Addr(), TLS: client.TLSConfig{CertFile: certFile}}, nil); err == nil ||
		!strings.Contains(err.Error(), "tls.key_file") {
		t.Fatalf("cert_file without key_file: got %v", err)
	}
}

// TestRespectsStreamLimit: with the server allowing two streams per connection, a
// third session waits until one closes instead of failing.
func TestRespectsStreamLimit(t *testing.T) {
	srv := startRouter(t, loomtest.Config{MaxIncomingStreams: 2})
	c := dial(t, srv, client.TransportQUIC, nil)
	a, err := c.Consume(ctxT(t), "lim")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Consume(ctxT(t), "lim")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Consume(short, "lim"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third stream: got %v, want to wait past the deadline", err)
	}
	_ = a.Close()
	third, err := c.Consume(ctxT(t), "lim")
	if err != nil {
		t.Fatalf("after a stream closed: %v", err)
	}
	_ = third.Close()
}
