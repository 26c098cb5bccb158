package loombridge_test

// The README's recipes are run here, as written, against the brokers of the CI
// machine (.ci/services starts them), and what arrives is checked.
//
// Conventions: every ```yaml block of README.md that is a whole configuration
// (not a "# fragment") is a recipe and starts with the line "# recipe: NAME";
// recipeChecks below says, for each NAME, how to clear what earlier runs left in
// the broker, what to send in (most recipes carry their own generator) and
// which file of ./data must receive what. A recipe without an entry, or an
// entry without a recipe, fails the test, so every recipe is run.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/loombridge/loombridge/internal/testkit"
	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

// recipeWait bounds every wait of a recipe: a hang detector, generous for a
// loaded 2-core machine.
const recipeWait = 2 * time.Minute

// recipeCheck is how one recipe is run and checked.
type recipeCheck struct {
	// needs is the broker address the recipe uses ("" for none); the recipe is
	// skipped when it does not answer and skipUnless is set.
	needs      string
	skipUnless bool
	// clear removes what earlier runs left in the broker, so that what arrives
	// is this run's.
	clear func(t *testing.T)
	// send puts messages in, for recipes without a generator of their own.
	send func(t *testing.T, n int)
	// file is the JSONL file under the recipe's directory that must receive
	// payloads `{"n": 1}` … `{"n": n}` (generate's, or send's).
	file string
}

