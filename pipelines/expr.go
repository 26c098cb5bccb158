package pipelines

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
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
		return nil, exprError(err)
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

// exprError says what is wrong with an expression on one line: expr's own
// text adds a drawing of the source over two more.
func exprError(err error) error {
	msg := err.Error()
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fe.Message
		if fe.Snippet != "" {
			msg += fmt.Sprintf(" at column %d", fe.Column+1)
		}
	}
	msg = strings.Replace(msg, "expected bool, but got ", "must give true or false, not ", 1)
	if strings.HasPrefix(msg, "unknown name ") {
		msg += " (names: key, uuid, topic, metadata, payload, size)"
	}
	return fmt.Errorf("bad expression: %s", oneLine(msg))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}
