package kinds

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/pipelines"
)

// Generate makes messages, for demos and load tests: one every interval (as
// fast as the sinks take them when 0), count in all (0: no end), the payload
// and key from templates over {{.N}} (1, 2, ...), {{.Time}}, {{.UUID}} and
// {{.Pipeline}}, padded with spaces to pad_to bytes. A message is made again
// if the pipeline nacks it.
//
//	from: {type: generate, interval: 500ms, payload: '{"n": {{.N}}}', key: 'k{{mod .N 8}}'}
var Generate = pipelines.Kind{
	Name:    "generate",
	Summary: "a message every interval, for tests and demos",
	Source:  func() pipelines.SourceConfig { return &GenerateSource{} },
}

// Defaults of the generate source.
const (
	DefaultGenerateInterval = time.Second
	DefaultGeneratePayload  = `{"n":{{.N}},"time":"{{.Time.Format "2006-01-02T15:04:05.000Z07:00"}}"}`
	DefaultGenerateInFlight = 1
)

// GenerateSource is the generate kind's keys.
type GenerateSource struct {
	// TopicName is the topic of the messages (default the pipeline's name).
	TopicName string `koanf:"topic"`
	// Interval between messages; 0 makes them as fast as they are taken.
	Interval *time.Duration `koanf:"interval"`
	// Count is how many messages to make; 0 means no end.
	Count int64 `koanf:"count"`
	// Payload and Key are text/templates; an empty key sets no loom_key.
	Payload string `koanf:"payload"`
	Key     string `koanf:"key"`
	// PadTo pads each payload with spaces to this many bytes.
	PadTo int `koanf:"pad_to"`
	// InFlight is how many messages may wait for their ack at once.
	InFlight int `koanf:"in_flight"`

	payload, key *template.Template
	pipeline     string
}

var templateFuncs = template.FuncMap{"mod": func(a, b int64) int64 { return a % b }}

// Check implements pipelines.SourceConfig.
func (c *GenerateSource) Check(d pipelines.Deps) error {
	c.pipeline = d.Pipeline
	c.TopicName = cmp.Or(c.TopicName, d.Pipeline)
	if c.Interval == nil {
		iv := DefaultGenerateInterval
		c.Interval = &iv
	}
	c.Payload = cmp.Or(c.Payload, DefaultGeneratePayload)
	c.InFlight = cmp.Or(c.InFlight, DefaultGenerateInFlight)
	var errs []error
	if *c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: must not be negative, got %s", *c.Interval))
	}
	if c.Count < 0 {
		errs = append(errs, fmt.Errorf("count: must not be negative, got %d", c.Count))
	}
	var err error
	if c.payload, err = parseTemplate(c.Payload); err != nil {
		errs = append(errs, fmt.Errorf("payload: %w", err))
	}
	if c.key, err = parseTemplate(c.Key); err != nil {
		errs = append(errs, fmt.Errorf("key: %w", err))
	}
	if c.PadTo < 0 {
		errs = append(errs, fmt.Errorf("pad_to: must not be negative, got %d", c.PadTo))
	}
	if c.InFlight < 1 {
		errs = append(errs, fmt.Errorf("in_flight: must be >= 1, got %d", c.InFlight))
	}
	return errors.Join(errs...)
}

// parseTemplate parses and tries a template once, so a field that does not
// exist is refused before anything runs.
func parseTemplate(s string) (*template.Template, error) {
	t, err := template.New("").Funcs(templateFuncs).Option("missingkey=error").Parse(s)
	if err != nil {
		return nil, err
	}
	if err := checkRanges(t.Root); err != nil {
		return nil, err
	}
	if err := t.Execute(&bytes.Buffer{}, genData{N: 1, Time: time.Now()}); err != nil {
		return nil, err
	}
	return t, nil
}

// maxRange bounds {{range N}} over a literal, so that trying a template at
// Check (and making each message) cannot loop for minutes.
const maxRange = 100_000

