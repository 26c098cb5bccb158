package pipelines

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// MetadataKey is the metadata that carries a message's Loom key across every hop.
const MetadataKey = "loom_key"

// exprEnv is what filter and when expressions see:
//
//	key       the Loom key (metadata loom_key)
//	uuid      the message UUID
//	topic     the source's topic (room)
//	metadata  the metadata, a map of strings
//	payload   the payload decoded as JSON (nil when it is not JSON)
//	size      the payload's length in bytes
type exprEnv struct {
	Key      string            `expr:"key"`
	UUID     string            `expr:"uuid"`
	Topic    string            `expr:"topic"`
	Metadata map[string]string `expr:"metadata"`
	Payload  any               `expr:"payload"`
	Size     int               `expr:"size"`
}

type exprPredicate struct {
	program     *vm.Program
	needPayload bool // decode JSON only for expressions that read it
}

// compilePredicate compiles a filter or when expression; it must give a bool.
func compilePredicate(src string) (predicate, error) {
	program, err := expr.Compile(src, expr.Env(exprEnv{}), expr.AsBool())
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n") // the rest draws the source with a caret
		return nil, fmt.Errorf("bad expression %q: %s", src, msg)
	}
	uses := ast.Find(program.Node(), func(n ast.Node) bool {
		id, ok := n.(*ast.IdentifierNode)
		return ok && id.Value == "payload"
	})
	return &exprPredicate{program: program, needPayload: uses != nil}, nil
}

func (e *exprPredicate) match(topic string, msg *message.Message) (bool, error) {
	env := exprEnv{Key: msg.Metadata.Get(MetadataKey), UUID: msg.UUID, Topic: topic, Metadata: msg.Metadata, Size: len(msg.Payload)}
	if e.needPayload {
		var v any
		if json.Unmarshal(msg.Payload, &v) == nil {
			env.Payload = v
		}
	}
	out, err := expr.Run(e.program, env)
	if err != nil {
		return false, err
	}
	b, _ := out.(bool)
	return b, nil
}
