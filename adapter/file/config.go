package file

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Formats of the Publisher.
const (
	FormatJSONL = "jsonl"
	FormatRaw   = "raw"
)

// Fsync policies of the Publisher.
const (
	FsyncAlways   = "always"
	FsyncInterval = "interval"
	FsyncNever    = "never"
)

// Defaults applied by the configs' setDefaults (see also
// [DefaultKeyMetadata]). SubscriberConfig.OffsetDir defaults to its Dir.
const (
	// DefaultFormat is PublisherConfig.Format's default.
	DefaultFormat = FormatJSONL
	// DefaultRawNameTemplate is PublisherConfig.NameTemplate's default with
	// format raw.
	DefaultRawNameTemplate = "{{.Topic}}/{{.UUID}}.bin"
	// DefaultFsync is PublisherConfig.Fsync's default.
	DefaultFsync = FsyncAlways
	// DefaultFsyncInterval is PublisherConfig.FsyncInterval's default.
	DefaultFsyncInterval = time.Second
	// DefaultPollInterval is SubscriberConfig.PollInterval's default.
	DefaultPollInterval = 200 * time.Millisecond
	// DefaultNackResendDelay is SubscriberConfig.NackResendDelay's default.
	DefaultNackResendDelay = time.Second
	// DefaultMaxLineBytes is SubscriberConfig.MaxLineBytes's default
	// (64 MiB).
	DefaultMaxLineBytes = 64 << 20
)

// PublisherConfig configures a [Publisher]. The zero value plus Dir is a
// valid jsonl publisher that fsyncs on every Publish.
type PublisherConfig struct {
	// Dir is the directory all files are written under. Required; created if
	// missing.
	Dir string `koanf:"dir"`
	// Format is "jsonl" (default) or "raw".
	Format string `koanf:"format"`
	// KeyMetadata is the metadata name holding the message key (default
	// "loom_key").
	KeyMetadata string `koanf:"key_metadata"`
	// NameTemplate (raw only) is a text/template producing the path of each
	// message's file relative to Dir, with the fields of RawName. Default
	// "{{.Topic}}/{{.UUID}}.bin".
	NameTemplate string `koanf:"name_template"`
	// Fsync is "always" (default), "interval" or "never".
	Fsync string `koanf:"fsync"`
	// FsyncInterval is the period of background fsyncs with Fsync
	// "interval" (default 1s).
	FsyncInterval time.Duration `koanf:"fsync_interval"`
	// MaxBytes (jsonl only) rotates the file before a write that would make
	// it larger than this. 0 disables size rotation.
	MaxBytes int64 `koanf:"max_bytes"`
	// MaxAge (jsonl only) rotates the file on the first write after it has
	// been open this long. 0 disables age rotation.
	MaxAge time.Duration `koanf:"max_age"`
}

func (c *PublisherConfig) setDefaults() {
	c.Format = cmp.Or(c.Format, DefaultFormat)
	c.KeyMetadata = cmp.Or(c.KeyMetadata, DefaultKeyMetadata)
	if c.NameTemplate == "" && c.Format == FormatRaw {
		c.NameTemplate = DefaultRawNameTemplate
	}
	c.Fsync = cmp.Or(c.Fsync, DefaultFsync)
	c.FsyncInterval = cmp.Or(c.FsyncInterval, DefaultFsyncInterval)
}

// Validate reports every invalid field, joined with errors.Join in the
// order of the struct's fields, each error starting with the field's
// config key (for example "fsync_interval: must be > 0, got -1s"). It
// expects defaults to be set, as NewPublisher does.
func (c PublisherConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Dir == "" {
		bad("dir: must not be empty")
	}
	raw := c.Format == FormatRaw
	if c.Format != FormatJSONL && !raw {
		bad("format: must be jsonl or raw, got %q", c.Format)
	}
	switch {
	case raw:
		if err := checkNameTemplate(c.NameTemplate); err != nil {
			bad("name_template: %w", err)
		}
	case c.NameTemplate != "":
		bad("name_template: only used with format raw")
	}
	switch c.Fsync {
	case FsyncAlways, FsyncInterval, FsyncNever:
	default:
		bad("fsync: must be always, interval or never, got %q", c.Fsync)
	}
	if c.FsyncInterval <= 0 {
		bad("fsync_interval: must be > 0, got %s", c.FsyncInterval)
	}
	switch {
	case c.MaxBytes < 0:
		bad("max_bytes: must not be negative, got %d", c.MaxBytes)
	case c.MaxBytes != 0 && raw:
		bad("max_bytes: rotation is only for format jsonl")
	}
	switch {
	case c.MaxAge < 0:
		bad("max_age: must not be negative, got %s", c.MaxAge)
	case c.MaxAge != 0 && raw:
		bad("max_age: rotation is only for format jsonl")
	}
	return errors.Join(errs...)
}

// sampleRawName is what Validate executes a name template with: a template
// that fails on it, or whose result is not a relative path inside the
// directory, would fail every Publish.
var sampleRawName = RawName{
	Topic: "topic",
	UUID:  "0190c5b4-7a1e-7c3a-9f0e-2b7d4c1a5e6f",
	Key:   "key",
	Seq:   1,
	Time:  time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC),
}

func parseNameTemplate(s string) (*template.Template, error) {
	if s == "" {
		return nil, errors.New("must not be empty")
	}
	// missingkey only matters for maps, but unknown struct fields already
	// fail at execution; checkNameTemplate executes it once.
	return template.New("name").Option("missingkey=error").Parse(s)
}

