package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"
)

func msgs(n int) []*message.Message {
	out := make([]*message.Message, n)
	for i := range out {
		// Fixed width: every line has the same length (rotation tests rely on it).
		out[i] = message.NewMessage(fmt.Sprintf("u%02d", i), []byte(fmt.Sprintf("payload %02d", i)))
		out[i].Metadata.Set("loom_key", fmt.Sprintf("k%d", i%3))
		out[i].Metadata.Set("n", fmt.Sprintf("%02d", i))
	}
	return out
}

func uuids(ms []*message.Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.UUID)
	}
	return strings.Join(s, ",")
}

func TestSubscribeReadsBackExactlyAndClosesAtEOF(t *testing.T) {
	dir := t.TempDir()
	p := newPub(t, PublisherConfig{Dir: dir})
	want := msgs(5)
	want[2].Payload = []byte{0xff, 0, 0xfe} // base64 path
	publish(t, p, "t", want...)

	s := newSub(t, SubscriberConfig{Dir: dir})
	got := drain(t, subscribe(t, s, "t"))
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].Equals(want[i]) {
			t.Fatalf("message %d: got %s %q %v, want %s %q %v", i,
				got[i].UUID, got[i].Payload, got[i].Metadata, want[i].UUID, want[i].Payload, want[i].Metadata)
		}
	}
}

func TestSubscribeMissingFile(t *testing.T) {
	s := newSub(t, SubscriberConfig{Dir: t.TempDir()})
	if _, err := s.Subscribe(context.Background(), "nope"); err == nil {
		t.Fatal("want an error for a missing file without follow")
	}
	if _, err := s.Subscribe(context.Background(), "../x"); err == nil {
		t.Fatal("want an error for an unsafe topic")
	}
}

func TestSubscribeTwiceSameTopicFails(t *testing.T) {
	dir := t.TempDir()
	s := newSub(t, SubscriberConfig{Dir: dir, Follow: true})
	subscribe(t, s, "t")
	if _, err := s.Subscribe(context.Background(), "t"); err == nil {
		t.Fatal("second subscription of one topic must fail: they would share an offset file")
	}
}

func TestNackRedeliversSameMessage(t *testing.T) {
	dir := t.TempDir()
	publish(t, newPub(t, PublisherConfig{Dir: dir}), "t", msgs(2)...)
	s := newSub(t, SubscriberConfig{Dir: dir, NackResendDelay: time.Millisecond})
	ch := subscribe(t, s, "t")
	first := receive(t, ch)
	first.Nack()
	again := receive(t, ch)
	if !again.Equals(first) {
		t.Fatalf("after Nack got %s, want %s again", again.UUID, first.UUID)
	}
	again.Nack()
	third := receive(t, ch)
	if third.UUID != first.UUID {
		t.Fatalf("after second Nack got %s", third.UUID)
	}
	third.Ack()
	if next := receive(t, ch); next.UUID != "u01" {
		t.Fatalf("after Ack got %s, want u01", next.UUID)
	}
	if st := s.Stats(); st.Acked != 1 || st.Nacked != 2 || st.DeadLettered != 0 {
		t.Fatalf("Stats() = %+v, want 1 acked, 2 nacked", st)
	}
}

func TestOffsetSurvivesRestart(t *testing.T) {
	dir, offDir := t.TempDir(), t.TempDir()
	p := newPub(t, PublisherConfig{Dir: dir})
	all := msgs(10)
	publish(t, p, "t", all[:6]...)
	cfg := SubscriberConfig{Dir: dir, OffsetDir: offDir}

	s1 := newSub(t, cfg)
	ch := subscribe(t, s1, "t")
	acked := receiveAck(t, ch, 4)
	unacked := receive(t, ch) // received, never acked: must come again
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("channel still open after Close")
	}
	if _, err := os.Stat(filepath.Join(offDir, "t.jsonl.offset")); err != nil {
		t.Fatalf("offset file: %v", err)
	}

	publish(t, p, "t", all[6:]...) // written while no reader runs
	s2 := newSub(t, cfg)
	rest := drain(t, subscribe(t, s2, "t"))
	if rest[0].UUID != unacked.UUID {
		t.Fatalf("restart began at %s, want the unacked %s", rest[0].UUID, unacked.UUID)
	}
	if got := uuids(append(acked, rest...)); got != uuids(all) {
		t.Fatalf("acked before + read after restart = %s, want each of %s once", got, uuids(all))
	}

	// Everything is acked now: a third reader gets nothing.
	s3 := newSub(t, cfg)
	if got := drain(t, subscribe(t, s3, "t")); len(got) != 0 {
		t.Fatalf("re-read acked messages: %s", uuids(got))
	}
	// no_offset ignores the stored offset: a full replay.
	s4 := newSub(t, SubscriberConfig{Dir: dir, OffsetDir: offDir, NoOffset: true})
	if got := uuids(drain(t, subscribe(t, s4, "t"))); got != uuids(all) {
		t.Fatalf("replay = %s", got)
	}
}

