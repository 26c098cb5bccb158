package pipelines

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// FieldError is one problem in a configuration, at a YAML key path such as
// "pipelines.orders.to.hooks.endpoints[0].url".
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Errors is every problem found in a configuration, ordered by key path.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.Is and errors.As look at every problem.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// problems collects FieldErrors while a configuration is checked.
type problems struct {
	list Errors
	// typed are the paths whose value could not be decoded: the zero value
	// left there would only draw range errors ("must be at least 1, got 0").
	typed map[string]bool
}

// addType records a value of the wrong type or form at path.
func (p *problems) addType(path string, err error) {
	if p.typed == nil {
		p.typed = map[string]bool{}
	}
	p.typed[path] = true
	p.list = append(p.list, &FieldError{Path: path, Err: err})
}

// add records err at path. A joined error is split into its parts, and parts
// that start with their own key ("url: missing scheme", as every adapter's
// Validate writes them) are put under path: "to.hooks" + "url: ..." becomes
// "to.hooks.url: ...".
func (p *problems) add(path string, err error) {
	if err == nil {
		return
	}
	var fe *FieldError
	var es Errors
	switch {
	case errors.As(err, &es):
		for _, e := range es {
			p.add(join(path, e.Path), e.Err)
		}
		return
	case errors.As(err, &fe) && fe == err:
		p.add(join(path, fe.Path), fe.Err)
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			p.add(path, e)
		}
		return
	}
	key, msg := splitKey(err.Error())
	if key != "" {
		// "token, token_file: set one" names two keys: each gets the full path.
		keys := strings.Split(key, ", ")
		for i, k := range keys {
			keys[i] = join(path, k)
		}
		p.list = append(p.list, &FieldError{Path: strings.Join(keys, ", "), Err: errors.New(msg)})
		return
	}
	p.list = append(p.list, &FieldError{Path: path, Err: err})
}

// drop forgets the problems at each of paths and below them.
func (p *problems) drop(paths []string) {
	if len(paths) == 0 {
		return
	}
	out := p.list[:0]
	for _, e := range p.list {
		under := false
		for _, path := range paths {
			if e.Path == path || strings.HasPrefix(e.Path, path+".") || strings.HasPrefix(e.Path, path+"[") {
				under = true
				break
			}
		}
		if !under {
			out = append(out, e)
		}
	}
	p.list = out
}

func (p *problems) addf(path, format string, args ...any) {
	p.list = append(p.list, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// err returns the problems sorted by path (stable, so several problems at one
// key keep the order they were found in), without repeats, or nil.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sort.SliceStable(p.list, func(i, j int) bool { return pathLess(p.list[i].Path, p.list[j].Path) })
	seen := map[string]bool{}
	out := p.list[:0]
	for i, e := range p.list {
		if s := e.Error(); !seen[s] && !(p.typed[e.Path] && i > 0 && p.list[i-1].Path == e.Path) {
			seen[s] = true
			out = append(out, e)
		}
	}
	p.list = out
	return p.list
}

// pathLess orders key paths segment by segment, so "a.b" sorts before "a.b.c"
// and before "a.bc", and list indexes by number: "e[2]" before "e[10]".
func pathLess(a, b string) bool {
	as, bs := pathSegments(a), pathSegments(b)
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, y := as[i], bs[i]
		if x == y {
			continue
		}
		if xi, err := strconv.Atoi(x); err == nil {
			if yi, err := strconv.Atoi(y); err == nil {
				return xi < yi
			}
		}
		return x < y
	}
	return len(as) < len(bs)
}

// pathSegments splits "a.b[10].c" into "a", "b", "10", "c"; brackets are not
// looked into for dots ("headers[X.Y]").
func pathSegments(path string) []string {
	var out []string
	for path != "" {
		i := strings.IndexAny(path, ".[")
		switch {
		case i < 0:
			return append(out, path)
		case path[i] == '.':
			out = append(out, path[:i])
			path = path[i+1:]
		default:
			if i > 0 {
				out = append(out, path[:i])
			}
			end := strings.IndexByte(path[i:], ']')
			if end < 0 {
				return append(out, path[i:])
			}
			out = append(out, path[i+1:i+end])
			path = strings.TrimPrefix(path[i+end+1:], ".")
		}
	}
	return out
}

// splitKey splits "tls.ca_file: no such file" into its key and message when the
// text starts with something shaped like a key path: lower-case words, dots,
// brackets holding an index or a name ("headers[X-Id]"), and ", " between
// several keys ("token, token_file: set one, not both").
func splitKey(s string) (key, msg string) {
	for i := 0; i < len(s); i++ {
		r := s[i]
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.':
		case r == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return "", s
			}
			i += end
		case r == ',' && strings.HasPrefix(s[i:], ", ") && i > 0:
			i++
		case r == ':' && strings.HasPrefix(s[i:], ": ") && i > 0:
			return s[:i], s[i+2:]
		default:
			return "", s
		}
	}
	return "", s
}

func join(path, key string) string {
	switch {
	case path == "":
		return key
	case key == "":
		return path
	case strings.HasPrefix(key, "["):
		return path + key
	}
	return path + "." + key
}