func recipeChecks() map[string]recipeCheck {
	return map[string]recipeCheck{
		"http": {
			send: func(t *testing.T, n int) {
				for i := 1; i <= n; i++ {
					postIngest(t, fmt.Sprintf(`{"n": %d}`, i))
				}
			},
			file: "data/ingest.jsonl",
		},
		"nats": {
			needs: "127.0.0.1:4222",
			clear: func(t *testing.T) {
				nc, err := nats.Connect("nats://127.0.0.1:4222", nats.Timeout(10*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				js, err := nc.JetStream()
				if err != nil {
					t.Fatal(err)
				}
				if err := js.DeleteStream("ORDERS_EU"); err != nil && err != nats.ErrStreamNotFound {
					t.Fatal(err)
				}
			},
			file: "data/orders_from_nats.jsonl",
		},
		"buffer": {file: "data/orders_buffered.jsonl"},
		"rabbitmq": {
			needs: "127.0.0.1:5672",
			clear: func(t *testing.T) {
				conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				ch, err := conn.Channel()
				if err != nil {
					t.Fatal(err)
				}
				defer ch.Close()
				if _, err := ch.QueueDelete("orders", false, false, false); err != nil {
					t.Fatal(err)
				}
			},
			file: "data/orders_from_rabbitmq.jsonl",
		},
		"kafka": {
			needs:      "127.0.0.1:9092",
			skipUnless: true, // no Kafka broker runs on the CI machine
			file:       "data/orders_from_kafka.jsonl",
		},
		"redis": {
			needs: "127.0.0.1:6379",
			clear: func(t *testing.T) {
				c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
				defer c.Close()
				if err := c.Del(context.Background(), "orders").Err(); err != nil {
					t.Fatal(err)
				}
			},
			file: "data/orders_from_redis.jsonl",
		},
		"postgres": {
			needs: "127.0.0.1:5432",
			clear: func(t *testing.T) {
				db, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:5432/postgres")
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				for _, table := range []string{"orders", "orders_offsets"} {
					if _, err := db.Exec(`DROP TABLE IF EXISTS "` + table + `"`); err != nil {
						t.Fatal(err)
					}
				}
			},
			file: "data/orders_from_postgres.jsonl",
		},
	}
}

// postIngest sends one message to the http recipe's ingress, trying again
// while its listener is not up yet.
func postIngest(t *testing.T, body string) {
	t.Helper()
	deadline := time.Now().Add(recipeWait)
	for {
		resp, err := http.Post("http://127.0.0.1:8080/ingest", "application/json", strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("POST /ingest: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recipe is one recipe block.
type recipe struct {
	name string
	block
}

// readmeRecipes returns the recipes of README.md and fails on a whole
// configuration that is not marked as one.
func readmeRecipes(t *testing.T) []recipe {
	var out []recipe
	for _, b := range fencedBlocks(t, "README.md", "yaml") {
		first, _, _ := strings.Cut(b.text, "\n")
		first = strings.TrimSpace(first)
		if first == "# fragment" {
			continue
		}
		name, ok := strings.CutPrefix(first, "# recipe: ")
		if !ok {
			t.Errorf("README.md:%d: a whole configuration in the README is a recipe: start it with \"# recipe: NAME\" (or move it to docs/)", b.line)
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		out = append(out, recipe{name, b})
	}
	return out
}

func TestReadmeRecipesDeliver(t *testing.T) {
	recipes := readmeRecipes(t)
	if len(recipes) == 0 {
		t.Fatal("README.md has no recipe")
	}
	checks := recipeChecks()
	seen := map[string]bool{}
	for _, r := range recipes {
		if seen[r.name] {
			t.Errorf("README.md:%d: recipe %q given twice", r.line, r.name)
		}
		seen[r.name] = true
		if _, ok := checks[r.name]; !ok {
			t.Errorf("README.md:%d: recipe %q has no entry in recipeChecks: every recipe must be run", r.line, r.name)
		}
	}
	for name := range checks {
		if !seen[name] {
			t.Errorf("recipeChecks has %q, which README.md has no recipe of", name)
		}
	}
	if t.Failed() {
		return
	}
	for _, r := range recipes {
		t.Run(r.name, func(t *testing.T) { runRecipe(t, r, checks[r.name]) })
	}
}

func runRecipe(t *testing.T, r recipe, c recipeCheck) {
	const n = 3
	if c.needs != "" {
		conn, err := net.DialTimeout("tcp", c.needs, 2*time.Second)
		if err != nil {
			if c.skipUnless {
				t.Skipf("README.md:%d: nothing answers at %s: %v", r.line, c.needs, err)
			}
			t.Fatalf("README.md:%d: the recipe's broker at %s does not answer (bash .ci/services starts it): %v", r.line, c.needs, err)
		}
		conn.Close()
	}
	if c.clear != nil {
		c.clear(t)
		t.Cleanup(func() { c.clear(t) }) // after the engine closed: leave nothing behind
	}
	cfg, err := pipelines.Parse([]byte(r.text), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: readmeEnviron})
	if err != nil {
		t.Fatalf("README.md:%d: %v", r.line, err)
	}
	// The recipes write under ./data: run each in a directory of its own.
	t.Chdir(t.TempDir())
	var logs testkit.Buffer
	engine := pipelines.NewEngine(pipelines.EngineOptions{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ctx, cancel := context.WithTimeout(context.Background(), recipeWait)
	defer cancel()
	if err := engine.Start(ctx, cfg); err != nil {
		t.Fatalf("README.md:%d: start: %v", r.line, err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), recipeWait)
		defer ccancel()
		if err := engine.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("warnings and errors of the run:\n%s", logs.String())
		}
	}()
	if c.send != nil {
		c.send(t, n)
	}
	deadline := time.Now().Add(recipeWait)
	for {
		got := payloadNs(t, c.file)
		if hasFirst(got, n) {
			t.Logf("README.md:%d: %s received %v", r.line, c.file, got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("README.md:%d: after %s, %s holds payloads n=%v; want 1..%d", r.line, recipeWait, c.file, got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// payloadNs returns the "n" of each JSON payload of a JSONL file, in order.
func payloadNs(t *testing.T, path string) []int {
	f, err := os.Open(filepath.FromSlash(path))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Payload string `json:"payload"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue // a line being written
		}
		var p struct {
			N int `json:"n"`
		}
		if err := json.Unmarshal([]byte(line.Payload), &p); err != nil {
			t.Fatalf("%s: payload %q is not the recipe's: %v", path, line.Payload, err)
		}
		out = append(out, p.N)
	}
	return out
}

// hasFirst reports whether got holds each of 1..n.
func hasFirst(got []int, n int) bool {
	have := map[int]bool{}
	for _, v := range got {
		have[v] = true
	}
	for i := 1; i <= n; i++ {
		if !have[i] {
			return false
		}
	}
	return true
}

// The quick start's config.example.yaml delivers too: the generator's messages
// reach data/demo.jsonl through the embedded room, and the refunds among them
// reach data/received.jsonl through the signed webhook and the echo receiver.
func TestQuickStartDelivers(t *testing.T) {
	abs, err := filepath.Abs("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pipelines.Load(abs, pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	var logs testkit.Buffer
	engine := pipelines.NewEngine(pipelines.EngineOptions{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ctx, cancel := context.WithTimeout(context.Background(), recipeWait)
	defer cancel()
	if err := engine.Start(ctx, cfg); err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), recipeWait)
		defer ccancel()
		if err := engine.Close(cctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if t.Failed() {
			t.Logf("warnings and errors of the run:\n%s", logs.String())
		}
	}()
	// The generator's payloads are {"n": N, "kind": "order"|"refund", ...}, a
	// refund every fifth.
	deadline := time.Now().Add(recipeWait)
	for {
		demo, received := payloadNs(t, "data/demo.jsonl"), payloadNs(t, "data/received.jsonl")
		if hasFirst(demo, 5) && len(received) > 0 {
			for _, n := range received {
				if n%5 != 0 {
					t.Errorf("data/received.jsonl holds n=%d, which is no refund", n)
				}
			}
			t.Logf("data/demo.jsonl: %d messages, data/received.jsonl: refunds %v", len(demo), received)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: data/demo.jsonl holds n=%v, data/received.jsonl n=%v", recipeWait, demo, received)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