// The offset file records which file its offset belongs to. After a
// rotation while no Subscriber ran, the offset is not applied to the new
// file (that skipped its unacked lines): the rotated file is finished
// first, or, if it is gone, the new file is read from the start.
// TestOffsetAcrossRotationWhileStopped: rotated once or twice while no reader
// ran, the reader finishes the file its offset belongs to, then every later
// rotated file in order, then the current one.
func TestOffsetAcrossRotationWhileStopped(t *testing.T) {
	for _, tc := range []struct {
		name          string
		total         int // 10: rotated once; 16: twice
		follow        bool
		deleteRotated bool
		want          string
	}{
		{"rotated file finished first", 10, false, false, "u03,u04,u05,u06,u07,u08,u09"},
		{"rotated file finished first, follow", 10, true, false, "u03,u04,u05,u06,u07,u08,u09"},
		{"rotated file gone", 10, false, true, "u06,u07,u08,u09"},
		{"two rotations", 16, false, false, "u03,u04,u05,u06,u07,u08,u09,u10,u11,u12,u13,u14,u15"},
		{"two rotations, follow", 16, true, false, "u03,u04,u05,u06,u07,u08,u09,u10,u11,u12,u13,u14,u15"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			all := msgs(tc.total)
			one, _ := MarshalLine(all[0], DefaultKeyMetadata)
			// Six lines per file: u00-u05 rotated, then u06-u11 (rotated when
			// there are 16), the rest in the current file.
			p := newPub(t, PublisherConfig{Dir: dir, MaxBytes: int64(6 * len(one))})
			publish(t, p, "t", all[:4]...)

			s1 := newSub(t, SubscriberConfig{Dir: dir})
			ch := subscribe(t, s1, "t")
			receiveAck(t, ch, 3)
			receive(t, ch) // u03, never acked
			if err := s1.Close(); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "t.jsonl.offset")); !strings.Contains(string(b), `"file":{"dev":`) {
				t.Errorf("offset file lacks the file identity: %s", b)
			}

			publish(t, p, "t", all[4:]...) // rotates while no reader runs
			rotated := rotatedFiles(t, dir, "t")
			if want := (tc.total - 1) / 6; len(rotated) != want {
				t.Fatalf("rotated files %v, want %d", rotated, want)
			}
			if tc.deleteRotated {
				if err := os.Remove(filepath.Join(dir, rotated[0])); err != nil {
					t.Fatal(err)
				}
			}

			dl := &capturePub{}
			cfg := SubscriberConfig{Dir: dir, Follow: tc.follow, PollInterval: time.Millisecond, DeadLetterTopic: "dl", DeadLetter: dl}
			s2 := newSub(t, cfg)
			var got []*message.Message
			if tc.follow {
				got = receiveAck(t, subscribe(t, s2, "t"), strings.Count(tc.want, ",")+1)
			} else {
				got = drain(t, subscribe(t, s2, "t"))
			}
			if uuids(got) != tc.want {
				t.Fatalf("after restart read %s, want %s", uuids(got), tc.want)
			}
			if _, dls := dl.got(); len(dls) != 0 {
				t.Fatalf("%d dead letters, want none", len(dls))
			}
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}
			// Everything is acked: a third reader has nothing left.
			s3 := newSub(t, SubscriberConfig{Dir: dir})
			if left := drain(t, subscribe(t, s3, "t")); len(left) != 0 {
				t.Fatalf("re-read %s", uuids(left))
			}
		})
	}
}

