package pipelines

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/v2"
	"go.yaml.in/yaml/v3"
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
	// AllowNoPipelines accepts a file without pipelines, for tools that only
	// take its connections (publish, consume).
	AllowNoPipelines bool
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
	if opts.Kinds == nil {
		opts.Kinds = NewRegistry()
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
	tree := parseYAML(b, &p)
	if p.err() != nil {
		return nil, p.err()
	}
	// A bad name is reported and its entry checked on under a placeholder (a
	// dotted name would be split by koanf), so every other problem shows too.
	renamed := checkNames(tree, &p, nil)
	overrides := envOverrides(environ, &p)
	var ip problems // interpolation's, kept apart from what its results cause
	tainted := interpolate(tree, lookup, overrides.covers, &ip)

	// Layers: the file, then LOOMBRIDGE_ overrides. Defaults come last in code,
	// for keys still unset, since a kind's defaults depend on its type.
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(tree, ""), nil); err != nil {
		p.addf("", "%v", err)
	}
	if err := k.Load(env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		EnvironFunc:   func() []string { return environ },
		TransformFunc: envKey,
	}), nil); err != nil {
		p.addf("", "environment overrides: %v", err)
	}
	merged := k.Raw()
	renamed = checkNames(merged, &p, renamed) // names an override added
	cfg := decodeConfig(merged, opts.Kinds, opts.AllowNoPipelines, &p)
	p.drop(tainted)
	p.list = append(p.list, ip.list...)
	overrides.annotate(&p)
	renamed.restore(&p)
	if err := p.err(); err != nil {
		return nil, err
	}
	cfg.hash = HashConfig(b)
	return cfg, nil
}

// HashConfig is Config.Hash of a configuration file's bytes.
func HashConfig(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// HashFile is HashConfig of the file at path, for a configuration that
// failed to load; "" when it cannot be read.
func HashFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return HashConfig(b)
}

// envKey turns LOOMBRIDGE_PIPELINES__ORDERS__FROM__ROOM into
// pipelines.orders.from.room; a name with an empty level is left out (and
// reported by envOverrides).
func envKey(k, v string) (string, any) {
	key, ok := envPath(k)
	if !ok {
		return "", nil
	}
	return key, v
}

func envPath(name string) (string, bool) {
	k := strings.TrimPrefix(name, EnvPrefix)
	key := strings.ToLower(strings.ReplaceAll(k, "__", "."))
	for _, part := range strings.Split(key, ".") {
		if part == "" {
			return "", false
		}
	}
	return key, true
}

// overrides are the key paths set by LOOMBRIDGE_ variables, and by which.
type overrides map[string]string

func envOverrides(environ []string, p *problems) overrides {
	o := overrides{}
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		key, ok := envPath(name)
		if !ok {
			p.addf("", "environment variable %s: empty key level; write %s<KEY>__<KEY>, such as %sLOG__LEVEL", name, EnvPrefix, EnvPrefix)
			continue
		}
		o[key] = name
	}
	return o
}

// covers reports whether an override replaces the value at path, itself or
// one of the mappings around it.
func (o overrides) covers(path string) bool {
	for {
		if _, ok := o[path]; ok {
			return true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return false
		}
		path = path[:i]
	}
}

// annotate says which variable set the value of each problem at an
// overridden key, since the file does not show it.
func (o overrides) annotate(p *problems) {
	for i, e := range p.list {
		if name, ok := o[e.Path]; ok {
			p.list[i] = &FieldError{Path: e.Path, Err: fmt.Errorf("%w (set by %s)", e.Err, name)}
		}
	}
}

// parseYAML parses the file into a tree of map[string]any, []any and
// scalars. A key given twice in one mapping is reported at its path, not as
// the parser's line-numbered text; keys that are not strings (1:, true:) are
// turned into strings.
func parseYAML(b []byte, p *problems) map[string]any {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		p.addf("", "%s", yamlMessage(err))
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return map[string]any{} // an empty file, or only comments
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return map[string]any{}
	}
	if root.Kind != yaml.MappingNode {
		p.addf("", "the file must be a mapping with the keys log, http, shutdown_timeout, connections and pipelines; got %s", nodeKind(root))
		return nil
	}
	duplicateKeys(root, "", p)
	if len(p.list) > 0 {
		return nil
	}
	var v any
	if err := root.Decode(&v); err != nil {
		p.addf("", "%s", yamlMessage(err))
		return nil
	}
	tree, _ := stringKeys(v).(map[string]any)
	if tree == nil {
		tree = map[string]any{}
	}
	return tree
}

