package file

import (
	"errors"
	"os"
	"path/filepath"
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
		"negative interval": {PublisherConfig{Dir: "d", FsyncInterval: -time.Second}, "fsync_interval: must be > 0, got -1s"},
		// Templates that parse but would fail every Publish.
		"unknown field": {PublisherConfig{Dir: "d", Format: "raw", NameTemplate: "{{.Nope}}"}, "name_template: "},
		"escaping":      {PublisherConfig{Dir: "d", Format: "raw", NameTemplate: "../{{.UUID}}"}, "name_template: "},
		"absolute":      {PublisherConfig{Dir: "d", Format: "raw", NameTemplate: "/tmp/{{.UUID}}"}, "name_template: "},
		"empty result":  {PublisherConfig{Dir: "d", Format: "raw", NameTemplate: "{{if false}}x{{end}}"}, "name_template: "},
		"all fields":    {PublisherConfig{Dir: "d", Format: "raw", NameTemplate: "{{.Topic}}/{{.Key}}/{{.Time.Format \"2006\"}}-{{.Seq}}-{{.UUID}}"}, ""},
		"raw max_age":   {PublisherConfig{Dir: "d", Format: "raw", MaxAge: time.Hour}, "max_age: rotation is only for format jsonl"},
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
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		cfg  SubscriberConfig
		want string
	}{
		"defaults":          {SubscriberConfig{Dir: "d"}, ""},
		"no dir":            {SubscriberConfig{}, "dir: "},
		"negative poll":     {SubscriberConfig{Dir: "d", PollInterval: -1}, "poll_interval: "},
		"negative nack":     {SubscriberConfig{Dir: "d", NackResendDelay: -1}, "nack_resend_delay: "},
		"negative max line": {SubscriberConfig{Dir: "d", MaxLineBytes: -1}, "max_line_bytes: "},
		"dlq without topic": {SubscriberConfig{Dir: "d", DeadLetter: pub}, "dead_letter_topic: "},
		"offset_dir a file": {SubscriberConfig{Dir: "d", OffsetDir: aFile}, "offset_dir: "},
		"offset_dir below a file": {SubscriberConfig{Dir: "d", OffsetDir: filepath.Join(aFile, "offsets")},
			"offset_dir: " + filepath.Join(aFile, "offsets") + " cannot be created: " + aFile + " is not a directory"},
		"offset_dir below a file, no_offset": {SubscriberConfig{Dir: "d", OffsetDir: filepath.Join(aFile, "x"), NoOffset: true}, ""},
		"offset_dir to create":               {SubscriberConfig{Dir: "d", OffsetDir: filepath.Join(t.TempDir(), "a", "b")}, ""},
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
				if cfg.OffsetDir == "" || cfg.KeyMetadata != "loom_key" {
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

// errorLines splits the errors.Join of Validate into its errors.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range joined.Unwrap() {
		out = append(out, e.Error())
	}
	return out
}

// checkErrors fails unless got has one error per prefix in want, in order.
func checkErrors(t *testing.T, got []string, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

// Validate reports every problem, in the order of the struct's fields.
func TestPublisherConfigReportsEveryErrorInOrder(t *testing.T) {
	cfg := PublisherConfig{Format: FormatRaw, NameTemplate: "{{.Nope}}", Fsync: "sometimes",
		FsyncInterval: -time.Second, MaxBytes: 10, MaxAge: -time.Second}
	cfg.setDefaults()
	for range 3 { // the same every time
		checkErrors(t, errorLines(t, cfg.Validate()), []string{
			"dir: must not be empty",
			"name_template: ",
			`fsync: must be always, interval or never, got "sometimes"`,
			"fsync_interval: must be > 0, got -1s",
			"max_bytes: rotation is only for format jsonl",
			"max_age: must not be negative, got -1s",
		})
	}
	cfg = PublisherConfig{Dir: "d", Format: "x", NameTemplate: "{{.UUID}}", MaxBytes: -1}
	cfg.setDefaults()
	checkErrors(t, errorLines(t, cfg.Validate()), []string{
		`format: must be jsonl or raw, got "x"`,
		"name_template: only used with format raw",
		"max_bytes: must not be negative, got -1",
	})
}

func TestSubscriberConfigReportsEveryErrorInOrder(t *testing.T) {
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := SubscriberConfig{PollInterval: -1, NackResendDelay: -time.Second, OffsetDir: aFile,
		MaxLineBytes: -1, DeadLetter: &capturePub{}}
	cfg.setDefaults()
	checkErrors(t, errorLines(t, cfg.Validate()), []string{
		"dir: must not be empty",
		"poll_interval: must be > 0, got -1ns",
		"nack_resend_delay: must not be negative, got -1s",
		"offset_dir: " + aFile + " cannot be created: " + aFile + " is not a directory",
		"max_line_bytes: must be > 0, got -1",
		"dead_letter_topic: required when the DeadLetter publisher is set",
	})
}

// A missing offset_dir used to be accepted: every Ack then failed to store
// its offset (only logged) and a restart read the whole file again.
func TestMissingOffsetDirIsCreated(t *testing.T) {
	dir := t.TempDir()
	offDir := filepath.Join(t.TempDir(), "not", "yet")
	publish(t, newPub(t, PublisherConfig{Dir: dir}), "t", msgs(3)...)
	s := newSub(t, SubscriberConfig{Dir: dir, OffsetDir: offDir})
	if got := uuids(drain(t, subscribe(t, s, "t"))); got != "u00,u01,u02" {
		t.Fatalf("read %s", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(offDir, "t.jsonl.offset")); err != nil {
		t.Fatalf("no offset file: %v", err)
	}
	s2 := newSub(t, SubscriberConfig{Dir: dir, OffsetDir: offDir})
	if left := drain(t, subscribe(t, s2, "t")); len(left) != 0 {
		t.Fatalf("restart read %s again", uuids(left))
	}
}

func TestUnusableOffsetDirIsRefused(t *testing.T) {
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := NewSubscriber(SubscriberConfig{Dir: t.TempDir(), OffsetDir: filepath.Join(aFile, "offsets")}, nil)
	if err == nil || !strings.Contains(err.Error(), "offset_dir: ") {
		t.Fatalf("NewSubscriber err = %v, want an offset_dir error", err)
	}
}