// Offset files of older versions hold no file identity; their offset is
// applied to the current file as before.
func TestOffsetFileWithoutIdentity(t *testing.T) {
	dir := t.TempDir()
	all := msgs(3)
	one, _ := MarshalLine(all[0], DefaultKeyMetadata)
	p := newPub(t, PublisherConfig{Dir: dir})
	publish(t, p, "t", all...)
	legacy := fmt.Sprintf(`{"offset":%d,"line":1}`, len(one))
	if err := os.WriteFile(filepath.Join(dir, "t.jsonl.offset"), []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSub(t, SubscriberConfig{Dir: dir})
	if got := uuids(drain(t, subscribe(t, s, "t"))); got != "u01,u02" {
		t.Fatalf("read %s, want u01,u02", got)
	}
}

func TestBadLinesGoToDeadLetters(t *testing.T) {
	dir := t.TempDir()
	good := func(uuid string) string {
		b, _ := MarshalLine(message.NewMessage(uuid, []byte("ok")), DefaultKeyMetadata)
		return string(b)
	}
	content := good("g1") +
		"{not json\n" +
		`{"payload":"no uuid"}` + "\n" +
		`{"uuid":"x"}` + "\n" +
		`{"uuid":"x","payload":"***","payload_encoding":"base64"}` + "\n" +
		"\n" + // blank lines are skipped quietly
		good("g2") +
		`{"uuid":"x","payload":"` + strings.Repeat("z", 200) + `"}` + "\n" +
		good("g3") +
		`{"uuid":"torn","payload":"` // no newline: torn at EOF
	path := filepath.Join(dir, "t.jsonl")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	dlq := &capturePub{}
	logger := watermill.NewCaptureLogger()
	s, err := NewSubscriber(SubscriberConfig{Dir: dir, DeadLetter: dlq, DeadLetterTopic: "dead", MaxLineBytes: 100}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch, err := s.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if got := uuids(drain(t, ch)); got != "g1,g2,g3" {
		t.Fatalf("delivered %s, want only the good lines g1,g2,g3", got)
	}

	want := []struct {
		line, err string
		reason    DeadLetterReason
	}{
		{"2", "invalid JSON", ReasonInvalid},
		{"3", "missing field uuid", ReasonInvalid},
		{"4", "missing field payload", ReasonInvalid},
		{"5", "bad base64", ReasonInvalid},
		{"8", "longer than max_line_bytes", ReasonTooLong},
		{"10", "incomplete last line", ReasonTorn},
	}
	topics, dead := dlq.got()
	if len(dead) != len(want) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(want))
	}
	lines := strings.SplitAfter(content, "\n")
	for i, w := range want {
		m := dead[i]
		if topics[i] != "dead" || m.Metadata.Get("file") != path || m.Metadata.Get("line") != w.line ||
			!strings.Contains(m.Metadata.Get("error"), w.err) ||
			!strings.Contains(m.Metadata.Get("error"), path+":"+w.line+":") ||
			m.Metadata.Get(DeadLetterReasonMetadata) != string(w.reason) {
			t.Errorf("dead letter %d: topic %s metadata %v, want line %s, %q and reason %s", i, topics[i], m.Metadata, w.line, w.err, w.reason)
		}
		var n int
		fmt.Sscan(w.line, &n)
		wantPayload := strings.TrimSuffix(lines[n-1], "\n")
		if len(wantPayload) > 100 {
			wantPayload = wantPayload[:100]
		}
		if string(m.Payload) != wantPayload {
			t.Errorf("dead letter %d payload %q, want the raw line %q", i, m.Payload, wantPayload)
		}
	}
	errs := logger.Captured()[watermill.ErrorLogLevel]
	if len(errs) != len(want) || !strings.Contains(errs[0].Err.Error(), path+":2:") {
		t.Fatalf("logged errors %v, want one per bad line naming file:line", errs)
	}
	st := s.Stats()
	wantStats := SubscriberStats{Acked: 3, DeadLettered: 6,
		BadLines: map[DeadLetterReason]uint64{ReasonInvalid: 4, ReasonTooLong: 1, ReasonTorn: 1}}
	if !reflect.DeepEqual(st, wantStats) {
		t.Fatalf("Stats() = %+v, want %+v", st, wantStats)
	}
}

func TestFollowWaitsForCompleteLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.jsonl")
	dlq := &capturePub{}
	s := newSub(t, SubscriberConfig{Dir: dir, Follow: true, PollInterval: time.Millisecond,
		DeadLetter: dlq, DeadLetterTopic: "dead"})
	ch := subscribe(t, s, "t") // the file does not exist yet

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Half a line. If the reader parsed it, it would become a dead letter
	// or a message with payload "xy"; give it many polls to make that mistake.
	if _, err := f.WriteString(`{"uuid":"a","payload":"xy`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := f.WriteString(`z"}` + "\n"); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch)
	m.Ack()
	if m.UUID != "a" || string(m.Payload) != "xyz" {
		t.Fatalf("got %s %q, want the completed line a \"xyz\"", m.UUID, m.Payload)
	}
	if _, dead := dlq.got(); len(dead) != 0 {
		t.Fatalf("incomplete line reported as bad: %v", dead[0].Metadata)
	}

	// Later appends arrive too.
	p := newPub(t, PublisherConfig{Dir: dir})
	publish(t, p, "t", msgs(3)...)
	if got := uuids(receiveAck(t, ch, 3)); got != "u00,u01,u02" {
		t.Fatalf("followed %s", got)
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	all := msgs(12)
	one, _ := MarshalLine(all[0], DefaultKeyMetadata)
	// Three lines per file (all lines have the same length).
	p := newPub(t, PublisherConfig{Dir: dir, MaxBytes: int64(3 * len(one))})
	s := newSub(t, SubscriberConfig{Dir: dir, Follow: true, PollInterval: time.Millisecond})
	ch := subscribe(t, s, "t")
	var got []*message.Message
	// Publish three at a time and wait for them, so the reader sees each
	// file before the next rotation (it follows one file at a time, like
	// tail -F, and cannot find a file rotated away before it got there).
	for i := 0; i < len(all); i += 3 {
		publish(t, p, "t", all[i:i+3]...)
		got = append(got, receiveAck(t, ch, 3)...)
	}
	if n := len(rotatedFiles(t, dir, "t")); n != 3 {
		t.Fatalf("%d rotations, want 3", n)
	}
	if uuids(got) != uuids(all) {
		t.Fatalf("followed %s, want %s", uuids(got), uuids(all))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// After the rotations the offset points into the current file: a new
	// reader starts there and has nothing left to read.
	s2 := newSub(t, SubscriberConfig{Dir: dir})
	if left := drain(t, subscribe(t, s2, "t")); len(left) != 0 {
		t.Fatalf("re-read %s after rotation", uuids(left))
	}
}

// TestFollowAcrossSeveralRotationsAtOnce: while the reader holds a message, the
// file is rotated three times; it then reads every rotated file in order before
// the current one, skipping none.
func TestFollowAcrossSeveralRotationsAtOnce(t *testing.T) {
	dir := t.TempDir()
	all := msgs(12)
	one, _ := MarshalLine(all[0], DefaultKeyMetadata)
	p := newPub(t, PublisherConfig{Dir: dir, MaxBytes: int64(3 * len(one))})
	s := newSub(t, SubscriberConfig{Dir: dir, Follow: true, PollInterval: time.Millisecond})
	ch := subscribe(t, s, "t")
	publish(t, p, "t", all[0])
	first := receive(t, ch) // held: the reader waits in the first file
	publish(t, p, "t", all[1:]...)
	if n := len(rotatedFiles(t, dir, "t")); n != 3 {
		t.Fatalf("%d rotations, want 3", n)
	}
	first.Ack()
	got := append([]*message.Message{first}, receiveAck(t, ch, len(all)-1)...)
	if uuids(got) != uuids(all) {
		t.Fatalf("followed %s, want %s", uuids(got), uuids(all))
	}
}

func TestFollowAfterTruncation(t *testing.T) {
	dir := t.TempDir()
	p := newPub(t, PublisherConfig{Dir: dir})
	publish(t, p, "t", msgs(3)...)
	s := newSub(t, SubscriberConfig{Dir: dir, Follow: true, PollInterval: time.Millisecond})
	ch := subscribe(t, s, "t")
	receiveAck(t, ch, 3)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "t.jsonl"), 0); err != nil {
		t.Fatal(err)
	}
	p2 := newPub(t, PublisherConfig{Dir: dir})
	publish(t, p2, "t", message.NewMessage("fresh", []byte("f")))
	if m := receive(t, ch); m.UUID != "fresh" {
		t.Fatalf("after truncation got %s", m.UUID)
	}
}

func TestContextCancelClosesChannel(t *testing.T) {
	dir := t.TempDir()
	publish(t, newPub(t, PublisherConfig{Dir: dir}), "t", msgs(2)...)
	s := newSub(t, SubscriberConfig{Dir: dir, Follow: true})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch)
	if m.Context().Err() != nil {
		t.Fatal("message context done too early")
	}
	cancel()
	for range ch { // must close without an Ack
	}
	if m.Context().Err() == nil {
		t.Fatal("message context not cancelled with the subscription")
	}
	// The topic is free again once the subscription has ended.
	if _, err := s.Subscribe(context.Background(), "t"); err != nil {
		t.Fatalf("resubscribe: %v", err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	p, err := NewPublisher(PublisherConfig{Dir: dir, Fsync: FsyncInterval, FsyncInterval: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish("t", msgs(1)...); err != nil {
		t.Fatal(err)
	}
	s, err := NewSubscriber(SubscriberConfig{Dir: dir, Follow: true, PollInterval: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	following, err := s.Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := s.Subscribe(context.Background(), "absent") // polls for the file
	if err != nil {
		t.Fatal(err)
	}
	blocked := receive(t, following) // goroutine now waits for the Ack
	_ = blocked
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []<-chan *message.Message{following, waiting} {
		if _, ok := <-ch; ok {
			t.Fatal("channel open after Close")
		}
	}
	if _, err := s.Subscribe(context.Background(), "t"); err != ErrSubscriberClosed {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}
