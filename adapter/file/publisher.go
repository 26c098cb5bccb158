package file

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrPublisherClosed is returned by Publish after Close.
var ErrPublisherClosed = errors.New("file publisher: closed")

// RawName holds the fields available to the raw format's name template.
type RawName struct {
	Topic string
	UUID  string
	// Key is the message's key metadata (empty when unset).
	Key string
	// Seq counts messages written by this Publisher, starting at 1; unique
	// per Publisher, not across restarts.
	Seq uint64
	// Time is the UTC time of the write.
	Time time.Time
}

// Publisher writes messages to files; see the package documentation. It is
// safe for concurrent use.
type Publisher struct {
	cfg    PublisherConfig
	logger watermill.LoggerAdapter
	root   *os.Root
	tmpl   *template.Template
	now    func() time.Time // replaced in tests to age files without sleeping
	// beforeWrite, if set, runs just before each JSONL line write; the
	// kill -9 test uses it to time its kill inside a write.
	beforeWrite func()

	mu       sync.Mutex
	closed   bool
	files    map[string]*jsonlFile // by topic
	seq      uint64                // raw messages written
	rotSeq   uint64                // rotations done
	unsynced []string              // raw files written since the last interval fsync

	inflight sync.WaitGroup // raw writes, which run without mu
	stop     chan struct{}
	wg       sync.WaitGroup

	written, rotated atomic.Uint64
}

type jsonlFile struct {
	f      *os.File
	name   string // relative to Dir
	size   int64
	opened time.Time
	dirty  bool // written since the last fsync
}

// NewPublisher validates cfg (after applying defaults), creates cfg.Dir and,
// with fsync "interval", starts the background fsync goroutine.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("file publisher config: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{
		cfg:    cfg,
		logger: logger.With(watermill.LogFields{"dir": cfg.Dir, "format": cfg.Format}),
		files:  map[string]*jsonlFile{},
		stop:   make(chan struct{}),
		now:    time.Now,
	}
	if cfg.Format == FormatRaw {
		p.tmpl, _ = parseNameTemplate(cfg.NameTemplate) // checked by Validate
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("file publisher: create dir: %w", err)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("file publisher: %w", err)
	}
	p.root = root
	if cfg.Fsync == FsyncInterval {
		p.wg.Add(1)
		go p.syncLoop()
	}
	return p, nil
}

// Publish writes msgs to topic in order. With fsync "always" the data is on
// disk when it returns. On error, messages before the failing one may have
// been written.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.cfg.Format == FormatRaw {
		for _, msg := range msgs {
			if err := p.publishRaw(topic, msg); err != nil {
				return err
			}
		}
		return nil
	}
	if err := checkTopic(topic); err != nil {
		return fmt.Errorf("file publisher: %w", err)
	}
	if limit := p.maxTopicBytes(); len(topic) > limit {
		return fmt.Errorf("file publisher: topic %q: %d bytes, longer than %d: its file names would not fit in %d bytes",
			topic, len(topic), limit, maxNameBytes)
	}
	// Encode outside the lock so concurrent publishers only serialise on I/O.
	lines := make([][]byte, len(msgs))
	for i, msg := range msgs {
		b, err := MarshalLine(msg, p.cfg.KeyMetadata)
		if err != nil {
			return fmt.Errorf("file publisher: topic %s: %w", topic, err)
		}
		lines[i] = b
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPublisherClosed
	}
	var jf *jsonlFile
	for _, b := range lines {
		var err error
		if jf, err = p.fileFor(topic, int64(len(b))); err != nil {
			return err
		}
		if p.beforeWrite != nil {
			p.beforeWrite()
		}
		// One Write per line: the mutex keeps lines whole within this
		// Publisher, O_APPEND puts them at the end.
		before := jf.size
		n, err := jf.f.Write(b)
		jf.size += int64(n)
		jf.dirty = true
		if err != nil {
			err = fmt.Errorf("file publisher: write %s: %w", jf.f.Name(), err)
			return errors.Join(err, p.undoWrite(topic, jf, before))
		}
		p.written.Add(1)
	}
	if p.cfg.Fsync == FsyncAlways && jf != nil {
		if err := jf.sync(); err != nil {
			return err
		}
	}
	return nil
}

// undoWrite removes the part of a failed (short) write, so the file does
// not end mid-line: the next line would be glued to the torn one and the
// reader would drop both. If the truncate fails too, the file is closed so
// that the next Publish reopens it and repairTail ends the torn line.
// Called with p.mu held.
func (p *Publisher) undoWrite(topic string, jf *jsonlFile, size int64) error {
	if jf.size == size {
		return nil
	}
	err := jf.f.Truncate(size)
	if err == nil {
		jf.size = size
		return nil
	}
	delete(p.files, topic)
	// The file leaves p.files, which the interval sync walks: lines already
	// published to it must reach the disk now.
	var syncErr error
	if p.cfg.Fsync != FsyncNever {
		syncErr = jf.sync()
	}
	return fmt.Errorf("file publisher: remove partial line from %s: %w", jf.f.Name(), errors.Join(err, syncErr, jf.f.Close()))
}

