package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// selfSigned makes a fresh ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost.
// It is its own CA, so a client trusts it by putting it in RootCAs.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loom server: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loom server: serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "loombridge dev router"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loom server: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loom server: parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// serverTLS builds the listener's TLS configuration from the caller's (which may be
// nil) and returns it with the PEM of the certificate clients should trust.
func serverTLS(user *tls.Config, mode string) (*tls.Config, []byte, error) {
	var conf *tls.Config
	if user == nil {
		conf = &tls.Config{}
	} else {
		conf = user.Clone()
	}
	if len(conf.Certificates) == 0 && conf.GetCertificate == nil && conf.GetConfigForClient == nil {
		cert, err := selfSigned()
		if err != nil {
			return nil, nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	conf.MinVersion = tls.VersionTLS13
	conf.NextProtos = []string{alpnLoom, alpnH3}
	if (mode == ModeMTLS || mode == ModeBoth) && conf.ClientAuth == tls.NoClientCert {
		conf.ClientAuth = tls.VerifyClientCertIfGiven
	}
	var certPEM []byte
	if len(conf.Certificates) > 0 && len(conf.Certificates[0].Certificate) > 0 {
		c := conf.Certificates[0].Certificate
		// The last certificate of the chain is the one closest to the root.
		certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c[len(c)-1]})
	}
	return conf, certPEM, nil
}

// WriteCA writes the certificate clients should trust ([Server.CertPEM]) to path, for a
// client's ca_file. The file is written next to path and renamed into place, so a
// client never reads half of it; it is readable by everyone (it holds no secret). It
// fails when the server has no certificate to offer, which happens only when the
// configured TLS has no Certificates (GetCertificate alone).
func (s *Server) WriteCA(path string) error {
	if len(s.certPEM) == 0 {
		return errors.New("loom server: write CA: no certificate to write (TLS configured without Certificates)")
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("loom server: write CA: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(s.certPEM)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("loom server: write CA: %w", err)
	}
	return nil
}
