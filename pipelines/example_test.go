package pipelines_test

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/loombridge/loombridge/internal/tracing"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// config.example.yaml is what users copy: it must load, and mention every key
// of every kind (as a setting or in a comment).
func TestExampleConfigShowsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipelines.Parse(b, pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }}); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	text := string(b)
	configs := []any{&kinds.LoomSource{}, &kinds.LoomSink{}, &kinds.FileSource{}, &kinds.FileSink{},
		&kinds.WebhookSink{}, &kinds.GenerateSource{}, &kinds.EchoSource{}, &pipelines.Pipeline{}, &pipelines.Config{}, &tracing.Config{},
		&kinds.NATSConnection{}, &kinds.NATSSource{}, &kinds.NATSSink{},
		&kinds.AMQPConnection{}, &kinds.AMQPSource{}, &kinds.AMQPSink{},
		&kinds.KafkaConnection{}, &kinds.KafkaSource{}, &kinds.KafkaSink{},
		&kinds.HTTPSource{},
		&kinds.RedisConnection{}, &kinds.RedisSource{}, &kinds.RedisSink{},
		&kinds.SQLConnection{}, &kinds.SQLSource{}, &kinds.SQLSink{}}
	for _, c := range configs {
		for _, key := range koanfKeys(reflect.TypeOf(c)) {
			if key == "dead_letter_topic" {
				continue // refused by the kinds: the pipeline's dead_letter takes these
			}
			if !regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `:`).MatchString(text) {
				t.Errorf("%T: key %s is not in config.example.yaml", c, key)
			}
		}
	}
}

// koanfKeys lists the leaf key names of a config struct.
func koanfKeys(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		switch {
		case name == "-" || !f.IsExported() && !f.Anonymous:
		case strings.Contains(opts, "squash"):
			out = append(out, koanfKeys(f.Type)...)
		default:
			out = append(out, name)
			out = append(out, koanfKeys(f.Type)...)
		}
	}
	return out
}
