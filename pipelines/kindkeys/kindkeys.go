// Package kindkeys lists the keys of every kind from its definition: the
// source, sink and connection structs of pipelines/kinds, with the defaults
// their Check applies to a minimal endpoint. `loombridge kinds` prints it and
// the key tables of docs/kinds/*.md are generated from it, so both say what
// the loader does.
package kindkeys

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

const modulePath = "github.com/loombridge/loombridge"

// base holds a connection of every type, named after it, for the minimal
// endpoints below.
const base = `
connections:
  loom: {addr: "127.0.0.1:4433"}
  nats: {type: nats, url: "nats://127.0.0.1:4222"}
  amqp: {type: amqp, amqp_uri: "amqp://127.0.0.1:5672/"}
  kafka: {type: kafka, brokers: ["127.0.0.1:9092"]}
  redis: {type: redis, addr: "127.0.0.1:6379"}
  sql: {type: sql, driver: postgres, dsn: "postgres://127.0.0.1:5432/app"}
`

// minimal are the least a source or sink of each kind needs: checked as a
// command line's --source and --sink are, their defaults are what is listed,
// and the keys they set are required. A new kind needs a line here.
var minimal = map[string][2]string{ // kind -> source, sink
	"loom":     {`{type: loom, connection: loom, room: r}`, `{type: loom, connection: loom, room: r}`},
	"file":     {`{type: file, dir: ./d, topic: t}`, `{type: file, dir: ./d}`},
	"webhook":  {"", `{type: webhook, endpoints: [{name: e, url: "https://example.com/hook"}]}`},
	"generate": {`{type: generate}`, ""},
	"stdout":   {"", `{type: stdout}`},
	"echo":     {`{type: echo, addr: "127.0.0.1:8099"}`, ""},
	"http":     {`{type: http, addr: "127.0.0.1:8080"}`, ""},
	"nats":     {`{type: nats, connection: nats, subject: s}`, `{type: nats, connection: nats, subject: s}`},
	"amqp":     {`{type: amqp, connection: amqp, queue: q}`, `{type: amqp, connection: amqp, queue: q}`},
	"kafka":    {`{type: kafka, connection: kafka, topic: t}`, `{type: kafka, connection: kafka, topic: t}`},
	"redis":    {`{type: redis, connection: redis, stream: s}`, `{type: redis, connection: redis, stream: s}`},
	"sql":      {`{type: sql, connection: sql, table: t}`, `{type: sql, connection: sql, table: t}`},
}

// Key is one key of a source, sink or connection.
type Key struct {
	Key  string `json:"key"`           // its path under the endpoint: "retry.max", "endpoints[].url"
	Type string `json:"type"`          // duration, string, integer, list of string, ...
	Doc  string `json:"doc,omitempty"` // what it is, when the DocFunc knows
	// Default is the value Check leaves in a minimal endpoint, "" for none;
	// <pipeline> and <host name> stand for what comes from them.
	Default string `json:"default,omitempty"`
	// Required: the minimal endpoint sets it.
	Required bool `json:"required,omitempty"`
	// DefaultFrom names the required key whose value is the default.
	DefaultFrom string `json:"default_from,omitempty"`
}

// Section is the keys of one struct: a kind's source, sink or connection.
type Section struct {
	GoType string `json:"go_type"`
	Keys   []Key  `json:"keys"`
}

// Kind is one kind's keys.
type Kind struct {
	Name       string   `json:"name"`
	Summary    string   `json:"summary"`
	Source     *Section `json:"source,omitempty"`
	Sink       *Section `json:"sink,omitempty"`
	Connection *Section `json:"connection,omitempty"`
}

// DocFunc describes field f of struct type typ; nil describes nothing. The
// doc comments of fields are only at hand where the source is (tests).
type DocFunc func(typ reflect.Type, f reflect.StructField) string

// DocKey names field f of struct type typ in fieldDocs.
func DocKey(typ reflect.Type, f reflect.StructField) string {
	return typ.PkgPath() + "." + typ.Name() + "." + f.Name
}

