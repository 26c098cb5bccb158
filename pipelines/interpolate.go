package pipelines

import (
	"fmt"
	"sort"
	"strings"
)

// interpolate expands ${VAR} and ${VAR:-default} in every string value of the
// parsed YAML tree, in place; "$${" stands for a literal "${". It runs after
// parsing, so a value can never change the YAML's structure and a "$5" in a
// value is left alone. Every variable that is unset (and has no default) is
// reported, with the keys that use it, in one error. Values at paths that
// skip reports (keys an environment override replaces) are left as they are.
// It returns the paths of the values it could not expand: what is wrong there
// is said here, so later checks of those values are not worth reporting.
func interpolate(tree map[string]any, lookup func(string) (string, bool), skip func(path string) bool, p *problems) (tainted []string) {
	missing := map[string][]string{}
	var walk func(v any, path string) any
	walk = func(v any, path string) any {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				t[k] = walk(e, join(path, k))
			}
		case []any:
			for i, e := range t {
				t[i] = walk(e, fmt.Sprintf("%s[%d]", path, i))
			}
		case string:
			if skip != nil && skip(path) {
				return t
			}
			bad := false
			s, err := expand(t, lookup, func(name string) { missing[name] = append(missing[name], path); bad = true })
			if err != nil {
				p.addf(path, "%v", err)
				tainted = append(tainted, path)
				return t
			}
			if bad {
				tainted = append(tainted, path)
			}
			return s
		}
		return v
	}
	walk(tree, "")
	if len(missing) == 0 {
		return tainted
	}
	names := make([]string, 0, len(missing))
	for n := range missing {
		sort.Strings(missing[n])
		names = append(names, fmt.Sprintf("%s (used by %s)", n, strings.Join(missing[n], ", ")))
	}
	sort.Strings(names)
	what := "environment variable not set"
	if len(names) > 1 {
		what = "environment variables not set"
	}
	p.addf("", "%s: %s", what, strings.Join(names, "; "))
	return tainted
}

// expand replaces the references in s. onMissing is called for each unset
// variable without a default.
func expand(s string, lookup func(string) (string, bool), onMissing func(string)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' { // "$${" is a literal "${"
			b.WriteString(s[:i])
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unclosed ${ in %q (write $${ for a literal ${)", s)
		}
		ref := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validVarName(name) {
			return "", fmt.Errorf("bad variable name %q in ${%s}", name, ref)
		}
		if v, ok := lookup(name); ok && (v != "" || !hasDef) {
			b.WriteString(v)
		} else if hasDef {
			b.WriteString(def)
		} else {
			onMissing(name)
		}
	}
}

func validVarName(n string) bool {
	if n == "" || n[0] >= '0' && n[0] <= '9' {
		return false
	}
	for _, r := range n {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
