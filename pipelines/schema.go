package pipelines

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// SchemaID is where the generated schema is published in the repository
// (docs/config.schema.json), for editors' $schema lines.
const SchemaID = "https://raw.githubusercontent.com/loombridge/loombridge/main/docs/config.schema.json"

// Schema returns a JSON Schema (draft 2020-12) of the configuration file,
// written from the same definitions Load checks against: the key structs
// of this package (topKeys, pipelineKeys, Config, Pipeline, ...) and every
// kind's source, sink and connection struct in kinds. A mapping the loader
// refuses unknown keys in has additionalProperties false.
//
// It describes the file as written, before ${VAR} interpolation: since the
// loader decodes weakly typed (after interpolation "8080" is a number and
// "true" a bool), a string is accepted wherever a number or bool is; a
// duration is a string ("10s") or the number 0, as strictScalarsHook has it.
//
// doc, when not nil, describes a struct field: its text is the property's
// description (kindkeys.Doc has the kinds' doc comments).
func Schema(kinds *Registry, doc func(reflect.Type, reflect.StructField) string) ([]byte, error) {
	g := schemaGen{doc: doc}
	s, err := g.tree(kinds)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return append(b, '\n'), nil
}

type jsonObj = map[string]any

// schemaGen writes the schema; doc may be nil.
type schemaGen struct {
	doc func(reflect.Type, reflect.StructField) string
}

func (g schemaGen) tree(kinds *Registry) (jsonObj, error) {
	defs := jsonObj{}
	names := func(list []string) []any {
		out := make([]any, len(list))
		for i, n := range list {
			out[i] = n
		}
		return out
	}

	// Sources, sinks and dead letters: {type: <kind>, ...that kind's keys}.
	endpoint := func(def string, sink, deadLetter bool) error {
		var rules []any
		list := kinds.Names(!sink)
		for _, name := range list {
			k, _ := kinds.Lookup(name)
			var cfg any
			if sink {
				cfg = k.Sink()
			} else {
				cfg = k.Source()
			}
			props, err := g.structProps(reflect.TypeOf(cfg))
			if err != nil {
				return fmt.Errorf("kind %s: %w", name, err)
			}
			if r, ok := cfg.(RefusedKeys); ok { // decoded only to be refused with a hint
				for _, key := range r.RefusedKeys() {
					delete(props, key)
				}
			}
			props["type"] = jsonObj{"const": name}
			if sink && !deadLetter {
				props["when"] = jsonObj{"type": "string", "description": "an expression selecting the messages this sink gets"}
			}
			rules = append(rules, jsonObj{
				"if":   jsonObj{"properties": jsonObj{"type": jsonObj{"const": name}}, "required": []any{"type"}},
				"then": jsonObj{"description": k.Summary, "properties": props, "additionalProperties": false},
			})
		}
		defs[def] = jsonObj{
			"type":       "object",
			"required":   []any{"type"},
			"properties": jsonObj{"type": jsonObj{"enum": names(list)}},
			"allOf":      rules,
		}
		return nil
	}
	if err := endpoint("source", false, false); err != nil {
		return nil, err
	}
	if err := endpoint("sink", true, false); err != nil {
		return nil, err
	}
	if err := endpoint("dead_letter", true, true); err != nil {
		return nil, err
	}

	// Connections: Loom's keys when type is absent or loom, else the kind's.
	loom, err := g.structProps(typeOf[Connection]())
	if err != nil {
		return nil, fmt.Errorf("connections: %w", err)
	}
	loom["type"] = jsonObj{"const": "loom"}
	connRules := []any{jsonObj{
		"if":   jsonObj{"properties": jsonObj{"type": jsonObj{"const": "loom"}}},
		"then": jsonObj{"description": "a Loom server, or embedded: true for a router run inside loombridge", "properties": loom, "additionalProperties": false},
	}}
	connTypes := []string{"loom"}
	for _, name := range kinds.ConnectionNames() {
		k, _ := kinds.Lookup(name)
		props, err := g.structProps(reflect.TypeOf(k.Connection()))
		if err != nil {
			return nil, fmt.Errorf("connection kind %s: %w", name, err)
		}
		props["type"] = jsonObj{"const": name}
		connTypes = append(connTypes, name)
		connRules = append(connRules, jsonObj{
			"if":   jsonObj{"properties": jsonObj{"type": jsonObj{"const": name}}, "required": []any{"type"}},
			"then": jsonObj{"description": k.Summary, "properties": props, "additionalProperties": false},
		})
	}
	defs["connection"] = jsonObj{
		"type":       "object",
		"properties": jsonObj{"type": jsonObj{"enum": names(connTypes)}},
		"allOf":      connRules,
	}

	// A pipeline: the keys pipelineKeys names, typed as decodePipeline reads them.
	pipelineProps := jsonObj{}
	scalars, ownTypes := structKeys(typeOf[pipelineScalars]()), structKeys(typeOf[Pipeline]())
	for _, key := range sortedKeys(structKeys(typeOf[pipelineKeys]())) {
		switch key {
		case "from":
			pipelineProps[key] = jsonObj{"$ref": "#/$defs/source"}
		case "to":
			pipelineProps[key] = jsonObj{"type": "object", "minProperties": 1, "propertyNames": jsonObj{"pattern": validName.String()}, "additionalProperties": jsonObj{"$ref": "#/$defs/sink"}}
		case "dead_letter":
			pipelineProps[key] = jsonObj{"$ref": "#/$defs/dead_letter"}
		case "buffer":
			// buffer: with nothing under it is a buffer with the defaults.
			b, err := g.schemaOf(typeOf[BufferConfig]())
			if err != nil {
				return nil, err
			}
			pipelineProps[key] = jsonObj{"anyOf": []any{jsonObj{"type": "null"}, b}}
		default:
			t, ok := scalars[key]
			if !ok {
				t, ok = ownTypes[key]
			}
			if !ok {
				return nil, fmt.Errorf("pipeline key %s: no type for it in pipelineScalars or Pipeline", key)
			}
			s, err := g.schemaOf(t)
			if err != nil {
				return nil, fmt.Errorf("pipeline key %s: %w", key, err)
			}
			if t.Kind() == reflect.Struct { // retry: alone is the defaults
				s = jsonObj{"anyOf": []any{jsonObj{"type": "null"}, s}}
			}
			pipelineProps[key] = s
		}
	}
	defs["pipeline"] = jsonObj{"type": "object", "required": []any{"from", "to"}, "properties": pipelineProps, "additionalProperties": false}

	// The top level: the keys topKeys names, typed as Config holds them.
	top := jsonObj{}
	cfgTypes := structKeys(typeOf[Config]())
	for _, key := range sortedKeys(structKeys(typeOf[topKeys]())) {
		switch key {
		case "connections":
			top[key] = jsonObj{"type": "object", "propertyNames": jsonObj{"pattern": validName.String()}, "additionalProperties": jsonObj{"$ref": "#/$defs/connection"}}
		case "pipelines":
			top[key] = jsonObj{"type": "object", "propertyNames": jsonObj{"pattern": validName.String()}, "additionalProperties": jsonObj{"$ref": "#/$defs/pipeline"}}
		default:
			t, ok := cfgTypes[key]
			if !ok {
				return nil, fmt.Errorf("top-level key %s: no field of Config", key)
			}
			s, err := g.schemaOf(t)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			if t.Kind() == reflect.Struct {
				// log: and the like with nothing under them are the defaults.
				s = jsonObj{"anyOf": []any{jsonObj{"type": "null"}, s}}
			}
			top[key] = s
		}
	}
	return jsonObj{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  SchemaID,
		"title":                "loombridge configuration",
		"description":          "Generated by `loombridge kinds --schema` from the definitions the loader checks against; the file as written, before ${VAR} interpolation, so a string is accepted wherever a number or bool is.",
		"type":                 "object",
		"properties":           top,
		"additionalProperties": false,
		"$defs":                defs,
	}, nil
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()

// structProps is the schema of each koanf key of a struct type, as
// structKeys (the unknown-key check) lists them.
func (g schemaGen) structProps(t reflect.Type) (jsonObj, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	props := jsonObj{}
	for key, ft := range structKeys(t) {
		s, err := g.schemaOf(ft)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		props[key] = s
	}
	if g.doc != nil {
		g.describeFields(t, props)
	}
	return props, nil
}

// describeFields sets the description of each property of props that is a
// field of t (or of a struct squashed into it) the doc func knows.
func (g schemaGen) describeFields(t reflect.Type, props jsonObj) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "squash") || (f.Anonymous && f.Tag.Get("koanf") == "") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.describeFields(ft, props)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		s, ok := props[name].(jsonObj)
		if d := g.doc(t, f); ok && d != "" {
			if hint, ok := s["description"].(string); ok { // a duration's form
				d += " (" + hint + ")"
			}
			s["description"] = d
		}
	}
}