func checkRanges(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkRanges(c); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		for _, cmd := range n.Pipe.Cmds {
			for _, arg := range cmd.Args {
				if num, ok := arg.(*parse.NumberNode); ok && (!num.IsInt || num.Int64 > maxRange) {
					return fmt.Errorf("range over %s: at most %d", num.Text, maxRange)
				}
			}
		}
		if err := checkRanges(n.List); err != nil {
			return err
		}
		return checkRanges(n.ElseList)
	case *parse.IfNode:
		if err := checkRanges(n.List); err != nil {
			return err
		}
		return checkRanges(n.ElseList)
	case *parse.WithNode:
		if err := checkRanges(n.List); err != nil {
			return err
		}
		return checkRanges(n.ElseList)
	}
	return nil
}

type genData struct {
	N        int64
	Time     time.Time
	UUID     string
	Pipeline string
}

// Topic implements pipelines.SourceConfig.
func (c *GenerateSource) Topic() string { return c.TopicName }

// NewSubscriber implements pipelines.SourceConfig.
func (c *GenerateSource) NewSubscriber(context.Context, pipelines.Deps) (message.Subscriber, error) {
	return &generator{cfg: c, closing: make(chan struct{})}, nil
}

type generator struct {
	cfg       *GenerateSource
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (g *generator) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	select {
	case <-g.closing:
		return nil, errors.New("generate: subscriber closed")
	default:
	}
	out := make(chan *message.Message)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer close(out)
		g.run(ctx, out)
	}()
	return out, nil
}

// run makes the messages; each waits for its ack in a goroutine of its own,
// in_flight at most.
func (g *generator) run(ctx context.Context, out chan<- *message.Message) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		// After count, stay subscribed but idle: a closed channel would stop
		// the pipeline's router as if the source had failed.
		select {
		case <-ctx.Done():
		case <-g.closing:
		}
	}()
	slots := make(chan struct{}, g.cfg.InFlight)
	var tick <-chan time.Time
	if *g.cfg.Interval > 0 {
		t := time.NewTicker(*g.cfg.Interval)
		defer t.Stop()
		tick = t.C
	}
	for n := int64(1); g.cfg.Count == 0 || n <= g.cfg.Count; n++ {
		if n > 1 && tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return
			case <-g.closing:
				return
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		case <-g.closing:
			return
		}
		msg, err := g.make(n)
		if err != nil {
			<-slots
			return // the templates ran at Check: only a broken clock gets here
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			g.deliver(ctx, msg, out)
		}()
	}
}

// deliver sends msg until it is acked; a nack sends it again.
func (g *generator) deliver(ctx context.Context, msg *message.Message, out chan<- *message.Message) {
	for {
		select {
		case out <- msg:
		case <-ctx.Done():
			return
		case <-g.closing:
			return
		}
		select {
		case <-msg.Acked():
			return
		case <-msg.Nacked():
			msg = msg.Copy()
		case <-ctx.Done():
			return
		case <-g.closing:
			return
		}
	}
}

func (g *generator) make(n int64) (*message.Message, error) {
	id := watermill.NewUUID()
	data := genData{N: n, Time: time.Now(), UUID: id, Pipeline: g.cfg.pipeline}
	var payload, key bytes.Buffer
	if err := g.cfg.payload.Execute(&payload, data); err != nil {
		return nil, err
	}
	if err := g.cfg.key.Execute(&key, data); err != nil {
		return nil, err
	}
	if pad := g.cfg.PadTo - payload.Len(); pad > 0 {
		payload.Write(bytes.Repeat([]byte{' '}, pad))
	}
	msg := message.NewMessage(id, payload.Bytes())
	if key.Len() > 0 {
		msg.Metadata.Set(pipelines.MetadataKey, key.String())
	}
	return msg, nil
}

// Close stops making messages and waits for the goroutines.
func (g *generator) Close() error {
	g.closeOnce.Do(func() { close(g.closing) })
	g.wg.Wait()
	return nil
}