// checkNameTemplate parses s and executes it with sampleRawName.
func checkNameTemplate(s string) error {
	tmpl, err := parseNameTemplate(s)
	if err != nil {
		return err
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, sampleRawName); err != nil {
		return err
	}
	if err := checkRelPath(b.String()); err != nil {
		return fmt.Errorf("with a sample message: %w", err)
	}
	return nil
}

// SubscriberConfig configures a [Subscriber].
type SubscriberConfig struct {
	// Dir is the directory holding <topic>.jsonl. Required.
	Dir string `koanf:"dir"`
	// Follow keeps reading at the end of the file, like tail -f, instead of
	// closing the output channel.
	Follow bool `koanf:"follow"`
	// PollInterval is how often a followed file is checked for new data,
	// rotation and truncation (default 200ms).
	PollInterval time.Duration `koanf:"poll_interval"`
	// NackResendDelay is the wait before a nacked message is sent again
	// (default 1s).
	NackResendDelay time.Duration `koanf:"nack_resend_delay"`
	// KeyMetadata is the metadata name the line's key is restored under if
	// the line's metadata lacks it (default "loom_key").
	KeyMetadata string `koanf:"key_metadata"`
	// OffsetDir holds the offset files <topic>.jsonl.offset (default Dir).
	// Unless NoOffset is set, it must be a directory or creatable as one;
	// NewSubscriber creates it and checks that it can write in it.
	OffsetDir string `koanf:"offset_dir"`
	// NoOffset disables offset files: every Subscribe starts at the
	// beginning of the file and nothing is recorded (pure replay).
	NoOffset bool `koanf:"no_offset"`
	// MaxLineBytes is the longest line accepted; longer lines are dead
	// letters (default 64 MiB).
	MaxLineBytes int `koanf:"max_line_bytes"`
	// DeadLetterTopic is the topic bad lines are published to on
	// DeadLetter. Required when DeadLetter is set.
	DeadLetterTopic string `koanf:"dead_letter_topic"`
	// DeadLetter receives bad lines; nil means they are only logged. Not
	// a config key: set it in code.
	DeadLetter message.Publisher `koanf:"-"`
}

func (c *SubscriberConfig) setDefaults() {
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.NackResendDelay = cmp.Or(c.NackResendDelay, DefaultNackResendDelay)
	c.KeyMetadata = cmp.Or(c.KeyMetadata, DefaultKeyMetadata)
	c.OffsetDir = cmp.Or(c.OffsetDir, c.Dir)
	c.MaxLineBytes = cmp.Or(c.MaxLineBytes, DefaultMaxLineBytes)
}

// Validate reports every invalid field, joined with errors.Join in the
// order of the struct's fields, each error starting with the field's
// config key. It expects defaults to be set, as NewSubscriber does. Unless
// NoOffset is set, it looks at the file system: offset_dir must be a
// directory, or not exist below a directory (NewSubscriber creates it).
func (c SubscriberConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Dir == "" {
		bad("dir: must not be empty")
	}
	if c.PollInterval <= 0 {
		bad("poll_interval: must be > 0, got %s", c.PollInterval)
	}
	if c.NackResendDelay < 0 {
		bad("nack_resend_delay: must not be negative, got %s", c.NackResendDelay)
	}
	if !c.NoOffset && c.OffsetDir != "" { // "" only when dir is missing too
		if err := checkDirCreatable(c.OffsetDir); err != nil {
			bad("offset_dir: %w", err)
		}
	}
	if c.MaxLineBytes <= 0 {
		bad("max_line_bytes: must be > 0, got %d", c.MaxLineBytes)
	}
	if c.DeadLetter != nil && c.DeadLetterTopic == "" {
		bad("dead_letter_topic: required when the DeadLetter publisher is set")
	}
	return errors.Join(errs...)
}

// checkDirCreatable reports whether dir is a directory, or does not exist
// and its nearest existing ancestor is a directory, so that MkdirAll can
// create it (permissions aside). It changes nothing.
func checkDirCreatable(dir string) error {
	if dir == "" {
		return errors.New("must not be empty")
	}
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		switch {
		case err == nil && st.IsDir():
			return nil
		case err == nil:
			return fmt.Errorf("%s cannot be created: %s is not a directory", dir, p)
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return fmt.Errorf("%s: %w", dir, err)
		case filepath.Dir(p) == p:
			return nil // nothing exists up to the root; MkdirAll decides
		}
	}
}

// checkTopic makes sure a topic maps to exactly one file name inside the
// directory: it becomes <topic>.jsonl, so separators or dot names would
// point elsewhere.
func checkTopic(topic string) error {
	if topic == "" || topic == "." || topic == ".." ||
		strings.ContainsAny(topic, `/\`) || strings.ContainsRune(topic, 0) {
		return fmt.Errorf("topic %q: must be a plain file name without path separators", topic)
	}
	return nil
}

// checkRelPath rejects names that are absolute, empty or contain "..".
// filepath.IsLocal alone would accept "a/../b"; the spec asks to reject any
// "..", which also keeps names predictable.
func checkRelPath(name string) error {
	for _, el := range strings.Split(filepath.ToSlash(name), "/") {
		if el == ".." {
			return fmt.Errorf("path %q: must not contain \"..\"", name)
		}
	}
	if !filepath.IsLocal(name) {
		return fmt.Errorf("path %q: must be a relative path inside the directory", name)
	}
	return nil
}