// maxNameBytes is NAME_MAX of Linux file systems.
const maxNameBytes = 255

// maxTopicBytes is the longest topic whose file names fit in maxNameBytes:
// <topic>.jsonl and, with rotation, <topic>-<time, 26 bytes>-<seq, up to
// 20 digits>.jsonl.
func (p *Publisher) maxTopicBytes() int {
	if p.cfg.MaxBytes > 0 || p.cfg.MaxAge > 0 {
		return maxNameBytes - maxRotatedSuffix
	}
	return maxNameBytes - len(jsonlExt)
}

// fileFor returns the open file for topic, rotating it first when writing n
// more bytes would break max_bytes or the file is older than max_age.
// Called with p.mu held.
func (p *Publisher) fileFor(topic string, n int64) (*jsonlFile, error) {
	jf := p.files[topic]
	if jf == nil {
		var err error
		if jf, err = p.openJSONL(topic); err != nil {
			return nil, err
		}
		p.files[topic] = jf
	}
	tooBig := p.cfg.MaxBytes > 0 && jf.size > 0 && jf.size+n > p.cfg.MaxBytes
	tooOld := p.cfg.MaxAge > 0 && p.now().Sub(jf.opened) >= p.cfg.MaxAge
	if !tooBig && !tooOld {
		return jf, nil
	}
	if err := p.rotate(topic, jf); err != nil {
		return nil, err
	}
	jf, err := p.openJSONL(topic)
	if err != nil {
		return nil, err
	}
	p.files[topic] = jf
	return jf, nil
}

func (p *Publisher) openJSONL(topic string) (*jsonlFile, error) {
	name := currentFileName(topic)
	f, err := p.root.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file publisher: open %s: %w", p.abs(name), err)
	}
	jf := &jsonlFile{f: f, name: name, opened: p.now()}
	if err := p.repairTail(jf); err != nil {
		f.Close()
		return nil, err
	}
	if p.cfg.Fsync != FsyncNever {
		// Persist the directory entry of a newly created file.
		if err := p.syncDir("."); err != nil {
			f.Close()
			return nil, err
		}
	}
	return jf, nil
}

// repairTail sets jf.size and, if a previous writer died mid-line, ends the
// torn line with a newline: otherwise our first line would be glued to it
// and lost with it. The torn line then stays a bad line for readers.
func (p *Publisher) repairTail(jf *jsonlFile) error {
	st, err := jf.f.Stat()
	if err != nil {
		return fmt.Errorf("file publisher: stat %s: %w", jf.f.Name(), err)
	}
	jf.size = st.Size()
	if jf.size == 0 {
		return nil
	}
	r, err := p.root.Open(jf.name)
	if err != nil {
		return fmt.Errorf("file publisher: %w", err)
	}
	defer r.Close()
	last := make([]byte, 1)
	if _, err := r.ReadAt(last, jf.size-1); err != nil {
		return fmt.Errorf("file publisher: read tail of %s: %w", jf.f.Name(), err)
	}
	if last[0] == '\n' {
		return nil
	}
	p.logger.Error("Torn last line in existing file, ending it with a newline", nil,
		watermill.LogFields{"file": jf.f.Name()})
	n, err := jf.f.Write([]byte{'\n'})
	jf.size += int64(n)
	if err != nil {
		return fmt.Errorf("file publisher: repair %s: %w", jf.f.Name(), err)
	}
	return nil
}

// rotate closes jf and renames it to its rotated name (rotatedFileName).
// Called with p.mu held.
func (p *Publisher) rotate(topic string, jf *jsonlFile) error {
	delete(p.files, topic)
	var syncErr error
	if p.cfg.Fsync != FsyncNever {
		syncErr = jf.sync()
	}
	if err := errors.Join(syncErr, jf.f.Close()); err != nil {
		return fmt.Errorf("file publisher: rotate %s: %w", jf.f.Name(), err)
	}
	ts := p.now()
	var newName string
	for {
		p.rotSeq++
		newName = rotatedFileName(topic, ts, p.rotSeq)
		// Rename overwrites; never clobber an older rotated file.
		_, err := p.root.Lstat(newName)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil { // e.g. ENAMETOOLONG: trying the next seq would loop forever
			return fmt.Errorf("file publisher: rotate %s of topic %q: %w", jf.f.Name(), topic, err)
		}
	}
	if err := p.root.Rename(jf.name, newName); err != nil {
		return fmt.Errorf("file publisher: rotate %s: %w", jf.f.Name(), err)
	}
	p.rotated.Add(1)
	p.logger.Debug("Rotated file", watermill.LogFields{"file": jf.f.Name(), "rotated": newName})
	if p.cfg.Fsync != FsyncNever {
		return p.syncDir(".")
	}
	return nil
}

