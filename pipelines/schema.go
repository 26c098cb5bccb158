package pipelines

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
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
func Schema(kinds *Registry) ([]byte, error) {
	s, err := schemaTree(kinds)
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

func schemaTree(kinds *Registry) (jsonObj, error) {
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
			props, err := structProps(reflect.TypeOf(cfg))
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
	loom, err := structProps(typeOf[Connection]())
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
		props, err := structProps(reflect.TypeOf(k.Connection()))
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
			b, err := schemaOf(typeOf[BufferConfig]())
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
			s, err := schemaOf(t)
			if err != nil {
				return nil, fmt.Errorf("pipeline key %s: %w", key, err)
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
			s, err := schemaOf(t)
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
func structProps(t reflect.Type) (jsonObj, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	props := jsonObj{}
	for key, ft := range structKeys(t) {
		s, err := schemaOf(ft)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		props[key] = s
	}
	return props, nil
}

// schemaOf is the schema of a value decoded into t: what mapstructure with
// weak typing and strictScalarsHook accepts, strings included (see Schema).
func schemaOf(t reflect.Type) (jsonObj, error) {
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
		items, err := schemaOf(t.Elem())
		if err != nil {
			return nil, err
		}
		return jsonObj{"type": "array", "items": items}, nil
	case reflect.Map:
		vals, err := schemaOf(t.Elem())
		if err != nil {
			return nil, err
		}
		return jsonObj{"type": "object", "additionalProperties": vals}, nil
	case reflect.Interface:
		return jsonObj{}, nil
	case reflect.Struct:
		props, err := structProps(t)
		if err != nil {
			return nil, err
		}
		return jsonObj{"type": "object", "properties": props, "additionalProperties": false}, nil
	}
	return nil, fmt.Errorf("no schema for Go type %s", t)
}
