package file

import (
	"bytes"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// BenchmarkPublishJSONL measures one goroutine publishing 1 KiB text
// payloads under each fsync policy.
func BenchmarkPublishJSONL(b *testing.B) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB
	for _, fsync := range []string{FsyncAlways, FsyncInterval, FsyncNever} {
		b.Run("fsync="+fsync, func(b *testing.B) {
			p, err := NewPublisher(PublisherConfig{Dir: b.TempDir(), Fsync: fsync}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			msg := message.NewMessage("0195f3a2-7c1d-7e0a-9b4c-1d2e3f405162", payload)
			msg.Metadata.Set("loom_key", "key-1")
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Publish("bench", msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