// schemaOf is the schema of a value decoded into t: what mapstructure with
// weak typing and strictScalarsHook accepts, strings included (see Schema).
func (g schemaGen) schemaOf(t reflect.Type) (jsonObj, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return jsonObj{"anyOf": []any{jsonObj{"type": "string"}, jsonObj{"const": 0}}, "description": "a duration with a unit: 500ms, 30s, 5m"}, nil
	}
	if t.Kind() != reflect.String && reflect.PointerTo(t).Implements(textUnmarshaler) {
		return jsonObj{"type": "string"}, nil
	}
	switch t.Kind() {
	case reflect.String:
		return jsonObj{"type": []any{"string", "number", "boolean"}}, nil
	case reflect.Bool:
		return jsonObj{"type": []any{"boolean", "string"}}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return jsonObj{"type": []any{"integer", "string"}}, nil
	case reflect.Float32, reflect.Float64:
		return jsonObj{"type": []any{"number", "string"}}, nil
	case reflect.Slice, reflect.Array:
		items, err := g.schemaOf(t.Elem())
		if err != nil {
			return nil, err
		}
		return jsonObj{"type": "array", "items": items}, nil
	case reflect.Map:
		vals, err := g.schemaOf(t.Elem())
		if err != nil {
			return nil, err
		}
		return jsonObj{"type": "object", "additionalProperties": vals}, nil
	case reflect.Interface:
		return jsonObj{}, nil
	case reflect.Struct:
		props, err := g.structProps(t)
		if err != nil {
			return nil, err
		}
		return jsonObj{"type": "object", "properties": props, "additionalProperties": false}, nil
	}
	return nil, fmt.Errorf("no schema for Go type %s", t)
}
