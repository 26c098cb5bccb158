package pipelines_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// parse loads a configuration with the builtin kinds and only the given
// environment, failing the test on any error.
func parse(t testing.TB, yaml string, environ ...string) *pipelines.Config {
	t.Helper()
	cfg, err := pipelines.Parse([]byte(yaml), pipelines.LoadOptions{
		Kinds:   kinds.Builtin(),
		Environ: func() []string { return environ },
	})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

const loomConfig = `
connections:
  main: {embedded: true}
pipelines:
  orders:
    from: {type: loom, connection: main, room: orders}
    to:
      out: {type: stdout}
`

func loomSource(t *testing.T, cfg *pipelines.Config, pipeline string) *kinds.LoomSource {
	t.Helper()
	pl, ok := cfg.Pipelines[pipeline]
	if !ok {
		t.Fatalf("no pipeline %q", pipeline)
	}
	src, ok := pl.From.Source.(*kinds.LoomSource)
	if !ok {
		t.Fatalf("pipeline %q: source is %T", pipeline, pl.From.Source)
	}
	return src
}

func TestEnvOverridesNestedKey(t *testing.T) {
	cfg := parse(t, loomConfig, "LOOMBRIDGE_PIPELINES__ORDERS__FROM__ROOM=orders_v2")
	if got := loomSource(t, cfg, "orders").Room; got != "orders_v2" {
		t.Errorf("room = %q, want orders_v2 from the override", got)
	}
}

func TestEnvOverrideAddsKeys(t *testing.T) {
	cfg := parse(t, loomConfig,
		"LOOMBRIDGE_PIPELINES__ORDERS__CONCURRENCY=3",           // a key the file does not set
		"LOOMBRIDGE_PIPELINES__ORDERS__FROM__CONSUMERS=2",       // an adapter key
		"LOOMBRIDGE_PIPELINES__ORDERS__RETRY__JITTER=0.5",       // a float
		"LOOMBRIDGE_PIPELINES__ORDERS__RETRY__MAX_INTERVAL=2s",  // a duration
		"LOOMBRIDGE_SHUTDOWN_TIMEOUT=500ms",                     // a top-level key
		"LOOMBRIDGE_PIPELINES__EXTRA__FROM__TYPE=generate",      // a whole new pipeline
		"LOOMBRIDGE_PIPELINES__EXTRA__FROM__INTERVAL=250ms",     //
		"LOOMBRIDGE_PIPELINES__EXTRA__TO__ARCHIVE__TYPE=file",   //
		"LOOMBRIDGE_PIPELINES__EXTRA__TO__ARCHIVE__DIR=./out",   //
		"LOOMBRIDGE_PIPELINES__EXTRA__TO__ARCHIVE__FSYNC=never", //
		"UNRELATED=1",
	)
	pl := cfg.Pipelines["orders"]
	if pl.Concurrency != 3 {
		t.Errorf("concurrency = %d, want 3", pl.Concurrency)
	}
	if got := loomSource(t, cfg, "orders").Consumers; got != 2 {
		t.Errorf("consumers = %d, want 2", got)
	}
	if pl.Retry.Jitter != 0.5 || pl.Retry.MaxInterval != 2*time.Second {
		t.Errorf("retry = %+v, want jitter 0.5 and max_interval 2s", pl.Retry)
	}
	if cfg.ShutdownTimeout != 500*time.Millisecond {
		t.Errorf("shutdown_timeout = %s, want 500ms", cfg.ShutdownTimeout)
	}
	extra, ok := cfg.Pipelines["extra"]
	if !ok {
		t.Fatalf("the pipeline made by overrides is missing; have %d pipelines", len(cfg.Pipelines))
	}
	gen := extra.From.Source.(*kinds.GenerateSource)
	if *gen.Interval != 250*time.Millisecond {
		t.Errorf("extra interval = %s, want 250ms", *gen.Interval)
	}
	if sink := extra.To["archive"].Sink.(*kinds.FileSink); sink.Dir != "./out" || sink.Fsync != "never" {
		t.Errorf("extra archive = %+v", sink.PublisherConfig)
	}
}

// TestScalarTypes reads durations, whole numbers, booleans and floats both as
// YAML values and as the strings environment overrides give.
func TestScalarTypes(t *testing.T) {
	const yamlTyped = `
pipelines:
  orders:
    from: {type: file, dir: ./in, topic: orders, follow: true, poll_interval: 500ms, max_line_bytes: 4096}
    to:
      out: {type: stdout}
    retry: {multiplier: 1.5, max_retries: 0}
`
	const bare = `
pipelines:
  orders:
    from: {type: file, dir: ./in, topic: orders}
    to:
      out: {type: stdout}
`
	check := func(t *testing.T, cfg *pipelines.Config) {
		t.Helper()
		src := cfg.Pipelines["orders"].From.Source.(*kinds.FileSource)
		if !src.Follow || src.PollInterval != 500*time.Millisecond || src.MaxLineBytes != 4096 {
			t.Errorf("source = %+v, want follow, 500ms, 4096", src.SubscriberConfig)
		}
		if r := cfg.Pipelines["orders"].Retry; r.Multiplier != 1.5 || r.MaxRetries != 0 {
			t.Errorf("retry = %+v, want multiplier 1.5 and max_retries 0", r)
		}
	}
	t.Run("yaml", func(t *testing.T) { check(t, parse(t, yamlTyped)) })
	t.Run("env", func(t *testing.T) {
		check(t, parse(t, bare,
			"LOOMBRIDGE_PIPELINES__ORDERS__FROM__FOLLOW=true",
			"LOOMBRIDGE_PIPELINES__ORDERS__FROM__POLL_INTERVAL=500ms",
			"LOOMBRIDGE_PIPELINES__ORDERS__FROM__MAX_LINE_BYTES=4096",
			"LOOMBRIDGE_PIPELINES__ORDERS__RETRY__MULTIPLIER=1.5",
			"LOOMBRIDGE_PIPELINES__ORDERS__RETRY__MAX_RETRIES=0",
		))
	})
}

func TestInterpolation(t *testing.T) {
	const yaml = `
pipelines:
  orders:
    from:
      type: generate
      topic: "${TOPIC}"
      payload: 'price $5, literal $${HOME}, default ${MISSING:-fallback}, empty default ${EMPTY:-dflt}'
      key: "${KEY}"
    to:
      hooks:
        type: webhook
        endpoints:
          - name: billing
            url: "https://${HOST}/hook"
            secrets: ["${SECRET}", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            headers: {X-Env: "${KEY}"}
`
	multi := "a: b\nc: [d]\n- e"
	cfg := parse(t, yaml,
		"TOPIC="+multi,
		"KEY=k: {{.N}}",
		"HOST=billing.example",
		"SECRET=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
		"EMPTY=",
	)
	gen := cfg.Pipelines["orders"].From.Source.(*kinds.GenerateSource)
	if gen.TopicName != multi {
		t.Errorf("topic = %q, want the variable's value as one plain string %q", gen.TopicName, multi)
	}
	if gen.Key != "k: {{.N}}" {
		t.Errorf("key = %q", gen.Key)
	}
	if want := "price $5, literal ${HOME}, default fallback, empty default dflt"; gen.Payload != want {
		t.Errorf("payload = %q, want %q", gen.Payload, want)
	}
	ep := cfg.Pipelines["orders"].To["hooks"].Sink.(*kinds.WebhookSink).Endpoints[0]
	if ep.URL != "https://billing.example/hook" {
		t.Errorf("url = %q", ep.URL)
	}
	if len(ep.Secrets) != 2 || ep.Secrets[0] != "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" {
		t.Errorf("secrets = %q, want the variable expanded inside the list", ep.Secrets)
	}
	if ep.Headers["X-Env"] != "k: {{.N}}" {
		t.Errorf("header = %q", ep.Headers["X-Env"])
	}
}

// TestOverrideReplacesMissingVariable: a key an override sets does not need
// the variable its file value names.
func TestOverrideReplacesMissingVariable(t *testing.T) {
	cfg := parse(t, strings.Replace(loomConfig, "room: orders", `room: "${ORDERS_ROOM}"`, 1),
		"LOOMBRIDGE_PIPELINES__ORDERS__FROM__ROOM=from_env")
	if got := loomSource(t, cfg, "orders").Room; got != "from_env" {
		t.Errorf("room = %q", got)
	}
}

func TestEnvOverrideValueIsNotInterpolated(t *testing.T) {
	cfg := parse(t, loomConfig, "LOOMBRIDGE_PIPELINES__ORDERS__FROM__ROOM=${NOT_EXPANDED}")
	if got := loomSource(t, cfg, "orders").Room; got != "${NOT_EXPANDED}" {
		t.Errorf("room = %q, want the override as given", got)
	}
}

func TestDefaults(t *testing.T) {
	cfg := parse(t, loomConfig)
	if cfg.ShutdownTimeout != pipelines.DefaultShutdownTimeout {
		t.Errorf("shutdown_timeout = %s", cfg.ShutdownTimeout)
	}
	if cfg.Log.Level != "info" || cfg.Log.Format != "text" || cfg.Log.StatsInterval != pipelines.DefaultStatsInterval {
		t.Errorf("log = %+v", cfg.Log)
	}
	if cfg.HTTP.Addr != pipelines.DefaultHTTPAddr {
		t.Errorf("http.addr = %q", cfg.HTTP.Addr)
	}
	pl := cfg.Pipelines["orders"]
	if pl.Concurrency != pipelines.DefaultConcurrency {
		t.Errorf("concurrency = %d", pl.Concurrency)
	}
	want := pipelines.RetryConfig{
		MaxRetries:      pipelines.DefaultMaxRetries,
		InitialInterval: pipelines.DefaultRetryInitial,
		MaxInterval:     pipelines.DefaultRetryMax,
		Multiplier:      pipelines.DefaultRetryMultiplier,
		Jitter:          pipelines.DefaultRetryJitter,
	}
	if pl.Retry != want {
		t.Errorf("retry = %+v, want %+v", pl.Retry, want)
	}

	// A retry key given keeps the others' defaults; stats_interval: 0 is off.
	cfg = parse(t, loomConfig+"    retry: {multiplier: 3}\nlog: {stats_interval: 0s}\n")
	want.Multiplier = 3
	if got := cfg.Pipelines["orders"].Retry; got != want {
		t.Errorf("retry = %+v, want %+v", got, want)
	}
	if cfg.Log.StatsInterval != 0 {
		t.Errorf("stats_interval = %s, want 0 (off) as given", cfg.Log.StatsInterval)
	}
}

func TestChangedFingerprints(t *testing.T) {
	const base = `
connections:
  a: {embedded: true}
  b: {embedded: true}
pipelines:
  one:
    from: {type: loom, connection: a, room: r1}
    to: {out: {type: stdout}}
  two:
    from: {type: generate}
    to: {up: {type: loom, connection: b, room: r2}}
  three:
    from: {type: generate}
    to: {out: {type: stdout}}
`
	old := parse(t, base)
	changed, removed := (*pipelines.Config)(nil).Changed(old)
	if strings.Join(changed, ",") != "one,three,two" || len(removed) != 0 {
		t.Errorf("from nothing: changed %v removed %v, want every pipeline new", changed, removed)
	}
	same := parse(t, base)
	if changed, removed := old.Changed(same); len(changed)+len(removed) != 0 {
		t.Errorf("same file: changed %v removed %v", changed, removed)
	}

	tests := []struct {
		name             string
		edit             func(string) string
		changed, removed string
	}{
		{"one pipeline's key", func(s string) string { return strings.Replace(s, "room: r1", "room: r1b", 1) }, "one", ""},
		{"a pipeline-level key", func(s string) string {
			return strings.Replace(s, "  three:\n", "  three:\n    concurrency: 4\n", 1)
		}, "three", ""},
		{"a connection used as sink", func(s string) string {
			return strings.Replace(s, "b: {embedded: true}", "b: {embedded: true, addr: \"127.0.0.1:0\"}", 1)
		}, "two", ""},
		{"a connection used as source", func(s string) string {
			return strings.Replace(s, "a: {embedded: true}", "a: {embedded: true, addr: \"127.0.0.1:0\"}", 1)
		}, "one", ""},
		{"a pipeline removed", func(s string) string { return s[:strings.Index(s, "  three:")] }, "", "three"},
		{"top-level keys only", func(s string) string { return "log: {level: debug}\nshutdown_timeout: 5s\n" + s }, "", ""},
		{"an override", func(s string) string { return s }, "one", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.name == "an override" {
				env = []string{"LOOMBRIDGE_PIPELINES__ONE__FROM__CONSUMERS=8"}
			}
			next := parse(t, tt.edit(base), env...)
			changed, removed := old.Changed(next)
			if strings.Join(changed, ",") != tt.changed || strings.Join(removed, ",") != tt.removed {
				t.Errorf("changed %v removed %v, want changed [%s] removed [%s]", changed, removed, tt.changed, tt.removed)
			}
		})
	}
}

