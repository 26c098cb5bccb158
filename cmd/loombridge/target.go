package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// targetFlags say where publish sends and consume reads, in one of three ways:
// a Loom server given by flags (--addr), a connection of a configuration file
// (-c, --connection), or any sink or source kind written inline as YAML
// (--sink, --source).
type targetFlags struct {
	// a Loom server by flags
	addr      string
	room      string
	transport string
	caFile    string
	tokenFile string
	insecure  bool
	// a connection of a configuration file
	config     string
	connection string
	// any kind, inline
	inline string

	connectTimeout time.Duration
	verbose        bool
}

// register adds the target flags; inline is "sink" or "source".
func (t *targetFlags) register(fs *flag.FlagSet, inline string) {
	fs.StringVar(&t.addr, "addr", "", "Loom server `host:port` (UDP)")
	fs.StringVar(&t.room, "room", "", "Loom `room` (with --addr or --connection)")
	fs.StringVar(&t.transport, "transport", "", "with --addr: quic (default) or h3")
	fs.StringVar(&t.caFile, "ca-file", "", "with --addr: PEM `file` of the CA to trust instead of the system roots")
	fs.StringVar(&t.tokenFile, "token-file", "", "with --addr: `file` holding the token")
	fs.BoolVar(&t.insecure, "insecure", false, "with --addr: do not verify the server's certificate (unsafe)")
	fs.StringVar(&t.config, "c", "", "configuration `file` to take --connection (or the connections of --"+inline+") from")
	fs.StringVar(&t.config, "config", "", "same as -c")
	fs.StringVar(&t.connection, "connection", "", "`name` of a connection under connections: in -c FILE")
	fs.StringVar(&t.inline, inline, "", "any "+inline+" kind as a YAML mapping, e.g. '"+inlineExample(inline)+"'")
	fs.DurationVar(&t.connectTimeout, "connect-timeout", defaultConnectTimeout, "a Loom server that does not complete a handshake within this `duration` fails the command")
	fs.BoolVar(&t.verbose, "v", false, "log debug messages to stderr")
}

func inlineExample(inline string) string {
	if inline == "sink" {
		return "{type: file, dir: ./out, topic: x}"
	}
	return "{type: file, dir: ./in, topic: x}"
}

// check reports a wrong combination of flags, for exit code 2. inline is
// "sink" or "source".
func (t *targetFlags) check(inline string) error {
	ways := 0
	for _, set := range []bool{t.addr != "", t.connection != "", t.inline != ""} {
		if set {
			ways++
		}
	}
	switch {
	case ways == 0:
		return fmt.Errorf("no target: give --addr HOST:PORT --room R, or -c FILE --connection NAME --room R, or --%s YAML", inline)
	case ways > 1:
		return fmt.Errorf("--addr, --connection and --%s are alternatives: give one", inline)
	}
	byFlags := t.transport != "" || t.caFile != "" || t.tokenFile != "" || t.insecure
	switch {
	case t.addr != "":
		if t.room == "" {
			return errors.New("--addr needs --room")
		}
		if t.config != "" {
			return errors.New("-c is for --connection or --" + inline + ", not --addr")
		}
	case t.connection != "":
		if t.config == "" {
			return errors.New("--connection needs -c FILE, the configuration that names it")
		}
		if t.room == "" {
			return errors.New("--connection needs --room")
		}
	default:
		if t.room != "" {
			return fmt.Errorf("--room is for --addr and --connection; with --%s write room: in the YAML", inline)
		}
	}
	if byFlags && t.addr == "" {
		return errors.New("--transport, --ca-file, --token-file and --insecure go with --addr; a configuration's connection has its own")
	}
	if t.connectTimeout <= 0 {
		return fmt.Errorf("--connect-timeout: must be positive, got %s", t.connectTimeout)
	}
	if t.transport != "" && t.transport != client.TransportQUIC && t.transport != client.TransportH3 {
		return fmt.Errorf("--transport: want quic or h3, got %q", t.transport)
	}
	return nil
}

// loom says whether the target is a Loom room given by flags or connection.
func (t *targetFlags) loom() bool { return t.inline == "" }

// endpoint returns the YAML (JSON, a subset) of the sink or source and the
// configuration whose connections it may name. extra are more keys of a loom
// endpoint (mode, format). A problem is a usage error (exit 2).
func (t *targetFlags) endpoint(extra map[string]any) ([]byte, *pipelines.Config, error) {
	if t.inline != "" {
		if t.config == "" {
			return []byte(t.inline), nil, nil
		}
		cfg, err := t.loadConfig()
		return []byte(t.inline), cfg, err
	}
	ep := map[string]any{"type": kinds.Loom.Name, "room": t.room}
	for k, v := range extra {
		ep[k] = v
	}
	var cfg *pipelines.Config
	if t.addr != "" {
		c := client.Config{Addr: t.addr, Transport: t.transport, TokenFile: t.tokenFile}
		c.TLS.CAFile, c.TLS.InsecureSkipVerify = t.caFile, t.insecure
		cfg = &pipelines.Config{Connections: map[string]*pipelines.Connection{cliConnection: {Client: c}}}
		ep["connection"] = cliConnection
	} else {
		var err error
		if cfg, err = t.loadConfig(); err != nil {
			return nil, nil, err
		}
		if _, ok := cfg.Connections[t.connection]; !ok {
			return nil, nil, fmt.Errorf("%s has no connection %q (have: %s)", t.config, t.connection, strings.Join(connectionNames(cfg), ", "))
		}
		ep["connection"] = t.connection
	}
	b, err := json.Marshal(ep)
	return b, cfg, err
}

// cliConnection names the connection made of --addr and the TLS flags.
const cliConnection = "flags"

func (t *targetFlags) loadConfig() (*pipelines.Config, error) {
	cfg, err := pipelines.Load(t.config, pipelines.LoadOptions{Kinds: kinds.Builtin(), AllowNoPipelines: true})
	if err == nil {
		return cfg, nil
	}
	var b strings.Builder
	printConfigErrors(&b, t.config, err)
	return nil, errors.New(strings.TrimSuffix(b.String(), "\n"))
}

func connectionNames(cfg *pipelines.Config) []string {
	var out []string
	for n := range cfg.Connections {
		out = append(out, n)
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	sort.Strings(out)
	return out
}

// cliLogger logs the adapters' warnings and errors to stderr (debug with -v).
func cliLogger(stderr io.Writer, verbose bool) watermill.LoggerAdapter {
	lv := slog.LevelWarn
	if verbose {
		lv = slog.LevelDebug
	}
	return watermill.NewSlogLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})))
}

// printProblems prints an invalid target, one problem a line.
func printProblems(w io.Writer, cmd string, err error) {
	var es pipelines.Errors
	if !errors.As(err, &es) {
		fmt.Fprintf(w, "loombridge %s: %v\n", cmd, err)
		return
	}
	printErrorList(w, fmt.Sprintf("loombridge %s: invalid target, %d problem(s):", cmd, len(es)), es)
}
