package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// consumeFlags are the flags of loombridge consume.
type consumeFlags struct {
	target  targetFlags
	count   int
	ack     bool
	timeout time.Duration
	outDir  string
}

const consumeUsage = `consume [flags]

Prints the messages of a Loom room or any source as JSON lines on stdout,
{"uuid","key","metadata","payload"} (payload_encoding "base64" where a payload
is not UTF-8), or with --out-dir saves each payload as DIR/<uuid> and its
uuid, key and metadata as DIR/.meta/<uuid>.json. A UUID is made safe for a
file name: characters other than A-Z a-z 0-9 . _ - become _, a leading dot
becomes _, and a very long one is shortened with a hash. A message seen
again (the same UUID) overwrites its file.

Targets (give one):
  --addr HOST:PORT --room R [--ca-file F] [--token-file F] [--transport h3] [--insecure]
  -c FILE --connection NAME --room R      a connection of a configuration file
  --source '{type: file, dir: ./in, topic: x}'   any source kind, as in a pipeline

--ack=false peeks: messages are shown but not acknowledged.
  Loom: each consumer stream holds the one message it got and is sent no
    more, so at most as many messages as streams (the source's consumers,
    default 4) are seen; when consume exits those messages are gone, since
    Loom never redelivers. Peeking keeps them from other consumers meanwhile;
    it does not keep them for later.
  file: the lines are read from the stored offset, and the offset is not
    moved: the next consume sees the same lines.
  other sources: the message stays unacknowledged until consume exits.

Stops after --count messages, at the end of a source that ends (a file
source without follow), when --timeout passes, or on SIGINT/SIGTERM.
Exit codes: 0 ok, 1 failure (or --timeout before --count messages), 2 bad
flags or source.`

func runConsume(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var f consumeFlags
	fs := newFlags("consume", consumeUsage, stderr)
	f.target.register(fs, "source")
	fs.IntVar(&f.count, "count", 0, "stop after `N` messages (0: no limit)")
	fs.BoolVar(&f.ack, "ack", true, "acknowledge messages; --ack=false peeks (see above)")
	fs.DurationVar(&f.timeout, "timeout", 0, "stop after this `duration` (0: no limit)")
	fs.StringVar(&f.outDir, "out-dir", "", "save each message under `DIR` instead of printing it")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "loombridge consume: %v\n", err)
		return exitUsage
	}
	if err := f.check(fs.Args()); err != nil {
		return usageErr(err)
	}
	ep, base, err := f.target.endpoint(nil)
	if err != nil {
		return usageErr(err)
	}
	source, deps, err := pipelines.ParseSource(ep, base, kinds.Builtin())
	if err != nil {
		printProblems(stderr, "consume", err)
		return exitUsage
	}
	failure := func(err error) int {
		fmt.Fprintf(stderr, "loombridge consume: %v\n", err)
		return exitFailure
	}

	// A file source peeks by keeping its offset in a temporary directory,
	// started from a copy of the stored one: messages are acked, so the
	// subscriber moves on, but the real offset never moves.
	ackEach := f.ack
	if fsrc, ok := source.(*kinds.FileSource); ok && !f.ack && !fsrc.NoOffset {
		tmp, err := peekOffsets(fsrc)
		if err != nil {
			return failure(err)
		}
		defer os.RemoveAll(tmp)
		ackEach = true
	}

	var out message.Publisher = &kinds.LinePrinter{W: stdout}
	if f.outDir != "" {
		s, err := newDirSaver(f.outDir)
		if err != nil {
			return failure(err)
		}
		out = s
	}

	if err := probeLoom(ctx, source, deps, f.target.connectTimeout); err != nil {
		return failure(err)
	}
	deps.Logger, deps.Stdout = cliLogger(stderr, f.target.verbose), stdout
	sub, err := source.NewSubscriber(ctx, deps)
	if err != nil {
		return failure(err)
	}
	defer sub.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timeout <-chan time.Time
	if f.timeout > 0 {
		t := time.NewTimer(f.timeout)
		defer t.Stop()
		timeout = t.C
	}
	msgs, err := sub.Subscribe(sctx, source.Topic())
	if err != nil {
		if errors.Is(err, client.ErrRefused) {
			err = fmt.Errorf("the server refused room %q to this client (a token it does not accept, or a room or role the token is not allowed): %w", source.Topic(), err)
		}
		return failure(err)
	}

	got := 0
	for f.count == 0 || got < f.count {
		var msg *message.Message
		var ok bool
		select {
		case msg, ok = <-msgs:
		case <-ctx.Done():
			return exitOK
		case <-timeout:
			if f.count > 0 {
				return failure(fmt.Errorf("--timeout %s passed with %d of %d messages", f.timeout, got, f.count))
			}
			return exitOK
		}
		if !ok {
			return exitOK // the source ended
		}
		if err := out.Publish(source.Topic(), msg); err != nil {
			msg.Nack()
			return failure(err)
		}
		got++
		if ackEach {
			msg.Ack()
		}
	}
	return exitOK
}