func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	msg = fixParserLine(msg)
	return "invalid YAML: " + strings.Join(strings.Fields(msg), " ")
}

// yamlParserProblems are the syntax errors of yaml.v3's parser (not its
// scanner). For those it reports the 0-based line of the mark, one less than
// the file's line: "line 2" for an error on line 3.
var yamlParserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"did not find expected node content", "did not find expected key",
	"did not find expected '-' indicator", "did not find expected ',' or ']'",
	"did not find expected ',' or '}'", "found duplicate %YAML directive",
	"found incompatible YAML document", "found duplicate %TAG directive",
	"found undefined tag handle",
}

// fixParserLine turns a parser error's "line N: problem" into the file's line.
func fixParserLine(msg string) string {
	var line int
	var rest string
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n != 1 {
		return msg
	}
	_, rest, _ = strings.Cut(msg, ": ")
	if !slices.Contains(yamlParserProblems, rest) {
		return msg
	}
	return fmt.Sprintf("line %d: %s", line+1, rest)
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

// duplicateKeys reports each key given twice in one mapping, at its path.
// Aliases are not followed (their target is checked where it is defined).
func duplicateKeys(n *yaml.Node, path string, p *problems) {
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Kind != yaml.ScalarNode || key.Value == "<<" && key.Tag == "!!merge" {
				continue
			}
			if line, dup := seen[key.Value]; dup {
				p.addf(join(path, key.Value), "given twice (lines %d and %d): each name must be unique, keep one", line, key.Line)
				continue
			}
			seen[key.Value] = key.Line
			duplicateKeys(val, join(path, key.Value), p)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			duplicateKeys(e, fmt.Sprintf("%s[%d]", path, i), p)
		}
	}
}

// stringKeys turns mappings with keys that are not all strings into
// map[string]any, everywhere in v.
func stringKeys(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = stringKeys(e)
		}
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = stringKeys(e)
		}
	}
	return v
}

// topKeys and pipelineKeys name the generic keys of the file, for the
// unknown-key check of their own level; what is under them is checked where
// it is decoded, sources and sinks against their kind.
type topKeys struct {
	Log             any `koanf:"log"`
	HTTP            any `koanf:"http"`
	Tracing         any `koanf:"tracing"`
	ShutdownTimeout any `koanf:"shutdown_timeout"`
	Connections     any `koanf:"connections"`
	Buffers         any `koanf:"buffers"`
	Pipelines       any `koanf:"pipelines"`
}

type pipelineKeys struct {
	From        any `koanf:"from"`
	To          any `koanf:"to"`
	Filter      any `koanf:"filter"`
	Retry       any `koanf:"retry"`
	DeadLetter  any `koanf:"dead_letter"`
	Concurrency any `koanf:"concurrency"`
	Buffer      any `koanf:"buffer"`
}

// pipelineScalars are the pipeline's own values.
type pipelineScalars struct {
	Filter      string `koanf:"filter"`
	Concurrency int    `koanf:"concurrency"`
}

