package buffer_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/loombridge/loombridge/internal/buffer"
)

// A sender loop in keyed mode: take the oldest item whose key is free,
// send it, put it back at the front if sending failed, then release the key.
func Example() {
	type msg struct{ key, body string }
	buf, err := buffer.New(buffer.Config[msg]{
		MaxMessages: 100,
		Policy:      buffer.PolicyDropOldest,
		Key:         func(m msg) string { return m.key },
		OnDrop:      func(m msg, r buffer.DropReason) { fmt.Println("dropped", m.body, r) },
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for _, m := range []msg{{"a", "a1"}, {"b", "b1"}, {"a", "a2"}} {
		_ = buf.Push(ctx, m, len(m.body))
	}
	buf.Close() // no more pushes; the sender drains what is left

	failOnce := true
	for {
		m, err := buf.Pop(ctx)
		if errors.Is(err, buffer.ErrClosed) {
			break
		}
		if m.body == "b1" && failOnce { // pretend the send failed
			failOnce = false
			buf.Requeue(m, len(m.body))
			buf.Done(m.key)
			continue
		}
		fmt.Println("sent", m.body)
		buf.Done(m.key)
	}
	fmt.Println("left:", buf.DropRemaining())
	// Output:
	// sent a1
	// sent b1
	// sent a2
	// left: 0
}
