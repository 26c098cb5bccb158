package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// defaultConnectTimeout bounds publish's and consume's first connection to a
// Loom server. QUIC runs over UDP, where a server that is down sends no refusal:
// its absence shows only as a handshake that never completes, so the commands
// wait this long for one before they give up.
const defaultConnectTimeout = 3 * time.Second

// loomEndpoint is what a sink or source that reads or writes a Loom room says
// about it (kinds.LoomSink and kinds.LoomSource).
type loomEndpoint interface {
	LoomRoom() (connection, room string)
}

// probeLoom dials the Loom server that ep (a sink or source) uses, once and
// within timeout, so that a command fails at once, with one line, on what no
// retry can mend (an untrusted certificate, a bad address) and on a server that
// does not answer, instead of retrying in the background as a running pipeline
// does. For a sink it also opens a producer session on the room, with no
// message, so that a refused token fails here rather than after the publisher
// has logged it (a consumer's refusal is Subscribe's error already). ep of
// another kind is not probed.
func probeLoom(ctx context.Context, ep any, deps pipelines.Deps, timeout time.Duration) error {
	le, ok := ep.(loomEndpoint)
	if !ok {
		return nil
	}
	conn, room := le.LoomRoom()
	_, sink := ep.(pipelines.SinkConfig)
	cfg, err := deps.Loom(conn)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := client.Dial(dctx, cfg, nil)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return dialProblem(cfg.Addr, timeout, err)
	}
	defer cl.Close()
	if !sink {
		return nil
	}
	p, err := cl.Produce(dctx, room)
	if err == nil {
		err = p.Close(dctx)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrRefused):
		return fmt.Errorf("%s: the server refused room %q to this client (a token it does not accept, or a room or role the token is not allowed)", cfg.Addr, room)
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted: %w", ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: the server did not answer a producer session on room %q within %s", cfg.Addr, room, timeout)
	}
	return fmt.Errorf("%s: %w", cfg.Addr, err)
}

// dialProblem turns a failed dial into one line that says what is wrong and,
// where it can, what to do.
func dialProblem(addr string, timeout time.Duration, err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		dnsErr    *net.DNSError
		addrErr   *net.AddrError
		transport *quic.TransportError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%s: the server's TLS certificate is not signed by a CA this command trusts (give the server's CA with --ca-file or tls.ca_file): %v", addr, unknownCA)
	case errors.As(err, &hostname):
		return fmt.Errorf("%s: the server's TLS certificate is not valid for this name (%v)", addr, hostname)
	case errors.As(err, &invalid):
		return fmt.Errorf("%s: the server's TLS certificate is invalid: %v", addr, invalid)
	case errors.As(err, &verify):
		return fmt.Errorf("%s: the server's TLS certificate did not verify: %v", addr, verify.Err)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("%s: bad address: %v", addr, dnsErr)
	case errors.As(err, &addrErr):
		return fmt.Errorf("%s: bad address: %v", addr, addrErr)
	case errors.As(err, &transport) && transport.ErrorCode.IsCryptoError():
		return fmt.Errorf("%s: the TLS handshake failed: %s", addr, strings.TrimSpace(transport.Error()))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no Loom server answered within %s (QUIC over UDP: nothing listening there, a firewall, or the wrong host or port)", addr, timeout)
	}
	return err
}
