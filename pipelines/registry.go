package pipelines

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom/client"
)

// Kind is one `type:` of source or sink. A kind's config is a struct with koanf
// tags (usually embedding its adapter's config); Load decodes a source's or
// sink's keys, but for type and when, into a fresh one.
type Kind struct {
	// Name is the value of type: in the YAML.
	Name string
	// Summary is one line on what the kind is, for `loombridge kinds`.
	Summary string
	// Source returns a new, empty source config; nil when the kind is no source.
	Source func() SourceConfig
	// Sink returns a new, empty sink config; nil when the kind is no sink.
	Sink func() SinkConfig
	// Connection returns a new, empty config of a connection of this type
	// (connections.<name>.type: <kind>), shared by the pipelines that name it;
	// nil when the kind has none.
	Connection func() ConnectionConfig
}

// ConnectionConfig is a broker connection's decoded keys.
type ConnectionConfig interface {
	// Check applies the defaults and reports every problem, each starting
	// with its key relative to the connection ("url: must be set").
	Check() error
}

// SourceConfig is a source's decoded keys.
type SourceConfig interface {
	// Check applies the defaults and reports every problem, each starting with
	// its key relative to the source ("room: must be set").
	Check(d Deps) error
	// Topic is what the pipeline subscribes to: a room, a file's topic, ...
	Topic() string
	// NewSubscriber builds the source. The pipeline closes it.
	NewSubscriber(ctx context.Context, d Deps) (message.Subscriber, error)
}

// SinkConfig is a sink's decoded keys.
type SinkConfig interface {
	// Check applies the defaults and reports every problem, keyed as for a source.
	Check(d Deps) error
	// Topic is what the sink publishes to; "" means the source's topic.
	Topic() string
	// NewPublisher builds the sink. The pipeline closes it.
	NewPublisher(ctx context.Context, d Deps) (message.Publisher, error)
}

// RefusedKeys is implemented by a source or sink config whose struct decodes
// keys only for Check to refuse them with a hint (a Loom source's client keys,
// which belong under connections:): the message for an unknown key does not
// list them among the valid keys.
type RefusedKeys interface {
	RefusedKeys() []string
}

// Deps is what a source or sink may use beyond its own keys.
type Deps struct {
	// Pipeline is the name of the pipeline the source or sink belongs to.
	Pipeline string
	// Logger is the pipeline's logger.
	Logger watermill.LoggerAdapter
	// Stdout is where the stdout sink writes.
	Stdout io.Writer
	// DeadLetter is the pipeline's dead-letter sink, publishing to its own topic
	// whatever topic it is given; nil at Check time and when there is none.
	DeadLetter message.Publisher

	connections map[string]*Connection
	loom        func(name string) (client.Config, error)
	tracer      *tracer // nil: tracing off
}

// Loom returns the client config of the named Loom connection. While checking,
// an embedded connection has a placeholder address; at run time its router is
// running and its address and certificate are filled in.
func (d Deps) Loom(name string) (client.Config, error) {
	if d.loom != nil {
		return d.loom(name)
	}
	c, ok := d.connections[name]
	if !ok {
		return client.Config{}, fmt.Errorf("no connection %q under connections (have: %s)", name, strings.Join(sortedNames(d.connections), ", "))
	}
	if c.Type != "" && c.Type != "loom" {
		return client.Config{}, fmt.Errorf("connection %q is of type %s, not loom", name, c.Type)
	}
	if c.invalid {
		return client.Config{}, fmt.Errorf("connection %q is invalid (see connections.%s)", name, name)
	}
	cfg := c.Client
	if c.Embedded {
		cfg.Addr = "127.0.0.1:0"
		cfg.TLSClientConfig = &tls.Config{}
	}
	return cfg, nil
}

// Connection returns the named connection of a broker kind, checked; kinds
// type-assert its Broker to their own connection config.
func (d Deps) Connection(name, kind string) (ConnectionConfig, error) {
	c, ok := d.connections[name]
	if !ok {
		return nil, fmt.Errorf("no connection %q under connections (have: %s)", name, strings.Join(sortedNames(d.connections), ", "))
	}
	if c.Type != kind {
		return nil, fmt.Errorf("connection %q is of type %s, not %s", name, c.typeName(), kind)
	}
	if c.invalid {
		return nil, fmt.Errorf("connection %q is invalid (see connections.%s)", name, name)
	}
	return c.Broker, nil
}

func (c *Connection) typeName() string {
	if c.Type == "" {
		return "loom"
	}
	return c.Type
}

// Registry holds the kinds Load understands.
type Registry struct{ kinds map[string]Kind }

// NewRegistry returns a registry of the given kinds; a name given twice panics,
// since the list is written in code.
func NewRegistry(kinds ...Kind) *Registry {
	r := &Registry{kinds: map[string]Kind{}}
	for _, k := range kinds {
		if _, dup := r.kinds[k.Name]; dup {
			panic("pipelines: kind " + k.Name + " registered twice")
		}
		r.kinds[k.Name] = k
	}
	return r
}

// Lookup returns the kind called name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Names lists the kinds that can be a source (sources true) or a sink.
func (r *Registry) Names(sources bool) []string {
	var out []string
	for n, k := range r.kinds {
		if sources && k.Source != nil || !sources && k.Sink != nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ConnectionNames lists the kinds that define a connection type.
func (r *Registry) ConnectionNames() []string {
	var out []string
	for n, k := range r.kinds {
		if k.Connection != nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func sortedNames[T any](m map[string]T) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// DepsFor returns what a source or sink of the named pipeline is given,
// outside an Engine (tests, tools): the connections are this config's; an
// embedded Loom connection has no router running.
func (c *Config) DepsFor(pipeline string, logger watermill.LoggerAdapter) Deps {
	return Deps{Pipeline: pipeline, Logger: logger, connections: c.Connections}
}
