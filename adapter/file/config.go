package file

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

// Defaults applied by the config's setDefaults.
const (
	DefaultRawNameTemplate = "{{.Topic}}/{{.UUID}}.bin"
	DefaultFsyncInterval   = time.Second
	DefaultPollInterval    = 200 * time.Millisecond
	DefaultNackResendDelay = time.Second
	DefaultMaxLineBytes    = 64 << 20
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
	if c.Format == "" {
		c.Format = FormatJSONL
	}
	if c.KeyMetadata == "" {
		c.KeyMetadata = DefaultKeyMetadata
	}
	if c.NameTemplate == "" && c.Format == FormatRaw {
		c.NameTemplate = DefaultRawNameTemplate
	}
	if c.Fsync == "" {
		c.Fsync = FsyncAlways
	}
	if c.FsyncInterval == 0 {
		c.FsyncInterval = DefaultFsyncInterval
	}
}

// Validate reports the first invalid field, named by its config key.
func (c PublisherConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("dir: must not be empty")
	}
	switch c.Format {
	case FormatJSONL:
		if c.NameTemplate != "" {
			return errors.New("name_template: only used with format raw")
		}
	case FormatRaw:
		if _, err := parseNameTemplate(c.NameTemplate); err != nil {
			return fmt.Errorf("name_template: %w", err)
		}
		if c.MaxBytes != 0 || c.MaxAge != 0 {
			return errors.New("max_bytes, max_age: rotation is only for format jsonl")
		}
	default:
		return fmt.Errorf("format: must be jsonl or raw, got %q", c.Format)
	}
	switch c.Fsync {
	case FsyncAlways, FsyncInterval, FsyncNever:
	default:
		return fmt.Errorf("fsync: must be always, interval or never, got %q", c.Fsync)
	}
	if c.FsyncInterval < 0 {
		return fmt.Errorf("fsync_interval: must be positive, got %s", c.FsyncInterval)
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("max_bytes: must not be negative, got %d", c.MaxBytes)
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("max_age: must not be negative, got %s", c.MaxAge)
	}
	return nil
}

func parseNameTemplate(s string) (*template.Template, error) {
	if s == "" {
		return nil, errors.New("must not be empty")
	}
	// missingkey only matters for maps, but unknown struct fields already
	// fail at execution; parsing here catches syntax errors at startup.
	return template.New("name").Option("missingkey=error").Parse(s)
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
	OffsetDir string `koanf:"offset_dir"`
	// NoOffset disables offset files: every Subscribe starts at the
	// beginning of the file and nothing is recorded (pure replay).
	NoOffset bool `koanf:"no_offset"`
	// MaxLineBytes is the longest line accepted; longer lines are dead
	// letters (default 64 MiB).
	MaxLineBytes int `koanf:"max_line_bytes"`
	// DeadLetterTopic is the topic bad lines are published to on
	// DeadLetterPublisher. Required when DeadLetterPublisher is set.
	DeadLetterTopic string `koanf:"dead_letter_topic"`
	// DeadLetterPublisher receives bad lines; nil means they are only logged.
	DeadLetterPublisher message.Publisher `koanf:"-"`
}

func (c *SubscriberConfig) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.NackResendDelay == 0 {
		c.NackResendDelay = DefaultNackResendDelay
	}
	if c.KeyMetadata == "" {
		c.KeyMetadata = DefaultKeyMetadata
	}
	if c.OffsetDir == "" {
		c.OffsetDir = c.Dir
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
}

// Validate reports the first invalid field, named by its config key.
func (c SubscriberConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("dir: must not be empty")
	}
	if c.PollInterval <= 0 {
		return fmt.Errorf("poll_interval: must be positive, got %s", c.PollInterval)
	}
	if c.NackResendDelay < 0 {
		return fmt.Errorf("nack_resend_delay: must not be negative, got %s", c.NackResendDelay)
	}
	if c.MaxLineBytes <= 0 {
		return fmt.Errorf("max_line_bytes: must be positive, got %d", c.MaxLineBytes)
	}
	if c.DeadLetterPublisher != nil && c.DeadLetterTopic == "" {
		return errors.New("dead_letter_topic: required when a dead-letter publisher is set")
	}
	return nil
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
