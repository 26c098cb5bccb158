package file

import (
	"strings"
	"testing"
	"time"
)

func TestPublisherConfigValidate(t *testing.T) {
	cases := map[string]struct {
		cfg  PublisherConfig
		want string // "" means valid
	}{
		"defaults":          {PublisherConfig{Dir: "d"}, ""},
		"raw defaults":      {PublisherConfig{Dir: "d", Format: "raw"}, ""},
		"no dir":            {PublisherConfig{}, "dir: "},
		"bad format":        {PublisherConfig{Dir: "d", Format: "x"}, `format: must be jsonl or raw, got "x"`},
		"bad fsync":         {PublisherConfig{Dir: "d", Fsync: "sometimes"}, `fsync: must be always, interval or never, got "sometimes"`},
		"bad template":      {PublisherConfig{Dir: "d", Format: "raw", NameTemplate: "{{.Topic"}, "name_template: "},
		"template jsonl":    {PublisherConfig{Dir: "d", NameTemplate: "{{.UUID}}"}, "name_template: "},
		"raw rotation":      {PublisherConfig{Dir: "d", Format: "raw", MaxBytes: 10}, "max_bytes"},
		"negative bytes":    {PublisherConfig{Dir: "d", MaxBytes: -1}, "max_bytes: "},
		"negative age":      {PublisherConfig{Dir: "d", MaxAge: -time.Second}, "max_age: "},
		"negative interval": {PublisherConfig{Dir: "d", FsyncInterval: -time.Second}, "fsync_interval: "},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.setDefaults()
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestSubscriberConfigValidate(t *testing.T) {
	pub := &capturePub{}
	cases := map[string]struct {
		cfg  SubscriberConfig
		want string
	}{
		"defaults":          {SubscriberConfig{Dir: "d"}, ""},
		"no dir":            {SubscriberConfig{}, "dir: "},
		"negative poll":     {SubscriberConfig{Dir: "d", PollInterval: -1}, "poll_interval: "},
		"negative nack":     {SubscriberConfig{Dir: "d", NackResendDelay: -1}, "nack_resend_delay: "},
		"negative max line": {SubscriberConfig{Dir: "d", MaxLineBytes: -1}, "max_line_bytes: "},
		"dlq without topic": {SubscriberConfig{Dir: "d", DeadLetterPublisher: pub}, "dead_letter_topic: "},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.setDefaults()
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				if cfg.OffsetDir != cfg.Dir || cfg.KeyMetadata != "loom_key" {
					t.Fatalf("defaults not applied: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestConstructorsValidate(t *testing.T) {
	if _, err := NewPublisher(PublisherConfig{Dir: t.TempDir(), Format: "x"}, nil); err == nil ||
		!strings.Contains(err.Error(), "format: ") {
		t.Fatalf("NewPublisher err = %v", err)
	}
	if _, err := NewSubscriber(SubscriberConfig{}, nil); err == nil || !strings.Contains(err.Error(), "dir: ") {
		t.Fatalf("NewSubscriber err = %v", err)
	}
}
