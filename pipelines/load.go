package pipelines

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts every environment override: LOOMBRIDGE_<PATH>, with "__"
// between levels, such as LOOMBRIDGE_PIPELINES__ORDERS__FROM__ROOM.
const EnvPrefix = "LOOMBRIDGE_"

// LoadOptions says what Load may look at besides the file.
type LoadOptions struct {
	// Kinds are the source and sink types understood.
	Kinds *Registry
	// Environ lists the environment as KEY=value, for ${VAR} references and
	// LOOMBRIDGE_ overrides; nil means os.Environ.
	Environ func() []string
}

// Load reads the configuration file at path and checks all of it. The error,
// when there is one, is an Errors listing every problem by key path.
func Load(path string, opts LoadOptions) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b, opts)
}

// Parse is Load for a configuration already read.
func Parse(b []byte, opts LoadOptions) (*Config, error) {
	if opts.Environ == nil {
		opts.Environ = os.Environ
	}
	environ := opts.Environ()
	lookup := func(name string) (string, bool) {
		for _, kv := range environ {
			if k, v, ok := strings.Cut(kv, "="); ok && k == name {
				return v, true
			}
		}
		return "", false
	}

	var p problems
	tree, err := yaml.Parser().Unmarshal(b)
	if err != nil {
		p.add("", fmt.Errorf("YAML: %w", err))
		return nil, p.err()
	}
	if tree == nil {
		tree = map[string]any{}
	}
	checkNames(tree, &p)
	if p.err() != nil {
		return nil, p.err() // a dotted name would be split by koanf
	}
	interpolate(tree, lookup, &p)

	// Layers: the file, then LOOMBRIDGE_ overrides. Defaults come last in code,
	// for keys still unset, since a kind's defaults depend on its type.
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(tree, ""), nil); err != nil {
		p.add("", err)
	}
	if err := k.Load(env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		EnvironFunc:   func() []string { return environ },
		TransformFunc: envKey,
	}), nil); err != nil {
		p.add("", fmt.Errorf("environment overrides: %w", err))
	}
	cfg := decodeConfig(k.Raw(), opts.Kinds, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// envKey turns LOOMBRIDGE_PIPELINES__ORDERS__FROM__ROOM into
// pipelines.orders.from.room.
func envKey(k, v string) (string, any) {
	k = strings.TrimPrefix(k, EnvPrefix)
	return strings.ToLower(strings.ReplaceAll(k, "__", ".")), v
}

// checkNames refuses names that koanf would split (dots) or that are not
// [a-z0-9_-]+, for connections, pipelines and sinks.
func checkNames(tree map[string]any, p *problems) {
	check := func(path string, m any) {
		mm, ok := m.(map[string]any)
		if !ok {
			return
		}
		for _, name := range sortedNames(mm) {
			switch {
			case strings.Contains(name, "."):
				p.addf(join(path, name), "name %q contains \".\", which separates keys; use - or _ instead", name)
			case !validName.MatchString(name):
				p.addf(join(path, name), "name %q: use only a-z, 0-9, _ and -", name)
			}
		}
	}
	check("connections", tree["connections"])
	check("pipelines", tree["pipelines"])
	if pls, ok := tree["pipelines"].(map[string]any); ok {
		for name, pl := range pls {
			if m, ok := pl.(map[string]any); ok {
				check("pipelines."+name+".to", m["to"])
			}
		}
	}
}

// topKeys and pipelineKeys describe the generic parts of the file, for the
// unknown-key check; sources and sinks are checked against their kind.
type topKeys struct {
	Log             LogConfig      `koanf:"log"`
	HTTP            HTTPConfig     `koanf:"http"`
	ShutdownTimeout string         `koanf:"shutdown_timeout"`
	Connections     map[string]any `koanf:"connections"`
	Pipelines       map[string]any `koanf:"pipelines"`
}

type pipelineKeys struct {
	From        map[string]any `koanf:"from"`
	To          map[string]any `koanf:"to"`
	Filter      string         `koanf:"filter"`
	Retry       RetryConfig    `koanf:"retry"`
	DeadLetter  map[string]any `koanf:"dead_letter"`
	Concurrency int            `koanf:"concurrency"`
}

func decodeConfig(tree map[string]any, kinds *Registry, p *problems) *Config {
	cfg := &Config{Connections: map[string]*Connection{}, Pipelines: map[string]*Pipeline{}, fingerprint: map[string]string{}}
	unknownKeys(tree, typeOf[topKeys](), "", p)
	decode(tree["log"], &cfg.Log, "log", p)
	decode(tree["http"], &cfg.HTTP, "http", p)
	decode(map[string]any{"shutdown_timeout": tree["shutdown_timeout"]}, cfg, "", p)
	cfg.setDefaults()

	conns, _ := tree["connections"].(map[string]any)
	for _, name := range sortedNames(conns) {
		path := "connections." + name
		c := &Connection{}
		if _, ok := conns[name].(map[string]any); !ok {
			p.addf(path, "must be a mapping of connection keys")
			continue
		}
		decode(conns[name], c, path, p)
		cfg.Connections[name] = c
		if c.Embedded {
			if c.Client.Addr != "" {
				if err := checkHostPort(c.Client.Addr); err != nil {
					p.add(path+".addr", err)
				}
			}
			continue
		}
		check := c.Client
		check.SetDefaults()
		before := len(p.list)
		p.add(path, check.Check())
		c.invalid = len(p.list) > before
	}

	pls, _ := tree["pipelines"].(map[string]any)
	for _, name := range sortedNames(pls) {
		path := "pipelines." + name
		raw, ok := pls[name].(map[string]any)
		if !ok {
			p.addf(path, "must be a mapping with from: and to:")
			continue
		}
		pl := decodePipeline(name, raw, cfg.Connections, kinds, p)
		cfg.Pipelines[name] = pl
		cfg.fingerprint[name] = fingerprint(raw, conns)
	}
	cfg.validate(p)
	return cfg
}

func decodePipeline(name string, raw map[string]any, conns map[string]*Connection, kinds *Registry, p *problems) *Pipeline {
	path := "pipelines." + name
	unknownKeys(raw, typeOf[pipelineKeys](), path, p)
	pl := &Pipeline{To: map[string]*Endpoint{}}
	var keys pipelineKeys
	decode(map[string]any{"filter": raw["filter"], "concurrency": raw["concurrency"]}, &keys, path, p)
	decode(raw["retry"], &pl.Retry, path+".retry", p)
	pl.Filter, pl.Concurrency = keys.Filter, keys.Concurrency
	retrySet := map[string]bool{}
	if rm, ok := raw["retry"].(map[string]any); ok {
		for k := range rm {
			retrySet[k] = true
		}
	}
	pl.setDefaults(retrySet)
	pl.Retry.validate(path+".retry", p)
	if pl.Concurrency < 1 {
		p.addf(path+".concurrency", "must be >= 1, got %d", pl.Concurrency)
	}
	if pl.Filter != "" {
		f, err := compilePredicate(pl.Filter)
		if err != nil {
			p.add(path+".filter", err)
		}
		pl.filter = f
	}

	deps := Deps{Pipeline: name, connections: conns}
	if raw["from"] == nil {
		p.addf(path+".from", "must be set: the source, {type: <kind>, ...}")
	} else {
		pl.From = decodeEndpoint(raw["from"], path+".from", false, deps, kinds, p)
	}
	to, _ := raw["to"].(map[string]any)
	if len(to) == 0 {
		p.addf(path+".to", "must name at least one sink: to: {<name>: {type: <kind>, ...}}")
	}
	for _, sink := range sortedNames(to) {
		if ep := decodeEndpoint(to[sink], path+".to."+sink, true, deps, kinds, p); ep != nil {
			pl.To[sink] = ep
		}
	}
	if src, ok := sourceRoom(pl); ok {
		for _, sink := range sortedNames(pl.To) {
			if r, ok := pl.To[sink].Sink.(roomer); ok {
				if c, rm := r.LoomRoom(); c == src[0] && rm == src[1] {
					p.addf(path+".to."+sink+".room", "%q on connection %s is the room this pipeline reads: every message would go round forever", rm, c)
				}
			}
		}
	}
	if raw["dead_letter"] != nil {
		pl.DeadLetter = decodeEndpoint(raw["dead_letter"], path+".dead_letter", true, deps, kinds, p)
		if pl.DeadLetter != nil && pl.DeadLetter.When != "" {
			p.addf(path+".dead_letter.when", "not allowed: every dead letter must be kept")
		}
	}
	return pl
}

// decodeEndpoint decodes {type: kind, when: expr, ...kind keys}.
func decodeEndpoint(v any, path string, sink bool, deps Deps, kinds *Registry, p *problems) *Endpoint {
	role := "source"
	if sink {
		role = "sink"
	}
	raw, ok := v.(map[string]any)
	if !ok {
		p.addf(path, "must be a mapping: {type: <kind>, ...}")
		return nil
	}
	typ, _ := raw["type"].(string)
	if typ == "" {
		p.addf(path+".type", "must be set to a %s kind: %s", role, strings.Join(kinds.Names(!sink), ", "))
		return nil
	}
	kind, ok := kinds.Lookup(typ)
	if !ok || (sink && kind.Sink == nil) || (!sink && kind.Source == nil) {
		p.addf(path+".type", "unknown %s kind %q (known: %s)", role, typ, strings.Join(kinds.Names(!sink), ", "))
		return nil
	}
	rest := make(map[string]any, len(raw))
	for k, val := range raw {
		if k != "type" && !(sink && k == "when") {
			rest[k] = val
		}
	}
	ep := &Endpoint{Type: typ}
	var target any
	if sink {
		ep.Sink = kind.Sink()
		target = ep.Sink
		if w, ok := raw["when"]; ok {
			ep.When = fmt.Sprint(w)
			pred, err := compilePredicate(ep.When)
			if err != nil {
				p.add(path+".when", err)
			}
			ep.when = pred
		}
	} else {
		ep.Source = kind.Source()
		target = ep.Source
	}
	if !decode(rest, target, path, p) {
		return ep // Check would only repeat type errors as range errors
	}
	if sink {
		p.add(path, ep.Sink.Check(deps))
	} else {
		p.add(path, ep.Source.Check(deps))
	}
	return ep
}

// fingerprint hashes a pipeline's keys and those of every connection it
// names, so a reload restarts exactly the pipelines whose effective config
// changed.
func fingerprint(raw map[string]any, conns map[string]any) string {
	used := map[string]any{}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if c, ok := t["connection"].(string); ok {
				used[c] = conns[c]
			}
			for _, e := range t {
				walk(e)
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(raw)
	b, _ := json.Marshal([]any{raw, used}) // maps marshal with sorted keys
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Changed lists the pipelines of next that are new or differ from c's, and
// those of c that next no longer has.
func (c *Config) Changed(next *Config) (changed, removed []string) {
	for name, fp := range next.fingerprint {
		if c == nil || c.fingerprint[name] != fp {
			changed = append(changed, name)
		}
	}
	if c != nil {
		for name := range c.fingerprint {
			if _, ok := next.fingerprint[name]; !ok {
				removed = append(removed, name)
			}
		}
	}
	sort.Strings(changed)
	sort.Strings(removed)
	return changed, removed
}

func sourceRoom(pl *Pipeline) ([2]string, bool) {
	if pl.From == nil {
		return [2]string{}, false
	}
	r, ok := pl.From.Source.(roomer)
	if !ok {
		return [2]string{}, false
	}
	c, rm := r.LoomRoom()
	return [2]string{c, rm}, true
}