// Doc describes a field from the doc comments copied into fieldDocs (the
// DocFunc Describe uses by default).
func Doc(typ reflect.Type, f reflect.StructField) string { return fieldDocs[DocKey(typ, f)] }

// Describe lists every kind of reg, by name; doc nil is Doc.
func Describe(reg *pipelines.Registry, doc DocFunc) ([]Kind, error) {
	if doc == nil {
		doc = Doc
	}
	names := map[string]bool{}
	var order []string
	for _, n := range append(append(reg.Names(true), reg.Names(false)...), reg.ConnectionNames()...) {
		if !names[n] {
			names[n] = true
			order = append(order, n)
		}
	}
	cfg, err := pipelines.Parse([]byte(base), pipelines.LoadOptions{Kinds: reg, AllowNoPipelines: true, Environ: func() []string { return nil }})
	if err != nil {
		return nil, fmt.Errorf("kindkeys: the connections of every type: %w", err)
	}
	var baseTree struct {
		Connections map[string]map[string]any `yaml:"connections"`
	}
	if err := yaml.Unmarshal([]byte(base), &baseTree); err != nil {
		return nil, fmt.Errorf("kindkeys: %w", err)
	}
	sort.Strings(order)
	var out []Kind
	for _, name := range order {
		k, _ := reg.Lookup(name)
		kk := Kind{Name: name, Summary: k.Summary}
		if name == "loom" {
			cl := cfg.Connections["loom"].Client
			cl.SetDefaults()
			v := reflect.ValueOf(&cl).Elem()
			kk.Connection = section(v.Type(), v, map[string]any{"addr": nil}, false, doc)
			// A Loom connection's own key besides the client's (addr is then optional).
			ct := reflect.TypeOf(pipelines.Connection{})
			if f, ok := ct.FieldByName("Embedded"); ok {
				kk.Connection.Keys = append(kk.Connection.Keys, Key{Key: "embedded", Type: TypeName(f.Type), Doc: doc(ct, f)})
			}
		}
		if k.Connection != nil {
			c, ok := cfg.Connections[name]
			if !ok {
				return nil, fmt.Errorf("kindkeys: kind %s has a connection type but no connection in the base config", name)
			}
			v := reflect.ValueOf(c.Broker).Elem()
			kk.Connection = section(v.Type(), v, baseTree.Connections[name], false, doc)
		}
		for i, sink := range []bool{false, true} {
			if !sink && k.Source == nil || sink && k.Sink == nil {
				continue
			}
			m := minimal[name][i]
			if m == "" {
				return nil, fmt.Errorf("kindkeys: kind %s has no minimal endpoint: add one to minimal", name)
			}
			s, err := endpoint(m, sink, cfg, reg, doc)
			if err != nil {
				return nil, fmt.Errorf("kindkeys: kind %s: %s: %w", name, m, err)
			}
			if sink {
				kk.Sink = s
			} else {
				kk.Source = s
			}
		}
		out = append(out, kk)
	}
	return out, nil
}

func endpoint(minimal string, sink bool, cfg *pipelines.Config, reg *pipelines.Registry, doc DocFunc) (*Section, error) {
	var ep any
	var err error
	if sink {
		ep, _, err = pipelines.ParseSink([]byte(minimal), cfg, reg)
	} else {
		ep, _, err = pipelines.ParseSource([]byte(minimal), cfg, reg)
	}
	if err != nil {
		return nil, err
	}
	var set map[string]any
	if err := yaml.Unmarshal([]byte(minimal), &set); err != nil {
		return nil, err
	}
	v := reflect.ValueOf(ep).Elem()
	// The adapter's own defaults, applied when the adapter is built rather
	// than by the kind's check: an embedded adapter config's SetDefaults.
	for i := range v.NumField() {
		if f := v.Field(i); f.CanAddr() && v.Type().Field(i).IsExported() {
			if d, ok := f.Addr().Interface().(interface{ SetDefaults() }); ok {
				d.SetDefaults()
			}
		}
	}
	s := section(v.Type(), v, set, true, doc)
	if r, ok := ep.(pipelines.RefusedKeys); ok {
		// Decoded only for Check to refuse with a hint: not keys to offer.
		s.Keys = slices.DeleteFunc(s.Keys, func(k Key) bool { return slices.Contains(r.RefusedKeys(), k.Key) })
	}
	return s, nil
}

