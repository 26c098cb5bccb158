package buffer

import (
	"errors"
	"fmt"
	"strings"
)

// Defaults applied by New to zero-valued Config fields.
const (
	// DefaultMaxMessages is the default Config.MaxMessages.
	DefaultMaxMessages = 10_000
	// DefaultMaxBytes is the default Config.MaxBytes: 64 MiB.
	DefaultMaxBytes = 64 << 20
	// DefaultPolicy is the default Config.Policy.
	DefaultPolicy = PolicyBlock
)

// Policy decides what Push does when the new item does not fit.
type Policy string

// The policies understood by ParsePolicy and Config.Policy.
const (
	// PolicyBlock makes Push wait for room until its context ends or the
	// buffer is closed. It is the default.
	PolicyBlock Policy = "block"
	// PolicyError makes Push return ErrFull at once.
	PolicyError Policy = "error"
	// PolicyDropOldest makes Push evict the oldest items never requeued
	// until the new one fits, reporting each with DropFull; when evicting
	// them all would still leave no room, it evicts none and drops the new
	// item instead (see Push).
	PolicyDropOldest Policy = "drop_oldest"
)

// ParsePolicy parses "block", "error" or "drop_oldest" (case and surrounding
// space ignored). Any other string is an error listing the valid policies.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(strings.ToLower(strings.TrimSpace(s))); p {
	case PolicyBlock, PolicyError, PolicyDropOldest:
		return p, nil
	}
	return "", fmt.Errorf("unknown policy %q (valid: block, error, drop_oldest)", s)
}

// Config configures a Buffer. Zero values of MaxMessages, MaxBytes and Policy
// stand for the defaults (DefaultMaxMessages, DefaultMaxBytes,
// DefaultPolicy). The koanf keys are those of the Loom publisher's buffer.*
// settings, which fill this struct. The func fields cannot come from a
// configuration file.
type Config[T any] struct {
	// MaxMessages is the most items the buffer holds (Requeue may exceed it).
	// The buffer is generic, but its one user holds messages, and the
	// setting is called buffer.max_messages there.
	MaxMessages int `koanf:"max_messages"`
	// MaxBytes is the most bytes the buffer holds, summing the sizes given
	// to Push (Requeue may exceed it). An item larger than MaxBytes is
	// refused with ErrTooLarge.
	MaxBytes int64 `koanf:"max_bytes"`
	// Policy decides what Push does when full.
	Policy Policy `koanf:"policy"`

	// OnDrop, if set, is called once for every item the buffer accepted and
	// then discarded, with the reason. It is called without the buffer's
	// lock held, possibly from several goroutines at once. Items refused by
	// Push (it returned an error) are not drops: the caller still has them.
	OnDrop func(item T, reason DropReason) `koanf:"-"`
	// Expired, if set, is asked by Pop about the item it is about to return;
	// when it reports true the item is dropped with DropExpired instead.
	// It is called with the buffer's lock held: keep it cheap and do not
	// call the buffer from it.
	Expired func(item T) bool `koanf:"-"`
	// Key, if set, turns on keyed ordering: Pop returns the oldest item
	// whose key is not held by another consumer and holds that key until
	// Done(key). Items with the same key are so never in flight together,
	// which keeps their order across concurrent consumers. It is called
	// once per Push or Requeue, without the lock held.
	Key func(item T) string `koanf:"-"`
	// Group, if set, names each item's group (the Loom publisher: its room).
	// TakeBatch returns items of one group at a time, and DropGroup drops a
	// group. It is called once per Push or Requeue, without the lock held.
	Group func(item T) string `koanf:"-"`
}

func (c *Config[T]) setDefaults() {
	if c.MaxMessages == 0 {
		c.MaxMessages = DefaultMaxMessages
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Policy == "" {
		c.Policy = DefaultPolicy
	}
}

// Validate reports every problem in c, joined with errors.Join in field
// order (max_messages, max_bytes, policy), each naming the field by its
// koanf key, for example "max_messages: must be > 0, got -1". It checks c as
// New would use it: zero values are valid since they stand for the defaults.
func (c Config[T]) Validate() error {
	c.setDefaults()
	var errs []error
	if c.MaxMessages <= 0 {
		errs = append(errs, fmt.Errorf("max_messages: must be > 0, got %d", c.MaxMessages))
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("max_bytes: must be > 0, got %d", c.MaxBytes))
	}
	if _, err := ParsePolicy(string(c.Policy)); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	return errors.Join(errs...)
}
