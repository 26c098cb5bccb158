package pipelines

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
)

// decode fills target (a pointer to a struct with koanf tags) from raw, a map
// as parsed from YAML. Every key that target does not have, at any depth, and
// every value of the wrong type is recorded at its key path under path.
//
// koanf's own Unmarshal is not used: asking mapstructure for ErrorUnused means
// passing a DecoderConfig, which drops koanf's hooks, and its errors name Go
// fields. Here the hooks are set again (durations, weak typing) and errors are
// re-keyed to YAML paths.
func decode(raw any, target any, path string, p *problems) (ok bool) {
	if raw == nil {
		return true
	}
	unknownKeys(raw, reflect.TypeOf(target), path, p)
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "koanf",
		WeaklyTypedInput: true,
		Result:           target,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.TextUnmarshallerHookFunc(),
		),
	})
	if err != nil {
		p.add(path, err)
		return false
	}
	if err := dec.Decode(raw); err != nil {
		addDecodeErrors(path, err, p)
		return false
	}
	return true
}

func addDecodeErrors(path string, err error, p *problems) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			addDecodeErrors(path, e, p)
		}
		return
	}
	var de *mapstructure.DecodeError
	if errors.As(err, &de) {
		p.list = append(p.list, &FieldError{Path: join(path, de.Name()), Err: describe(de.Unwrap())})
		return
	}
	p.add(path, err)
}

// describe turns mapstructure's wording into a user's.
func describe(err error) error {
	var pe *mapstructure.ParseError
	var ue *mapstructure.UnconvertibleTypeError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("cannot read %q as %s: %v", fmt.Sprint(pe.Value), typeName(pe.Expected.Type()), errors.Unwrap(pe.Err))
	case errors.As(err, &ue):
		return fmt.Errorf("must be %s, got %s", typeName(ue.Expected.Type()), valueName(ue.Value))
	}
	msg := err.Error()
	if i := strings.Index(msg, "time: "); i >= 0 {
		return errors.New("invalid duration: " + strings.TrimPrefix(msg[i:], "time: invalid duration ") + " (examples: 500ms, 30s, 5m)")
	}
	return err
}

func typeName(t reflect.Type) string {
	switch {
	case t.String() == "time.Duration":
		return "a duration"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func valueName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%v", v)
}

// unknownKeys records every key of raw that type t does not have, recursing
// into nested structs, maps and lists.
func unknownKeys(raw any, t reflect.Type, path string, p *problems) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			return // a type error, reported by the decoder
		}
		fields := structKeys(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				p.addf(join(path, k), "unknown key (valid keys here: %s)", strings.Join(sortedKeys(fields), ", "))
				continue
			}
			unknownKeys(m[k], ft, join(path, k), p)
		}
	case reflect.Map:
		if m, ok := raw.(map[string]any); ok {
			for k, v := range m {
				unknownKeys(v, t.Elem(), join(path, k), p)
			}
		}
	case reflect.Slice:
		if l, ok := raw.([]any); ok {
			for i, v := range l {
				unknownKeys(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), p)
			}
		}
	}
}

// structKeys maps the koanf keys of t (squashed embeds flattened) to their types.
func structKeys(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("koanf")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case name == "-":
			continue
		case strings.Contains(opts, "squash") || (f.Anonymous && tag == ""):
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structKeys(ft) {
					out[k] = v
				}
			}
			continue
		case !f.IsExported():
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys(m map[string]reflect.Type) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
