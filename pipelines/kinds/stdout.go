package kinds

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/pipelines"
)

// Stdout prints each message as one JSON line (the file sink's JSONL line:
// uuid, key, metadata, payload; base64 where not UTF-8), for consume and for
// debugging a pipeline:
//
//	to: {print: {type: stdout}}
var Stdout = pipelines.Kind{
	Name:    "stdout",
	Summary: "one JSON line per message on standard output",
	Sink:    func() pipelines.SinkConfig { return &StdoutSink{} },
}

// StdoutSink has no keys.
type StdoutSink struct{}

// Check implements pipelines.SinkConfig.
func (*StdoutSink) Check(pipelines.Deps) error { return nil }

// Topic implements pipelines.SinkConfig.
func (*StdoutSink) Topic() string { return "" }

// NewPublisher implements pipelines.SinkConfig.
func (*StdoutSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	return &LinePrinter{W: d.Stdout}, nil
}

// LinePrinter is a Publisher writing each message as a JSONL line to W.
type LinePrinter struct {
	W  io.Writer
	mu sync.Mutex
}

// Publish implements message.Publisher.
func (p *LinePrinter) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		line, err := file.MarshalLine(m, pipelines.MetadataKey)
		if err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		if _, err := p.W.Write(line); err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
	}
	return nil
}

// Close implements message.Publisher.
func (*LinePrinter) Close() error { return nil }