func (p *Publisher) publishRaw(topic string, msg *message.Message) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPublisherClosed
	}
	p.seq++
	seq := p.seq
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()

	var buf bytes.Buffer
	err := p.tmpl.Execute(&buf, RawName{
		Topic: topic,
		UUID:  msg.UUID,
		Key:   msg.Metadata.Get(p.cfg.KeyMetadata),
		Seq:   seq,
		Time:  p.now().UTC(),
	})
	if err != nil {
		return fmt.Errorf("file publisher: name_template for message %s: %w", msg.UUID, err)
	}
	name := buf.String()
	if err := checkRelPath(name); err != nil {
		return fmt.Errorf("file publisher: name_template for message %s: %w", msg.UUID, err)
	}
	name = filepath.Clean(name)
	dir := filepath.Dir(name)
	if err := p.root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("file publisher: create %s: %w", p.abs(dir), err)
	}

	var rnd [4]byte
	_, _ = rand.Read(rnd[:]) // never fails (crypto/rand docs)
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d-%s.tmp", filepath.Base(name), seq, hex.EncodeToString(rnd[:])))
	if err := p.writeRawTemp(tmp, msg.Payload); err != nil {
		_ = p.root.Remove(tmp)
		return err
	}
	// Link instead of rename: rename would silently replace a file of an
	// earlier message with the same name (e.g. {{.Seq}} after a restart);
	// link fails with EEXIST instead.
	if err := p.root.Link(tmp, name); err != nil {
		_ = p.root.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("file publisher: message %s: %s already exists, not replacing it: %w", msg.UUID, p.abs(name), err)
		}
		return fmt.Errorf("file publisher: link %s to %s: %w", p.abs(tmp), p.abs(name), err)
	}
	p.written.Add(1)
	if err := p.root.Remove(tmp); err != nil {
		// The message is in place; failing now would make a retry hit
		// EEXIST. A leftover dot-temp file is safe to delete.
		p.logger.Error("Removing temp file failed", err, watermill.LogFields{"file": p.abs(tmp)})
	}
	switch p.cfg.Fsync {
	case FsyncAlways:
		return p.syncDir(dir)
	case FsyncInterval:
		p.mu.Lock()
		p.unsynced = append(p.unsynced, name)
		p.mu.Unlock()
	}
	return nil
}

func (p *Publisher) writeRawTemp(tmp string, payload []byte) error {
	f, err := p.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("file publisher: %w", err)
	}
	_, werr := f.Write(payload)
	var serr error
	if werr == nil && p.cfg.Fsync == FsyncAlways {
		serr = f.Sync()
	}
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		return fmt.Errorf("file publisher: write %s: %w", p.abs(tmp), err)
	}
	return nil
}

// syncLoop is the owned goroutine for fsync "interval"; Close stops it.
func (p *Publisher) syncLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if err := p.syncPending(); err != nil {
				p.logger.Error("Background fsync failed", err, nil)
			}
		}
	}
}

// syncPending fsyncs what was written since the last call.
func (p *Publisher) syncPending() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, jf := range p.files {
		if jf.dirty {
			errs = append(errs, jf.sync())
		}
	}
	dirs := map[string]bool{}
	for _, name := range p.unsynced {
		errs = append(errs, p.syncPath(name))
		dirs[filepath.Dir(name)] = true
	}
	p.unsynced = nil
	for dir := range dirs {
		errs = append(errs, p.syncDir(dir))
	}
	return errors.Join(errs...)
}

func (jf *jsonlFile) sync() error {
	if err := jf.f.Sync(); err != nil {
		return fmt.Errorf("file publisher: fsync %s: %w", jf.f.Name(), err)
	}
	jf.dirty = false
	return nil
}

func (p *Publisher) syncPath(name string) error {
	f, err := p.root.Open(name)
	if err != nil {
		return fmt.Errorf("file publisher: fsync: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("file publisher: fsync %s: %w", p.abs(name), err)
	}
	return nil
}

// syncDir makes creations and renames inside dir durable.
func (p *Publisher) syncDir(dir string) error { return p.syncPath(dir) }

func (p *Publisher) abs(name string) string { return filepath.Join(p.cfg.Dir, name) }

// PublisherStats are a Publisher's counters since NewPublisher, all topics
// together.
type PublisherStats struct {
	// Written counts messages written: JSONL lines, or raw files linked to
	// their final name. With fsync "interval" or "never" they may not be on
	// disk yet.
	Written uint64
	// Rotated counts JSONL files rotated.
	Rotated uint64
}

// Stats returns a snapshot of the counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{Written: p.written.Load(), Rotated: p.rotated.Load()}
}

// Close stops the fsync goroutine, fsyncs (unless fsync is "never") and
// closes all files. It is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	close(p.stop)
	p.wg.Wait()
	p.inflight.Wait()

	var errs []error
	if p.cfg.Fsync != FsyncNever {
		errs = append(errs, p.syncPending())
	}
	p.mu.Lock()
	for topic, jf := range p.files {
		errs = append(errs, jf.f.Close())
		delete(p.files, topic)
	}
	p.mu.Unlock()
	errs = append(errs, p.root.Close())
	return errors.Join(errs...)
}
