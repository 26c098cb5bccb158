package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// Split modes of publish.
const (
	splitWhole = "whole"
	splitLines = "lines"
)

// defaultPublishTopic is the topic of a sink that names none (stdout, webhook,
// a file sink without topic:).
const defaultPublishTopic = "loombridge"

// A Publish call carries at most this many messages or bytes, so that large
// inputs stream rather than sit in memory, and confirm mode waits per batch.
const (
	publishBatchMessages = 256
	publishBatchBytes    = 8 << 20
)

// publishFlags are the flags of loombridge publish.
type publishFlags struct {
	target       targetFlags
	split        string
	key          string
	metadata     multiFlag
	uuidFromName bool
	format       string
	mode         string
}

const publishUsage = `publish [flags] [PATH|-]

Sends a file, every regular file of a directory (one message per file, in
name order, not recursive) or stdin (- or no PATH) to a Loom room or any sink.

  --split whole   the whole file or stream is one message (default)
  --split lines   one message per line, without its newline (and a CR before
                  it); empty lines are skipped. Not for directories.

Targets (give one):
  --addr HOST:PORT --room R [--ca-file F] [--token-file F] [--transport h3] [--insecure]
  -c FILE --connection NAME --room R      a connection of a configuration file
  --sink '{type: file, dir: ./out, topic: x}'   any sink kind, as in a pipeline

A Loom target publishes in confirm mode unless --mode fire_and_forget. Its
format is raw unless --metadata or --uuid-from-name is given, which need
envelope (raw carries the payload and key only). Exit codes: 0 all published,
1 a publish failed, 2 bad flags or target.`

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var f publishFlags
	fs := newFlags("publish", publishUsage, stderr)
	f.target.register(fs, "sink")
	fs.StringVar(&f.split, "split", splitWhole, "whole or lines")
	fs.StringVar(&f.key, "key", "", "Loom `key` of every message (metadata "+pipelines.MetadataKey+")")
	fs.Var(&f.metadata, "metadata", "metadata `k=v` of every message; repeatable")
	fs.BoolVar(&f.uuidFromName, "uuid-from-name", false, "use each file's name as its message UUID")
	fs.StringVar(&f.format, "format", "", "Loom format: raw or envelope (default raw, envelope with --metadata or --uuid-from-name)")
	fs.StringVar(&f.mode, "mode", loom.ModeConfirm, "Loom mode: confirm or fire_and_forget")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "loombridge publish: %v\n", err)
		return exitUsage
	}
	in, err := f.check(fs.Args())
	if err != nil {
		return usageErr(err)
	}
	meta, err := f.parseMetadata()
	if err != nil {
		return usageErr(err)
	}
	in.stdin = stdin
	if err := in.scan(); err != nil {
		return usageErr(err)
	}
	if in.dir && f.split == splitLines {
		return usageErr(errors.New("--split lines reads a file or stdin; a directory is always one message per file"))
	}

	var extra map[string]any
	if f.target.loom() {
		extra = map[string]any{"mode": f.mode, "format": f.loomFormat()}
	}
	ep, base, err := f.target.endpoint(extra)
	if err != nil {
		return usageErr(err)
	}
	sink, deps, err := pipelines.ParseSink(ep, base, kinds.Builtin())
	if err != nil {
		printProblems(stderr, "publish", err)
		return exitUsage
	}
	if err := probeLoom(ctx, sink, deps, f.target.connectTimeout); err != nil {
		fmt.Fprintf(stderr, "loombridge publish: %v\n", err)
		return exitFailure
	}
	deps.Logger, deps.Stdout = cliLogger(stderr, f.target.verbose), stdout
	pub, err := sink.NewPublisher(ctx, deps)
	if err != nil {
		fmt.Fprintf(stderr, "loombridge publish: %v\n", err)
		return exitFailure
	}
	topic := sink.Topic()
	topic = cmp.Or(topic, defaultPublishTopic)

	start := time.Now()
	b := &batcher{pub: pub, topic: topic, progress: newProgress(stderr, in.total)}
	err = in.each(ctx, f.split, func(payload []byte, name string) error {
		msg := message.NewMessage(watermill.NewUUID(), payload)
		if f.uuidFromName {
			msg.UUID = name
		}
		for k, v := range meta {
			msg.Metadata.Set(k, v)
		}
		return b.add(msg)
	})
	if err == nil {
		err = b.flush()
	}
	b.progress.done()
	if cerr := pub.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(stderr, "loombridge publish: %v\n", err)
		if b.msgs > 0 {
			fmt.Fprintf(stderr, "published %d messages (%d bytes) in %s before the failure\n", b.msgs, b.bytes, elapsed)
		}
		return exitFailure
	}
	fmt.Fprintf(stderr, "published %d messages (%d bytes) in %s\n", b.msgs, b.bytes, elapsed)
	if le, ok := sink.(loomEndpoint); ok && b.msgs > 0 {
		// Loom tells a producer nothing about consumers: a message for a room
		// nobody consumes is read and thrown away, and confirm mode counts it as
		// confirmed all the same. Say so rather than let "published" mislead.
		_, room := le.LoomRoom()
		fmt.Fprintf(stderr, "warning: Loom discards messages for a room no consumer is connected to, and does not tell the producer; if nothing consumed room %q at the time, these are gone (start the consumer first)\n", room)
	}
	return exitOK
}

