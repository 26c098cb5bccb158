package loomtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// selfSigned makes a fresh ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost.
// It is its own CA, so a client trusts it by putting it in RootCAs.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loomtest: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loomtest: serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "loomtest"},
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
		return tls.Certificate{}, fmt.Errorf("loomtest: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loomtest: parse certificate: %w", err)
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
