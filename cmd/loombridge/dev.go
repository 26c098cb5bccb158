package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/loombridge/loombridge/adapter/loom/server"
)

// devFlags are the flags of loombridge dev.
type devFlags struct {
	addr    string
	dir     string
	verbose bool
}

// Defaults of loombridge dev.
const (
	defaultDevAddr = "127.0.0.1:4433"
	defaultDevDir  = ".loombridge-dev"
	devCAFile      = "loom-ca.pem"
)

const devUsage = `dev [--addr 127.0.0.1:4433] [--dir .loombridge-dev]

Runs a Loom-compatible router (QUIC loom/1 and HTTP/3 on one UDP port) on
loopback with a fresh self-signed certificate, writes that certificate to
DIR/loom-ca.pem for clients to trust, prints a connection for a configuration
file and publish/consume command lines, and serves until SIGINT/SIGTERM.

DIR defaults to ./.loombridge-dev and is kept: with the default address a
saved configuration keeps working across restarts, since clients read the CA
file again on every dial. The router keeps nothing but messages in flight.`

func runDev(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var f devFlags
	fs := newFlags("dev", devUsage, stderr)
	fs.StringVar(&f.addr, "addr", defaultDevAddr, "loopback `host:port` (UDP) to listen on; port 0 picks a free one")
	fs.StringVar(&f.dir, "dir", defaultDevDir, "`directory` to write "+devCAFile+" to")
	fs.BoolVar(&f.verbose, "v", false, "log the router's debug messages to stderr")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "loombridge dev: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	if err := checkLoopback(f.addr); err != nil {
		fmt.Fprintf(stderr, "loombridge dev: --addr: %v\n", err)
		return exitUsage
	}
	dir, err := filepath.Abs(f.dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(stderr, "loombridge dev: --dir: %v\n", err)
		return exitFailure
	}

	lv := slog.LevelWarn
	if f.verbose {
		lv = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	srv, err := server.Start(server.Config{Addr: f.addr, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "loombridge dev: %v\n", err)
		return exitFailure
	}
	defer srv.Close()
	ca := filepath.Join(dir, devCAFile)
	if err := writeAtomic(ca, srv.CertPEM()); err != nil {
		fmt.Fprintf(stderr, "loombridge dev: write CA: %v\n", err)
		return exitFailure
	}
	printDevBanner(stdout, srv.Addr(), ca)

	<-ctx.Done()
	if err := srv.Close(); err != nil {
		fmt.Fprintf(stderr, "loombridge dev: close: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stderr, "loombridge dev: router stopped")
	return exitOK
}

// checkLoopback accepts host:port whose host is a loopback address or
// localhost: the certificate names only those.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return errors.New("dev listens on loopback only (127.0.0.1, ::1, localhost), which its certificate names; got " + addr)
}

// printDevBanner writes the address, the CA path, a connection for a
// configuration file and matching command lines. Its first two lines are
// stable, for scripts: "addr: ..." and "ca_file: ...".
func printDevBanner(w io.Writer, addr, ca string) {
	fmt.Fprintf(w, "addr: %s\nca_file: %s\n\n", addr, ca)
	fmt.Fprintf(w, "Loom-compatible dev router listening on %s (QUIC loom/1 and HTTP/3).\n\n", addr)
	fmt.Fprintf(w, "For a configuration file:\n\nconnections:\n  dev:\n    addr: %s\n    tls:\n      ca_file: %s\n\n", yamlQuote(addr), yamlQuote(ca))
	target := fmt.Sprintf("--addr %s --ca-file %s --room demo", shellQuote(addr), shellQuote(ca))
	fmt.Fprintf(w, "Try, in two shells:\n\n  loombridge consume %s\n  echo hello | loombridge publish %s\n\n", target, target)
	fmt.Fprintln(w, "Ctrl-C stops the router.")
}

// yamlQuote double-quotes s unless it is made of characters YAML reads as a
// plain string (a colon is only special before a space).
func yamlQuote(s string) string {
	if s != "" && s[0] != '-' && strings.Trim(s, plainChars) == "" {
		return s
	}
	return strconv.Quote(s) // Go's escapes for these are YAML's
}

const plainChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:"

// shellQuote single-quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, plainChars+"=@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