// section lists the keys of typ with the defaults checked holds; the keys of
// set are required.
func section(typ reflect.Type, checked reflect.Value, set map[string]any, skipClient bool, doc DocFunc) *Section {
	keys := Keys(typ, checked, "", skipClient, doc)
	for i := range keys {
		k := &keys[i]
		if _, ok := set[k.Key]; ok && k.Key != "type" {
			k.Required, k.Default = true, ""
			continue
		}
		for key, val := range set { // derived from a required key: say which
			if sv, ok := val.(string); ok && key != "type" && key != k.Key && k.Default != "" && k.Default == sv {
				k.DefaultFrom = key
			}
		}
	}
	return &Section{GoType: typ.String(), Keys: keys}
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	secretType   = reflect.TypeOf(client.Secret(""))
	clientType   = reflect.TypeOf(client.Config{})
)

// Keys lists the koanf keys of a struct type, with the value each has in
// checked (a checked endpoint of that type, or the zero Value for none) as
// its default. skipClient leaves out an embedded Loom client config: those
// keys belong under connections and are refused at a source or sink.
func Keys(typ reflect.Type, checked reflect.Value, prefix string, skipClient bool, doc DocFunc) []Key {
	var out []Key
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		squash := strings.Contains(f.Tag.Get("koanf"), ",squash")
		if !f.IsExported() || tag == "-" || (tag == "" && !squash) {
			continue
		}
		var fv reflect.Value
		if checked.IsValid() {
			fv = checked.Field(i)
		}
		ft := f.Type
		if skipClient && ft == clientType {
			continue
		}
		if squash {
			out = append(out, Keys(ft, fv, prefix, skipClient, doc)...)
			continue
		}
		key := prefix + tag
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			if fv.IsValid() {
				if fv.IsNil() {
					fv = reflect.Value{}
				} else {
					fv = fv.Elem()
				}
			}
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && strings.HasPrefix(ft.Elem().PkgPath(), modulePath) {
			// A list of mappings (a webhook's endpoints): each item's keys, as
			// key[].item_key, with the row of the list itself first.
			out = append(out, Key{Key: key, Type: "list of mappings", Doc: doc(typ, f)})
			out = append(out, Keys(ft.Elem(), reflect.Value{}, key+"[].", skipClient, doc)...)
			continue
		}
		if ft.Kind() == reflect.Struct && ft != durationType && ft.PkgPath() != "" && ft.NumField() > 0 && !strings.HasPrefix(ft.PkgPath(), "crypto/") {
			if sub := Keys(ft, fv, key+".", skipClient, doc); len(sub) > 0 {
				out = append(out, sub...)
				continue
			}
		}
		out = append(out, Key{Key: key, Type: TypeName(ft), Default: DefaultOf(fv), Doc: doc(typ, f)})
	}
	return out
}

// DefaultOf shows a checked value as a default: "" for a zero value,
// <pipeline> and <host name> for what comes from the pipeline and host.
func DefaultOf(v reflect.Value) string {
	if !v.IsValid() || v.IsZero() {
		return ""
	}
	var s string
	switch {
	case v.Type() == durationType:
		s = time.Duration(v.Int()).String()
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Map:
		if v.Len() == 0 {
			return ""
		}
		s = fmt.Sprint(v.Interface())
	default:
		s = fmt.Sprint(v.Interface())
	}
	if s == pipelines.AdhocPipeline || strings.Contains(s, "_"+pipelines.AdhocPipeline) {
		s = strings.ReplaceAll(s, pipelines.AdhocPipeline, "<pipeline>")
	}
	if h, err := os.Hostname(); err == nil && h != "" && s == h {
		s = "<host name>"
	}
	return s
}

// TypeName names a key's Go type as a user reads it.
func TypeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == secretType:
		return "string (secret)"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list of " + TypeName(t.Elem())
	case reflect.Map:
		return "map of " + TypeName(t.Elem())
	case reflect.Struct:
		return "mapping"
	}
	return t.Kind().String()
}
