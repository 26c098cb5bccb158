package loom

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/cenkalti/backoff/v5"

	"github.com/loombridge/loombridge/adapter/loom/client"
)

// Reconnect back-off defaults (BackoffConfig).
const (
	// DefaultReconnectInitial is the default BackoffConfig.Initial.
	DefaultReconnectInitial = 100 * time.Millisecond
	// DefaultReconnectMax is the default BackoffConfig.Max.
	DefaultReconnectMax = 30 * time.Second
	// DefaultReconnectMultiplier is the default BackoffConfig.Multiplier.
	DefaultReconnectMultiplier = 2.0
	// DefaultReconnectJitter is the default BackoffConfig.Jitter.
	DefaultReconnectJitter = 0.2
)

// BackoffConfig is the exponential back-off between reconnect attempts (config
// keys reconnect.*).
type BackoffConfig struct {
	// Initial is the first wait; default DefaultReconnectInitial (100 ms).
	Initial time.Duration `koanf:"initial"`
	// Max caps each wait; default DefaultReconnectMax (30 s).
	Max time.Duration `koanf:"max"`
	// Multiplier grows the wait after each failure: a finite number >= 1; default
	// DefaultReconnectMultiplier (2).
	Multiplier float64 `koanf:"multiplier"`
	// Jitter randomises each wait by ± this fraction, 0 to 1; default
	// DefaultReconnectJitter (0.2). Zero stands for the default, so jitter cannot
	// be turned off.
	Jitter float64 `koanf:"jitter"`
	// MaxElapsed gives up after this long; 0 (default) retries until closed.
	MaxElapsed time.Duration `koanf:"max_elapsed"`
}

func (b *BackoffConfig) setDefaults() {
	if b.Initial == 0 {
		b.Initial = DefaultReconnectInitial
	}
	if b.Max == 0 {
		b.Max = DefaultReconnectMax
	}
	if b.Multiplier == 0 {
		b.Multiplier = DefaultReconnectMultiplier
	}
	if b.Jitter == 0 {
		b.Jitter = DefaultReconnectJitter
	}
}

// validate reports every invalid field in field order, each error starting with
// prefix and the field's key.
func (b BackoffConfig) validate(prefix string) error {
	var errs []error
	if b.Initial <= 0 || b.Max < b.Initial {
		errs = append(errs, fmt.Errorf("%sinitial, %smax: need 0 < initial <= max, got %s and %s", prefix, prefix, b.Initial, b.Max))
	}
	// Written so that NaN, which fails every comparison, fails them too.
	if !(b.Multiplier >= 1) || math.IsInf(b.Multiplier, 1) {
		errs = append(errs, fmt.Errorf("%smultiplier: must be a finite number >= 1, got %g", prefix, b.Multiplier))
	}
	if !(b.Jitter >= 0 && b.Jitter <= 1) {
		errs = append(errs, fmt.Errorf("%sjitter: must be a number from 0 to 1, got %g", prefix, b.Jitter))
	}
	if b.MaxElapsed < 0 {
		errs = append(errs, fmt.Errorf("%smax_elapsed: must be >= 0, got %s", prefix, b.MaxElapsed))
	}
	return errors.Join(errs...)
}

// newBackOff returns a fresh back-off; it is not safe for concurrent use.
func (b BackoffConfig) newBackOff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     b.Initial,
		MaxInterval:         b.Max,
		Multiplier:          b.Multiplier,
		RandomizationFactor: b.Jitter,
	}
}

// connector keeps one live client. Its run goroutine dials with back-off, publishes
// the client, and dials again when the connection dies. Users ask get for the current
// client and wait while there is none.
type connector struct {
	cfg     client.Config
	backoff BackoffConfig
	logger  watermill.LoggerAdapter

	mu    sync.Mutex
	cur   *client.Client
	ready chan struct{} // closed when cur is set; replaced when cur dies
	gone  chan struct{} // closed when cur was cleared
	err   error         // set when the connector gave up (MaxElapsed)

	dials, reconnects uint64 // under mu
	cancel            context.CancelFunc
	done              chan struct{}
}

func newConnector(cfg client.Config, bo BackoffConfig, logger watermill.LoggerAdapter) *connector {
	ctx, cancel := context.WithCancel(context.Background())
	c := &connector{cfg: cfg, backoff: bo, logger: logger, ready: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

func (c *connector) run(ctx context.Context) {
	defer close(c.done)
	for first := true; ; first = false {
		cl, err := backoff.Retry(ctx, func() (*client.Client, error) {
			c.mu.Lock()
			c.dials++
			c.mu.Unlock()
			return client.Dial(ctx, c.cfg, c.logger)
		},
			backoff.WithBackOff(c.backoff.newBackOff()),
			backoff.WithMaxElapsedTime(c.backoff.MaxElapsed),
			backoff.WithNotify(func(err error, next time.Duration) {
				c.logger.Error("Loom connection failed, retrying", err, watermill.LogFields{"retry_in": next.String()})
			}))
		if err != nil {
			if ctx.Err() == nil {
				c.mu.Lock()
				c.err = fmt.Errorf("loom: gave up connecting to %s: %w", c.cfg.Addr, err)
				close(c.ready)
				c.mu.Unlock()
			}
			return
		}
		c.mu.Lock()
		c.cur = cl
		c.gone = make(chan struct{})
		if !first {
			c.reconnects++
		}
		close(c.ready)
		c.mu.Unlock()
		c.logger.Debug("Loom connected", watermill.LogFields{"transport": c.cfg.Transport})

		select {
		case <-cl.Done():
			c.logger.Info("Loom connection lost, reconnecting", watermill.LogFields{"reason": fmt.Sprint(cl.Err())})
		case <-ctx.Done():
		}
		c.mu.Lock()
		c.cur = nil
		c.ready = make(chan struct{})
		close(c.gone)
		c.mu.Unlock()
		_ = cl.Close()
		if ctx.Err() != nil {
			return
		}
	}
}

// get returns the live client, waiting for one until ctx ends.
func (c *connector) get(ctx context.Context) (*client.Client, error) {
	for {
		c.mu.Lock()
		cur, ready, gone, err := c.cur, c.ready, c.gone, c.err
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		wait := ready
		if cur != nil {
			select {
			case <-cur.Done():
				wait = gone // dead: wait until run has replaced it
			default:
				return cur, nil
			}
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("loom: no connection to %s: %w", c.cfg.Addr, ctx.Err())
		case <-c.done:
			return nil, client.ErrClosed
		}
	}
}

func (c *connector) stats() (dials, reconnects uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials, c.reconnects
}

// close stops the run goroutine and closes the connection. Idempotent.
func (c *connector) close() {
	c.cancel()
	<-c.done
}
