// Package kinds holds the source and sink types a pipeline can name with
// type:, one file each: its keys (embedding its adapter's config), its checks
// and its constructors. Builtin is the one list of them; a new backend is one
// file here and one line there.
package kinds

import (
	"errors"
	"reflect"

	"github.com/loombridge/loombridge/pipelines"
)

// Builtin returns the registry of every kind loombridge ships.
func Builtin() *pipelines.Registry {
	return pipelines.NewRegistry(
		Loom,
		File,
		Webhook,
		Generate,
		Stdout,
		Echo,
		NATS,
		AMQP,
		Kafka,
		HTTP,
		Redis,
		SQL,
	)
}

// notZero reports an error when a struct of connection keys was filled at a
// source or sink, where they do not belong.
func notZero(v any, msg string) error {
	if reflect.ValueOf(v).IsZero() {
		return nil
	}
	return errors.New(msg)
}
