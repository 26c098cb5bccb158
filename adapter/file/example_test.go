package file_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/loombridge/loombridge/adapter/file"
)

// Publish two messages to a JSONL file and read them back.
func Example() {
	dir, _ := os.MkdirTemp("", "loombridge-file-example")
	defer os.RemoveAll(dir)

	pub, err := file.NewPublisher(file.PublisherConfig{Dir: dir}, nil)
	if err != nil {
		panic(err)
	}
	m := message.NewMessage("id-1", []byte("hello"))
	m.Metadata.Set("loom_key", "user-42")
	if err := pub.Publish("events", m, message.NewMessage("id-2", []byte{0xff, 0x00})); err != nil {
		panic(err)
	}
	_ = pub.Close()

	line, _ := os.ReadFile(dir + "/events.jsonl")
	fmt.Print(string(line))

	sub, err := file.NewSubscriber(file.SubscriberConfig{Dir: dir}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(context.Background(), "events")
	if err != nil {
		panic(err)
	}
	for msg := range msgs { // closed at the end of the file (no follow)
		fmt.Printf("%s key=%q payload=%q\n", msg.UUID, msg.Metadata.Get("loom_key"), msg.Payload)
		msg.Ack()
	}
	// Output:
	// {"uuid":"id-1","key":"user-42","metadata":{"loom_key":"user-42"},"payload":"hello"}
	// {"uuid":"id-2","payload":"/wA=","payload_encoding":"base64"}
	// id-1 key="user-42" payload="hello"
	// id-2 key="" payload="\xff\x00"
}