// setKeys lists the keys of v when it is a mapping.
func setKeys(v any) map[string]bool {
	m, _ := v.(map[string]any)
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// mapping returns v as a mapping; a value that is there but no mapping is
// reported at path with what it should hold.
func mapping(v any, path, want string, p *problems) (map[string]any, bool) {
	if v == nil {
		return nil, true
	}
	m, ok := v.(map[string]any)
	if !ok {
		p.addf(path, "must be a mapping %s, got %s", want, valueKind(v))
	}
	return m, ok
}

// valueKind names what a YAML value is, for messages.
func valueKind(v any) string {
	switch t := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		if t == "" {
			return "an empty string"
		}
		return fmt.Sprintf("the string %q", t)
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%v", v)
}

func decodeConfig(tree map[string]any, kinds *Registry, allowNone bool, p *problems) *Config {
	cfg := &Config{Connections: map[string]*Connection{}, Pipelines: map[string]*Pipeline{}, fingerprint: map[string]string{}}
	unknownKeys(tree, typeOf[topKeys](), "", p)
	if _, ok := mapping(tree["log"], "log", "(level, format, stats_interval)", p); ok {
		decode(tree["log"], &cfg.Log, "log", p)
	}
	if _, ok := mapping(tree["http"], "http", "(addr)", p); ok {
		decode(tree["http"], &cfg.HTTP, "http", p)
	}
	if _, ok := mapping(tree["tracing"], "tracing", "(exporter, protocol, endpoint, headers, insecure, sampling_ratio, service_name)", p); ok {
		decode(tree["tracing"], &cfg.Tracing, "tracing", p)
	}
	cfg.Tracing.SetDefaults()
	decode(map[string]any{"shutdown_timeout": tree["shutdown_timeout"]}, cfg, "", p)
	cfg.setDefaults(setKeys(tree), setKeys(tree["log"]))

	conns, _ := mapping(tree["connections"], "connections", "of connection names to their keys", p)
	for _, name := range sortedNames(conns) {
		path := "connections." + name
		c := &Connection{}
		if _, ok := conns[name].(map[string]any); !ok {
			p.addf(path, "must be a mapping of connection keys (addr, transport, token, tls, ... or embedded: true), got %s", valueKind(conns[name]))
			continue
		}
		before := len(p.list)
		cfg.Connections[name] = c
		if typ, _ := conns[name].(map[string]any)["type"].(string); typ != "" && typ != "loom" {
			decodeBrokerConnection(typ, conns[name].(map[string]any), c, path, kinds, p)
			c.invalid = len(p.list) > before
			continue
		}
		decode(conns[name], c, path, p)
		if len(p.list) > before {
			c.invalid = true
			continue
		}
		if c.Embedded {
			if c.Client.Addr != "" {
				if err := checkAddr(c.Client.Addr); err != nil {
					p.add(path+".addr", err)
				}
			}
			continue
		}
		check := c.Client
		check.SetDefaults()
		p.add(path, check.Check())
		c.invalid = len(p.list) > before
	}

	if _, ok := mapping(tree["buffers"], "buffers", "(dir, sync, connection)", p); ok {
		decode(tree["buffers"], &cfg.Buffers, "buffers", p)
	}
	cfg.Buffers.setDefaults()
	cfg.Buffers.validate(cfg.Connections, p)

	pls, _ := mapping(tree["pipelines"], "pipelines", "of pipeline names to pipelines", p)
	for _, name := range sortedNames(pls) {
		path := "pipelines." + name
		raw, ok := pls[name].(map[string]any)
		if !ok {
			p.addf(path, "must be a mapping with from: and to:, got %s", valueKind(pls[name]))
			continue
		}
		pl := decodePipeline(name, raw, cfg.Connections, kinds, p)
		cfg.Pipelines[name] = pl
		if pl.Buffer != nil {
			// Where its queue is kept is part of a buffered pipeline's config.
			raw = maps.Clone(raw)
			raw["buffers"] = tree["buffers"]
		}
		cfg.fingerprint[name] = fingerprint(raw, conns)
	}
	// pipelines that are not a mapping, or hold only broken pipelines, were
	// reported: "no pipeline defined" would only add noise.
	cfg.validate(p, allowNone || tree["pipelines"] != nil && (pls == nil || len(pls) > 0))
	return cfg
}

// decodeBrokerConnection decodes a connection whose type names a kind with a
// connection of its own.
func decodeBrokerConnection(typ string, raw map[string]any, c *Connection, path string, kinds *Registry, p *problems) {
	c.Type = typ
	k, ok := kinds.Lookup(typ)
	if !ok || k.Connection == nil {
		p.addf(path+".type", "unknown connection type %q (known: %s)", typ, strings.Join(append([]string{"loom"}, kinds.ConnectionNames()...), ", "))
		return
	}
	rest := make(map[string]any, len(raw))
	for key, v := range raw {
		if key != "type" {
			rest[key] = v
		}
	}
	c.Broker = k.Connection()
	if decode(rest, c.Broker, path, p, "type") {
		p.add(path, c.Broker.Check())
	}
}

func decodePipeline(name string, raw map[string]any, conns map[string]*Connection, kinds *Registry, p *problems) *Pipeline {
	path := "pipelines." + name
	unknownKeys(raw, typeOf[pipelineKeys](), path, p)
	pl := &Pipeline{To: map[string]*Endpoint{}}
	var own pipelineScalars
	decode(map[string]any{"filter": raw["filter"], "concurrency": raw["concurrency"]}, &own, path, p)
	if _, ok := mapping(raw["retry"], path+".retry", "of retry keys", p); ok {
		decode(raw["retry"], &pl.Retry, path+".retry", p)
	}
	pl.Filter, pl.Concurrency = own.Filter, own.Concurrency
	set := setKeys(raw)
	pl.setDefaults(set["concurrency"], setKeys(raw["retry"]))
	pl.Retry.validate(path+".retry", p)
	if pl.Concurrency < 1 {
		p.addf(path+".concurrency", "must be at least 1, got %d (leave it out for %d)", pl.Concurrency, DefaultConcurrency)
	}
	if pl.Filter != "" {
		f, err := compilePredicate(pl.Filter)
		if err != nil {
			p.addf(path+".filter", "%v", err)
		}
		pl.filter = f
	}

	deps := Deps{Pipeline: name, connections: conns}
	if raw["from"] == nil {
		p.addf(path+".from", "must be set to the source: {type: <kind>, ...} with a kind of %s", strings.Join(kinds.Names(true), ", "))
	} else {
		pl.From = decodeEndpoint(raw["from"], path+".from", false, deps, kinds, p)
	}
	to, ok := mapping(raw["to"], path+".to", "of sink names to sinks: to: {<name>: {type: <kind>, ...}}", p)
	if ok && len(to) == 0 {
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
	if _, given := raw["buffer"]; given { // buffer: alone is the defaults
		if _, ok := mapping(raw["buffer"], path+".buffer", "of buffer keys (max_bytes, max_messages, max_age, when_full, large_payload, ack_wait); {} for the defaults", p); ok {
			pl.Buffer = &BufferConfig{}
			decode(raw["buffer"], pl.Buffer, path+".buffer", p)
			pl.Buffer.setDefaults()
			pl.Buffer.validate(path+".buffer", p)
		}
	}
	if raw["dead_letter"] != nil {
		pl.DeadLetter = decodeEndpoint(raw["dead_letter"], path+".dead_letter", true, deps, kinds, p)
		if dl, ok := raw["dead_letter"].(map[string]any); ok && dl["when"] != nil {
			p.addf(path+".dead_letter.when", "not allowed on a dead_letter: every dead letter must be kept")
		}
	}
	return pl
}

// decodeEndpoint decodes {type: kind, when: expr, ...kind keys}.
func decodeEndpoint(v any, path string, sink bool, deps Deps, kinds *Registry, p *problems) *Endpoint {
	role, other := "source", "sink"
	if sink {
		role, other = "sink", "source"
	}
	names := strings.Join(kinds.Names(!sink), ", ")
	raw, ok := v.(map[string]any)
	if !ok {
		p.addf(path, "must be a mapping: {type: <kind>, ...} with a %s kind of %s, got %s", role, names, valueKind(v))
		return nil
	}
	typ, isString := raw["type"].(string)
	switch {
	case raw["type"] == nil || isString && typ == "":
		p.addf(path+".type", "must be set to a %s kind: %s", role, names)
		return nil
	case !isString:
		p.addf(path+".type", "must be one %s kind (%s), got %s", role, names, valueKind(raw["type"]))
		return nil
	}
	kind, ok := kinds.Lookup(typ)
	switch {
	case !ok:
		p.addf(path+".type", "unknown %s kind %q (known: %s)", role, typ, names)
		return nil
	case sink && kind.Sink == nil || !sink && kind.Source == nil:
		p.addf(path+".type", "%q is a %s kind only, not a %s kind (%s kinds: %s)", typ, other, role, role, names)
		return nil
	}
	rest := make(map[string]any, len(raw))
	for k, val := range raw {
		if k != "type" && !(sink && k == "when") {
			rest[k] = val
		}
	}
	also := []string{"type"}
	ep := &Endpoint{Type: typ}
	var target any
	if sink {
		also = append(also, "when")
		ep.Sink = kind.Sink()
		target = ep.Sink
		if w, ok := raw["when"]; ok {
			if s, ok := w.(string); ok {
				ep.When = s
				pred, err := compilePredicate(ep.When)
				if err != nil {
					p.addf(path+".when", "%v", err)
				}
				ep.when = pred
			} else {
				p.addf(path+".when", "must be an expression (a string), got %s", valueKind(w))
			}
		}
	} else {
		ep.Source = kind.Source()
		target = ep.Source
	}
	if !decode(rest, target, path, p, also...) {
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

// checkNames refuses names that koanf would split (dots) or that are not
// [a-z0-9_-]+, for connections, pipelines and sinks: names become parts of key
// paths, environment variable names and metric labels. Each refused name's
// entry is moved to a placeholder name in tree, so that what it holds is still
// checked (and references to a refused connection name follow it); restore
// puts the names back into the problems' paths. renamed is appended to.
func checkNames(tree map[string]any, p *problems, renamed renames) renames {
	check := func(path, what string, m any) {
		mm, ok := m.(map[string]any)
		if !ok {
			return
		}
		for _, name := range sortedNames(mm) {
			switch {
			case name == "":
				p.addf(path, "a %s name is empty: use a-z, 0-9, _ and -", what)
			case strings.Contains(name, "."):
				p.addf(join(path, name), "%s name %q contains \".\", which separates keys (as in LOOMBRIDGE_ overrides); use - or _ instead", what, name)
			case !validName.MatchString(name):
				p.addf(join(path, name), "%s name may hold only a-z, 0-9, _ and -; got %q", what, name)
			default:
				continue
			}
			ph := placeholderName(mm, len(renamed)+1)
			mm[ph] = mm[name]
			delete(mm, name)
			renamed = append(renamed, rename{ph: ph, from: join(path, ph), to: join(path, name), name: name})
		}
	}
	check("connections", "connection", tree["connections"])
	for _, r := range renamed {
		if strings.HasPrefix(r.from, "connections.") {
			renameConnection(tree["pipelines"], r.name, r.ph)
		}
	}
	check("pipelines", "pipeline", tree["pipelines"])
	if pls, ok := tree["pipelines"].(map[string]any); ok {
		for _, name := range sortedNames(pls) {
			if m, ok := pls[name].(map[string]any); ok {
				check("pipelines."+name+".to", "sink", m["to"])
			}
		}
	}
	return renamed
}

// rename is a refused name's entry moved to placeholder ph: key path from
// stands for key path to.
type rename struct{ ph, from, to, name string }

type renames []rename

// renameConnection points each connection: name under v at ph.
func renameConnection(v any, name, ph string) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if s, ok := e.(string); ok && k == "connection" && s == name {
				t[k] = ph
			} else {
				renameConnection(e, name, ph)
			}
		}
	case []any:
		for _, e := range t {
			renameConnection(e, name, ph)
		}
	}
}

// placeholderName returns a valid name that m does not have, numbered from i
// on so that no two placeholders of a file are alike.
func placeholderName(m map[string]any, i int) string {
	for ; ; i++ {
		ph := fmt.Sprintf("refused-name-%d", i)
		if _, taken := m[ph]; !taken {
			return ph
		}
	}
}

// restore writes the refused names back into the problems' paths and texts
// (a default topic or group may be made of the name). The latest rename goes
// first: a sink's path holds its pipeline's placeholder.
func (rs renames) restore(p *problems) {
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		for j, e := range p.list {
			path := e.Path
			if path == r.from || strings.HasPrefix(path, r.from+".") || strings.HasPrefix(path, r.from+"[") {
				path = r.to + path[len(r.from):]
			}
			err := e.Err
			if msg := err.Error(); strings.Contains(msg, r.ph) {
				err = errors.New(strings.ReplaceAll(msg, r.ph, r.name))
			}
			if p.typed[e.Path] && path != e.Path {
				delete(p.typed, e.Path)
				p.typed[path] = true
			}
			p.list[j] = &FieldError{Path: path, Err: err}
		}
	}
}
