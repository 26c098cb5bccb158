package kinds

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
	"github.com/loombridge/loombridge/pipelines"
)

// File is a directory of files: as a sink, JSONL lines (<topic>.jsonl, with
// rotation) or one raw file per message; as a source, the lines of
// <dir>/<topic>.jsonl, from the last acked offset, optionally following it.
//
//	from: {type: file, dir: ./in, topic: orders, follow: true}
//	to:   {type: file, dir: ./out, format: jsonl, fsync: interval}
//
// A sink's topic defaults to the source's (a room's name); bad lines of a
// source go to the pipeline's dead_letter.
var File = pipelines.Kind{
	Name:    "file",
	Summary: "JSON lines: read <dir>/<topic>.jsonl from the last acked offset, or append to it",
	Source:  func() pipelines.SourceConfig { return &FileSource{} },
	Sink:    func() pipelines.SinkConfig { return &FileSink{} },
}

// FileSource reads <dir>/<topic>.jsonl.
type FileSource struct {
	TopicName             string `koanf:"topic"`
	file.SubscriberConfig `koanf:",squash"`
}

// FileSink writes under dir.
type FileSink struct {
	TopicName            string `koanf:"topic"`
	file.PublisherConfig `koanf:",squash"`
}

// Check implements pipelines.SourceConfig.
func (c *FileSource) Check(pipelines.Deps) error {
	var errs []error
	if c.TopicName == "" {
		errs = append(errs, errors.New("topic: must be set (the file read is <dir>/<topic>.jsonl)"))
	}
	if c.DeadLetterTopic != "" {
		errs = append(errs, errors.New("dead_letter_topic: bad lines go to the pipeline's dead_letter; set its topic there"))
	}
	cfg := c.SubscriberConfig
	cfg.SetDefaults()
	return errors.Join(append(errs, cfg.Validate())...)
}

// RefusedKeys implements pipelines.RefusedKeys: Check refuses
// dead_letter_topic, so a typo's message does not offer it.
func (*FileSource) RefusedKeys() []string { return []string{"dead_letter_topic"} }

// Topic implements pipelines.SourceConfig.
func (c *FileSource) Topic() string { return c.TopicName }

// NewSubscriber implements pipelines.SourceConfig.
func (c *FileSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	cfg := c.SubscriberConfig
	if d.DeadLetter != nil {
		cfg.DeadLetter = d.DeadLetter
		cfg.DeadLetterTopic = d.Pipeline + "_dead_letters"
	}
	return file.NewSubscriber(cfg, d.Logger)
}

// Check implements pipelines.SinkConfig.
func (c *FileSink) Check(pipelines.Deps) error {
	cfg := c.PublisherConfig
	cfg.SetDefaults()
	return cfg.Validate()
}

// Topic implements pipelines.SinkConfig.
func (c *FileSink) Topic() string { return c.TopicName }

// NewPublisher implements pipelines.SinkConfig.
func (c *FileSink) NewPublisher(_ context.Context, d pipelines.Deps) (message.Publisher, error) {
	return file.NewPublisher(c.PublisherConfig, d.Logger)
}