// check refuses wrong combinations and returns the input.
func (f *publishFlags) check(args []string) (*publishInput, error) {
	if err := f.target.check("sink"); err != nil {
		return nil, err
	}
	if f.split != splitWhole && f.split != splitLines {
		return nil, fmt.Errorf("--split: want whole or lines, got %q", f.split)
	}
	if !f.target.loom() && (f.format != "" || f.mode != loom.ModeConfirm) {
		return nil, errors.New("--format and --mode are for a Loom room (--addr, --connection); with --sink write them in the YAML")
	}
	if f.format != "" && f.format != loom.FormatRaw && f.format != loom.FormatEnvelope {
		return nil, fmt.Errorf("--format: want raw or envelope, got %q", f.format)
	}
	if f.format == loom.FormatRaw && (len(f.metadata) > 0 || f.uuidFromName) {
		return nil, errors.New("--format raw carries neither metadata nor UUIDs: drop --metadata/--uuid-from-name or use --format envelope")
	}
	if len(args) > 1 {
		return nil, fmt.Errorf("one PATH at most (or - for stdin), got %d: %s", len(args), strings.Join(args, " "))
	}
	in := &publishInput{path: "-"}
	if len(args) == 1 && args[0] != "" {
		in.path = args[0]
	}
	if f.uuidFromName && (in.path == "-" || f.split != splitWhole) {
		return nil, errors.New("--uuid-from-name names a message after its file: it needs a PATH and --split whole")
	}
	return in, nil
}

// loomFormat is the format a Loom target publishes in.
func (f *publishFlags) loomFormat() string {
	switch {
	case f.format != "":
		return f.format
	case len(f.metadata) > 0 || f.uuidFromName:
		return loom.FormatEnvelope
	}
	return loom.FormatRaw
}

// parseMetadata returns the metadata every message gets.
func (f *publishFlags) parseMetadata() (map[string]string, error) {
	meta := map[string]string{}
	for _, kv := range f.metadata {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--metadata %q: want key=value", kv)
		}
		meta[k] = v
	}
	if f.key != "" {
		if _, dup := meta[pipelines.MetadataKey]; dup {
			return nil, fmt.Errorf("--key and --metadata %s=...: give the key once", pipelines.MetadataKey)
		}
		meta[pipelines.MetadataKey] = f.key
	}
	return meta, nil
}

// publishInput is what publish reads: stdin, a file or a directory's files.
type publishInput struct {
	path  string   // "-" for stdin
	files []string // the files to read, in order
	dir   bool
	total int64 // bytes, -1 when unknown (stdin)
	stdin io.Reader
}

// scan finds the files, so that a missing path is a usage error before
// anything is sent.
func (in *publishInput) scan() error {
	if in.path == "-" {
		in.total = -1
		return nil
	}
	st, err := os.Stat(in.path)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file or directory", in.path)
		}
		in.files, in.total = []string{in.path}, st.Size()
		return nil
	}
	in.dir = true
	entries, err := os.ReadDir(in.path)
	if err != nil {
		return err
	}
	for _, e := range entries { // ReadDir sorts by name
		p := filepath.Join(in.path, e.Name())
		st, err := os.Stat(p) // follows symbolic links to files
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		in.files = append(in.files, p)
		in.total += st.Size()
	}
	sort.Strings(in.files)
	return nil
}

// each calls emit with every message's payload and the base name of the file
// it came from ("" for stdin).
func (in *publishInput) each(ctx context.Context, split string, emit func(payload []byte, name string) error) error {
	if in.path == "-" {
		return readInput(ctx, in.stdin, split, "", emit)
	}
	for _, p := range in.files {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = readInput(ctx, f, split, filepath.Base(p), emit)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func readInput(ctx context.Context, r io.Reader, split, name string, emit func([]byte, string) error) error {
	if split == splitWhole {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return emit(b, name)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
			if len(line) > 0 {
				if eerr := emit(line, name); eerr != nil {
					return eerr
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// batcher gathers messages into Publish calls.
type batcher struct {
	pub      message.Publisher
	topic    string
	progress progress

	batch      []*message.Message
	batchBytes int

	msgs  int
	bytes int64
}

func (b *batcher) add(msg *message.Message) error {
	b.batch = append(b.batch, msg)
	b.batchBytes += len(msg.Payload)
	if len(b.batch) >= publishBatchMessages || b.batchBytes >= publishBatchBytes {
		return b.flush()
	}
	return nil
}

func (b *batcher) flush() error {
	if len(b.batch) == 0 {
		return nil
	}
	if err := b.pub.Publish(b.topic, b.batch...); err != nil {
		return fmt.Errorf("publish to %s: %w", b.topic, err)
	}
	b.msgs += len(b.batch)
	b.bytes += int64(b.batchBytes)
	b.progress.add(len(b.batch), int64(b.batchBytes))
	b.batch, b.batchBytes = b.batch[:0], 0
	return nil
}

// progress shows how far publish got.
type progress interface {
	add(msgs int, bytes int64)
	done()
}

type noProgress struct{}

func (noProgress) add(int, int64) {}
func (noProgress) done()          {}

// progressMinBytes: smaller inputs get no bar.
const progressMinBytes = 4 << 20

// newProgress returns a progress bar on stderr when stderr is a terminal and
// the input is large or of unknown size; nothing otherwise.
func newProgress(stderr io.Writer, total int64) progress {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || (total >= 0 && total < progressMinBytes) {
		return noProgress{}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("publishing"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetSpinnerChangeInterval(0), // no ticker goroutine
		progressbar.OptionClearOnFinish(),
	)
	return &barProgress{bar: bar, start: time.Now()}
}

type barProgress struct {
	bar   *progressbar.ProgressBar
	start time.Time
	msgs  int
}

func (p *barProgress) add(msgs int, bytes int64) {
	p.msgs += msgs
	rate := float64(p.msgs) / max(time.Since(p.start).Seconds(), 1e-3)
	p.bar.Describe(fmt.Sprintf("%d msgs (%.0f msg/s)", p.msgs, rate))
	_ = p.bar.Add64(bytes)
}

func (p *barProgress) done() { _ = p.bar.Finish() }
