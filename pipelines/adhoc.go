package pipelines

import (
	"fmt"

	"github.com/knadh/koanf/parsers/yaml"

	"github.com/loombridge/loombridge/adapter/loom/client"
)

// AdhocPipeline is the pipeline name ParseSource and ParseSink give their
// Deps: a kind that defaults its topic to the pipeline's name (generate,
// echo) takes this one.
const AdhocPipeline = "adhoc"

// ParseSource decodes and checks one source written on its own, such as a
// command line's `{type: file, dir: ./in, topic: orders}`, through the same
// kinds and checks as a configuration file. Problems are an Errors keyed from
// "source" ("source.topic: must be set"). base, when not nil, supplies the
// connections a loom source may name; an embedded connection is refused,
// since its router only exists inside a running `loombridge run`.
//
// The Deps returned are those the source was checked with; set Logger (and
// Stdout) before passing them to NewSubscriber.
func ParseSource(b []byte, base *Config, kinds *Registry) (SourceConfig, Deps, error) {
	ep, deps, err := parseAdhoc(b, base, kinds, false)
	if err != nil {
		return nil, Deps{}, err
	}
	return ep.Source, deps, nil
}

// ParseSink is ParseSource for a sink, keyed from "sink". A sink's when is
// refused: there is no pipeline to choose among sinks.
func ParseSink(b []byte, base *Config, kinds *Registry) (SinkConfig, Deps, error) {
	ep, deps, err := parseAdhoc(b, base, kinds, true)
	if err != nil {
		return nil, Deps{}, err
	}
	return ep.Sink, deps, nil
}

func parseAdhoc(b []byte, base *Config, kinds *Registry, sink bool) (*Endpoint, Deps, error) {
	path := "source"
	if sink {
		path = "sink"
	}
	var p problems
	tree, err := yaml.Parser().Unmarshal(b)
	if err != nil {
		p.add(path, fmt.Errorf("YAML: %w", err))
		return nil, Deps{}, p.err()
	}
	if len(tree) == 0 {
		p.addf(path, "empty: want a mapping such as {type: file, dir: ./out, topic: x}")
		return nil, Deps{}, p.err()
	}
	if _, ok := tree["when"]; ok && sink {
		p.addf(path+".when", "not allowed here: there is only one sink")
		delete(tree, "when")
	}
	var conns map[string]*Connection
	if base != nil {
		conns = base.Connections
	}
	deps := Deps{Pipeline: AdhocPipeline, connections: conns}
	deps.loom = func(name string) (client.Config, error) {
		if c, ok := conns[name]; ok && c.Embedded {
			return client.Config{}, fmt.Errorf("connection %q is embedded: its router only exists inside a running `loombridge run`; start one with `loombridge dev` and give its address instead", name)
		}
		return Deps{connections: conns}.Loom(name)
	}
	ep := decodeEndpoint(tree, path, sink, deps, kinds, &p)
	if err := p.err(); err != nil {
		return nil, Deps{}, err
	}
	return ep, deps, nil
}
