package pipelines

import (
	"errors"
	"fmt"
	"sort"
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
type problems struct{ list Errors }

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
		p.list = append(p.list, &FieldError{Path: join(path, key), Err: errors.New(msg)})
		return
	}
	p.list = append(p.list, &FieldError{Path: path, Err: err})
}

func (p *problems) addf(path, format string, args ...any) {
	p.list = append(p.list, &FieldError{Path: path, Err: fmt.Errorf(format, args...)})
}

// err returns the problems sorted by path (stable, so several problems at one
// key keep the order they were found in), or nil.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sort.SliceStable(p.list, func(i, j int) bool { return pathLess(p.list[i].Path, p.list[j].Path) })
	return p.list
}

// pathLess orders key paths segment by segment, so "a.b" sorts before "a.b.c"
// and before "a.bc".
func pathLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}

// splitKey splits "tls.ca_file: no such file" into its key and message when the
// text starts with something shaped like a key path (lower-case words, dots,
// brackets, commas between several keys).
func splitKey(s string) (key, msg string) {
	i := strings.Index(s, ": ")
	if i <= 0 {
		return "", s
	}
	k := s[:i]
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("_.[]-", r)) {
			return "", s
		}
	}
	return k, s[i+2:]
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
