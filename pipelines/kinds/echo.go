package kinds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/webhook"
	"github.com/loombridge/loombridge/pipelines"
)

// Echo is a webhook receiver: a source that serves HTTP on addr and turns each
// POST to path into a message (body = payload, webhook-id = UUID, headers
// named in metadata_headers = metadata). With secrets it verifies Standard
// Webhooks signatures and answers 401 to a bad one. It answers 204 once the
// pipeline handled the message, 500 if it did not. It is what the demo
// configuration sends its webhooks to, and a way to watch a webhook sink's
// output:
//
//	from: {type: echo, addr: "127.0.0.1:8099", path: /hook, secrets: ["${HOOK_SECRET}"]}
var Echo = pipelines.Kind{
	Name:   "echo",
	Source: func() pipelines.SourceConfig { return &EchoSource{} },
}

// Defaults of the echo source.
const (
	DefaultEchoPath         = "/"
	DefaultEchoMaxBodyBytes = 64 << 20
)

// EchoSource is the echo kind's keys.
type EchoSource struct {
	Addr string `koanf:"addr"`
	Path string `koanf:"path"`
	// TopicName is the topic of the messages (default the pipeline's name).
	TopicName string `koanf:"topic"`
	// Secrets verify signatures ("whsec_..."); empty accepts any request.
	Secrets []string `koanf:"secrets"`
	// SecretsFile holds more secrets, one a line.
	SecretsFile string `koanf:"secrets_file"`
	// MetadataHeaders maps HTTP header names to metadata keys.
	MetadataHeaders map[string]string `koanf:"metadata_headers"`
	MaxBodyBytes    int64             `koanf:"max_body_bytes"`
}

// Check implements pipelines.SourceConfig.
func (c *EchoSource) Check(d pipelines.Deps) error {
	if c.Path == "" {
		c.Path = DefaultEchoPath
	}
	if c.TopicName == "" {
		c.TopicName = d.Pipeline
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultEchoMaxBodyBytes
	}
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr: want host:port, got %q", c.Addr))
	}
	if c.Path[0] != '/' {
		errs = append(errs, fmt.Errorf("path: must start with /, got %q", c.Path))
	}
	if len(c.Secrets) > 0 {
		if _, err := webhook.Sign("check", time.Now(), nil, c.Secrets...); err != nil {
			errs = append(errs, fmt.Errorf("secrets: %w", err))
		}
	}
	if c.SecretsFile != "" {
		if _, err := webhook.ReadSecretsFile(c.SecretsFile); err != nil {
			errs = append(errs, fmt.Errorf("secrets_file: %w", err))
		}
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be positive, got %d", c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// Topic implements pipelines.SourceConfig.
func (c *EchoSource) Topic() string { return c.TopicName }

// NewSubscriber listens at once, so a taken port fails the pipeline's start.
func (c *EchoSource) NewSubscriber(_ context.Context, d pipelines.Deps) (message.Subscriber, error) {
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}
	secrets := c.Secrets
	if c.SecretsFile != "" {
		more, err := webhook.ReadSecretsFile(c.SecretsFile)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("echo: secrets_file: %w", err)
		}
		secrets = append(append([]string(nil), secrets...), more...)
	}
	r := &receiver{cfg: c, secrets: secrets, logger: d.Logger, addr: ln.Addr().String(), closing: make(chan struct{}), ready: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(c.Path, r.serve)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.Logger.Error("echo receiver stopped", err, watermill.LogFields{"addr": c.Addr})
		}
	}()
	return r, nil
}

type receiver struct {
	cfg     *EchoSource
	secrets []string
	addr    string
	logger  watermill.LoggerAdapter
	srv     *http.Server
	wg      sync.WaitGroup
	out     chan *message.Message
	ready   chan struct{} // closed once Subscribe set out
	once    sync.Once
	closing chan struct{}
	closed  sync.Once
}

func (r *receiver) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	started := false
	r.once.Do(func() {
		r.out, started = make(chan *message.Message), true
		close(r.ready)
	})
	if !started {
		return nil, errors.New("echo: one subscription per receiver")
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-r.closing:
		}
		_ = r.Close()
	}()
	return r.out, nil
}

// Addr is where the receiver listens (useful with port 0).
func (r *receiver) Addr() string { return r.addr }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes))
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	if len(r.secrets) > 0 {
		if err := webhook.Verify(body, req.Header, 5*time.Minute, r.secrets...); err != nil {
			http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	id := req.Header.Get("webhook-id")
	if id == "" {
		id = watermill.NewUUID()
	}
	msg := message.NewMessage(id, body)
	for h, key := range r.cfg.MetadataHeaders {
		if v := req.Header.Get(h); v != "" {
			msg.Metadata.Set(key, v)
		}
	}
	select {
	case <-r.ready:
	case <-r.closing:
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	}
	select {
	case r.out <- msg:
	case <-r.closing:
		http.Error(w, "stopping", http.StatusServiceUnavailable)
		return
	case <-req.Context().Done():
		return
	}
	select {
	case <-msg.Acked():
		w.WriteHeader(http.StatusNoContent)
	case <-msg.Nacked():
		http.Error(w, "not handled", http.StatusInternalServerError)
	case <-r.closing:
		http.Error(w, "stopping", http.StatusServiceUnavailable)
	}
}

// Close stops the server; requests waiting for their message are answered 503.
func (r *receiver) Close() error {
	var err error
	r.closed.Do(func() {
		close(r.closing)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = r.srv.Shutdown(ctx)
		r.wg.Wait()
		r.once.Do(func() { close(r.ready) })
		if r.out != nil {
			close(r.out)
		}
	})
	return err
}