func (f *consumeFlags) check(args []string) error {
	if err := f.target.check("source"); err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(args, " "))
	}
	if f.count < 0 {
		return fmt.Errorf("--count: must not be negative, got %d", f.count)
	}
	if f.timeout < 0 {
		return fmt.Errorf("--timeout: must not be negative, got %s", f.timeout)
	}
	return nil
}

// peekOffsets points src at a new temporary offset directory holding a copy of
// its stored offset, and returns the directory.
func peekOffsets(src *kinds.FileSource) (string, error) {
	dir := src.OffsetDir
	dir = cmp.Or(dir, src.Dir)
	name := src.Topic() + ".jsonl.offset"
	tmp, err := os.MkdirTemp("", "loombridge-peek-")
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	switch {
	case errors.Is(err, os.ErrNotExist): // no offset yet: from the start
	case err != nil:
		os.RemoveAll(tmp)
		return "", fmt.Errorf("peek: %w", err)
	default:
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("peek: %w", err)
		}
	}
	src.OffsetDir = tmp
	return tmp, nil
}

// dirSaver is a Publisher writing each message's payload to DIR/<name> and
// its uuid, key and metadata to DIR/.meta/<name>.json, each atomically.
type dirSaver struct{ dir, meta string }

const metaDir = ".meta"

func newDirSaver(dir string) (*dirSaver, error) {
	meta := filepath.Join(dir, metaDir)
	if err := os.MkdirAll(meta, 0o755); err != nil {
		return nil, fmt.Errorf("--out-dir: %w", err)
	}
	return &dirSaver{dir: dir, meta: meta}, nil
}

func (s *dirSaver) Publish(_ string, msgs ...*message.Message) error {
	for _, m := range msgs {
		name := safeName(m.UUID)
		meta, err := metaJSON(m)
		if err != nil {
			return err
		}
		// The payload goes first: a sidecar is only there for a saved payload.
		if err := writeAtomic(filepath.Join(s.dir, name), m.Payload); err != nil {
			return err
		}
		if err := writeAtomic(filepath.Join(s.meta, name+".json"), meta); err != nil {
			return err
		}
	}
	return nil
}

func (*dirSaver) Close() error { return nil }

// metaJSON is the message's JSON line (uuid, key, metadata, with their
// encodings) without its payload.
func metaJSON(m *message.Message) ([]byte, error) {
	line, err := file.MarshalLine(m, pipelines.MetadataKey)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return nil, err
	}
	delete(fields, "payload")
	delete(fields, "payload_encoding")
	b, err := json.Marshal(fields)
	return append(b, '\n'), err
}

// safeName turns a UUID into a file name: only A-Z a-z 0-9 . _ -, no leading
// dot (so never . , .. or .meta), at most 128 bytes.
func safeName(uuid string) string {
	var b strings.Builder
	for i, r := range uuid {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		case r == '.' && i > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	name = cmp.Or(name, "_")
	if len(name) > 128 {
		sum := sha256.Sum256([]byte(uuid))
		name = name[:100] + "-" + hex.EncodeToString(sum[:8])
	}
	return name
}

// writeAtomic writes b to path through a temporary file and a rename.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}