func TestExampleConfigLoads(t *testing.T) {
	path := filepath.Join("..", "config.example.yaml")
	cfg, err := pipelines.Load(path, pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, name := range []string{"feed", "archive", "receiver"} {
		if _, ok := cfg.Pipelines[name]; !ok {
			t.Errorf("%s: no pipeline %q", path, name)
		}
	}
}

// FuzzParse: no input makes Parse panic, and what it returns is either a
// configuration or errors that each name what is wrong.
func FuzzParse(f *testing.F) {
	seeds := []string{filepath.Join("..", "config.example.yaml")}
	invalid, _ := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	seeds = append(seeds, invalid...)
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(loomConfig))
	f.Add([]byte("pipelines: {a: {from: {type: generate}, to: {b: {type: stdout}}}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("pipelines:\n  a:\n    <<: {from: {type: generate}}\n    to: {1: {type: stdout}}\n"))
	registry := kinds.Builtin()
	env := []string{"HOME=/nonexistent", "LOOMBRIDGE_PIPELINES__FEED__CONCURRENCY=2"}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 32<<10 {
			return
		}
		cfg, err := pipelines.Parse(b, pipelines.LoadOptions{Kinds: registry, Environ: func() []string { return env }})
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config and nil error")
			}
			return
		}
		if cfg != nil {
			t.Fatalf("config returned with error %v", err)
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if strings.TrimSpace(line) == "" {
				t.Fatalf("empty error line in %q", err.Error())
			}
		}
	})
}
