// Command loombridge bridges Loom rooms to files, webhooks and other
// Watermill backends, as YAML pipelines say.
//
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid
// configuration.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// version is stamped in at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// command is one subcommand; each lives in a file of its own with its flags.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the pipelines of a configuration file until stopped", runRun},
		{"validate", "check a configuration file and print every problem", runValidate},
		{"publish", "publish files, lines or stdin to a Loom room or any sink", runPublish},
		{"consume", "print or save the messages of a Loom room or any source", runConsume},
		{"dev", "run a Loom-compatible router on loopback for development", runDev},
		{"kinds", "list the kinds of source, sink and connection with their keys", runKinds},
		{"healthcheck", "exit 0 if a running instance is ready, 1 if not", runHealthcheck},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalContext ends the context on the first SIGINT or SIGTERM, for a
// graceful stop; a second signal exits at once with code 130.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
		case <-done:
			return
		}
		cancel()
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "loombridge: second %s: exiting at once\n", s)
			os.Exit(130)
		case <-done:
		}
	}()
	return ctx, func() { signal.Stop(sigs); close(done); cancel() }
}

// run dispatches to a command; it is main without the process around it, so
// tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) > 1 && args[0] == "help" { // help COMMAND: that command's help
			for _, c := range commands() {
				if c.name == args[1] {
					return c.run(ctx, []string{"--help"}, stdin, stdout, stderr)
				}
			}
			fmt.Fprintf(stderr, "loombridge help: unknown command %q\n\n", args[1])
			usage(stderr)
			return exitUsage
		}
		usage(stdout)
		return exitOK
	case "-v", "--version":
		return runVersion(ctx, nil, stdin, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "loombridge: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "loombridge moves messages between Loom rooms and files, webhooks and brokers.")
	fmt.Fprintln(w, "\nUsage: loombridge <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\n'loombridge help <command>' or 'loombridge <command> --help' shows a command's flags.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid configuration.")
}
