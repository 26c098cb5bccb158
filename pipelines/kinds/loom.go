package kinds

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/loom"
	"github.com/loombridge/loombridge/adapter/loom/client"
	"github.com/loombridge/loombridge/pipelines"
)

// Loom is a Loom room, as source (a Subscriber) or sink (a Publisher). The
// server is named by connection; the adapter's own keys (mode, format,
// streams, consumers, buffer, reconnect, ...) sit beside connection and room:
//
//	from: {type: loom, connection: main, room: orders, consumers: 4}
//	to:   {type: loom, connection: main, room: audit, mode: fire_and_forget}
var Loom = pipelines.Kind{
	Name:    "loom",
	Summary: "a Loom room, over a connection under connections:",
	Source:  func() pipelines.SourceConfig { return &LoomSource{} },
	Sink:    func() pipelines.SinkConfig { return &LoomSink{} },
}

// LoomSource reads a room.
type LoomSource struct {
	Connection            string `koanf:"connection"`
	Room                  string `koanf:"room"`
	loom.SubscriberConfig `koanf:",squash"`
}

// LoomSink publishes to a room.
type LoomSink struct {
	Connection           string `koanf:"connection"`
	Room                 string `koanf:"room"`
	loom.PublisherConfig `koanf:",squash"`
}

const connKeysHere = "connection keys (addr, transport, token, tls, ...) belong under connections.<name>, not here"

// Check implements pipelines.SourceConfig.
func (c *LoomSource) Check(d pipelines.Deps) error {
	return checkLoom(d, c.Connection, c.Room, c.Client, func(cl client.Config) error {
		cfg := c.SubscriberConfig
		cfg.Client = cl
		cfg.SetDefaults()
		return cfg.Validate()
	})
}

// Topic implements pipelines.SourceConfig.
func (c *LoomSource) Topic() string { return c.Room }

// NewSubscriber implements pipelines.SourceConfig.
func (c *LoomSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	cl, err := d.Loom(c.Connection)
	if err != nil {
		return nil, err
	}
	cfg := c.SubscriberConfig
	cfg.Client = cl
	return loom.NewSubscriber(cfg, d.Logger)
}

// Check implements pipelines.SinkConfig.
func (c *LoomSink) Check(d pipelines.Deps) error {
	return checkLoom(d, c.Connection, c.Room, c.Client, func(cl client.Config) error {
		cfg := c.PublisherConfig
		cfg.Client = cl
		cfg.SetDefaults()
		return cfg.Validate()
	})
}

// Topic implements pipelines.SinkConfig.
func (c *LoomSink) Topic() string { return c.Room }

// NewPublisher implements pipelines.SinkConfig.
func (c *LoomSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	cl, err := d.Loom(c.Connection)
	if err != nil {
		return nil, err
	}
	cfg := c.PublisherConfig
	cfg.Client = cl
	return loom.NewPublisher(cfg, d.Logger)
}

// checkLoom checks what a Loom source and sink share, then the adapter's own
// config with the connection's client keys in it.
func checkLoom(d pipelines.Deps, conn, room string, own client.Config, adapter func(client.Config) error) error {
	errs := []error{checkRoom(conn, room), notZero(own, connKeysHere)}
	if conn != "" {
		if cl, err := d.Loom(conn); err != nil {
			errs = append(errs, fmt.Errorf("connection: %w", err))
		} else {
			errs = append(errs, adapter(cl))
		}
	}
	return errors.Join(errs...)
}

func checkRoom(conn, room string) error {
	var errs []error
	if conn == "" {
		errs = append(errs, errors.New("connection: must name a connection under connections"))
	}
	if room == "" {
		errs = append(errs, errors.New("room: must be set"))
	}
	return errors.Join(errs...)
}

// clientKeys are a connection's keys, which a Loom source or sink decodes
// (its adapter config embeds them) only to refuse them with connKeysHere.
var clientKeys = pipelines.StructKeys(client.Config{})

// RefusedKeys implements pipelines.RefusedKeys.
func (*LoomSource) RefusedKeys() []string { return clientKeys }

// RefusedKeys implements pipelines.RefusedKeys.
func (*LoomSink) RefusedKeys() []string { return clientKeys }

// LoomRoom names the room read, for the engine's shutdown order.
func (c *LoomSource) LoomRoom() (connection, room string) { return c.Connection, c.Room }

// LoomRoom names the room written, for the engine's shutdown order and the
// loop check.
func (c *LoomSink) LoomRoom() (connection, room string) { return c.Connection, c.Room }
