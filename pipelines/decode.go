package pipelines

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// decode fills target (a pointer to a struct with koanf tags) from raw, a map
// as parsed from YAML. Every key that target does not have, at any depth, and
// every value of the wrong type is recorded at its key path under path.
//
// koanf's own Unmarshal is not used: asking mapstructure for ErrorUnused means
// passing a DecoderConfig, which drops koanf's hooks, and its errors name Go
// fields. Here the hooks are set again (durations, weak typing) and errors are
// re-keyed to YAML paths. also names keys the caller handles itself (type,
// when), listed among the valid keys when one is unknown. ok is false when a
// value could not be decoded (unknown keys alone leave it true).
func decode(raw any, target any, path string, p *problems, also ...string) (ok bool) {
	if raw == nil {
		return true
	}
	var refused []string
	if r, ok := target.(RefusedKeys); ok {
		refused = r.RefusedKeys()
	}
	unknownKeysAlso(raw, reflect.TypeOf(target), path, p, also, refused)
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "koanf",
		WeaklyTypedInput: true,
		Result:           target,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			strictScalarsHook,
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

var durationType = reflect.TypeOf(time.Duration(0))

// strictScalarsHook refuses what weak typing would turn into a surprise: a
// bare number as a duration (30 would be 30ns), a fraction as a whole number
// (1.5 would be 1), true as a string ("1"), and a mapping or list where a
// single value belongs.
func strictScalarsHook(from, to reflect.Type, data any) (any, error) {
	for to.Kind() == reflect.Pointer {
		to = to.Elem()
	}
	switch {
	case to == durationType:
		switch v := data.(type) {
		case int, int64, uint64, float64:
			if fmt.Sprint(v) != "0" {
				return nil, fmt.Errorf("must be a duration with a unit, such as %[1]vs or %[1]vms, got %[1]v", v)
			}
			return time.Duration(0), nil
		case bool:
			return nil, fmt.Errorf("must be a duration such as 500ms, 30s or 5m, got %v", v)
		case string:
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("must be a duration such as 500ms, 30s or 5m, got %q", v)
			}
			return d, nil
		}
	case to.Kind() >= reflect.Int && to.Kind() <= reflect.Uint64:
		if f, ok := data.(float64); ok && f != math.Trunc(f) {
			return nil, fmt.Errorf("must be a whole number, got %v", f)
		}
	case to.Kind() == reflect.String:
		if b, ok := data.(bool); ok {
			return strconv.FormatBool(b), nil
		}
	}
	switch data.(type) {
	case map[string]any, []any:
		if k := to.Kind(); k != reflect.Struct && k != reflect.Map && k != reflect.Slice && k != reflect.Array && k != reflect.Interface {
			return nil, fmt.Errorf("must be %s, got %s", typeName(to), valueName(data))
		}
	}
	return data, nil
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
		p.addType(join(path, de.Name()), describe(de.Unwrap()))
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
		if errors.Is(pe.Err, strconv.ErrRange) {
			return fmt.Errorf("must be %s in range, got %q", typeName(pe.Expected.Type()), fmt.Sprint(pe.Value))
		}
		return fmt.Errorf("must be %s, got %q", typeName(pe.Expected.Type()), fmt.Sprint(pe.Value))
	case errors.As(err, &ue):
		return fmt.Errorf("must be %s, got %s", typeName(ue.Expected.Type()), valueName(ue.Value))
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
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return valueKind(v)
}

// unknownKeys records every key of raw that type t does not have, recursing
// into nested structs, maps and lists.
func unknownKeys(raw any, t reflect.Type, path string, p *problems) {
	unknownKeysAlso(raw, t, path, p, nil, nil)
}

// unknownKeysAlso is unknownKeys with also listed as valid keys besides t's,
// and refused (keys of t that Check refuses) not listed.
func unknownKeysAlso(raw any, t reflect.Type, path string, p *problems, also, refused []string) {
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
		valid := sortedKeys(fields)
		if len(refused) > 0 {
			valid = slices.DeleteFunc(valid, func(k string) bool { return slices.Contains(refused, k) })
		}
		if len(also) > 0 {
			valid = append(append([]string{}, also...), valid...)
			sort.Strings(valid)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				p.addf(join(path, k), "unknown key (valid keys here: %s)", strings.Join(valid, ", "))
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

// StructKeys lists the koanf keys of the struct v (squashed embeds
// flattened), sorted; for a RefusedKeys implementation.
func StructKeys(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return sortedKeys(structKeys(t))
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
