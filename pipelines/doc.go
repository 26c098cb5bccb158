// Package pipelines is loombridge's configuration model and engine: it loads
// a YAML file into a checked Config, and runs each pipeline on a Watermill
// Router of its own.
//
// # Mapping
//
//   - A kind (`type:` in the YAML) is a Kind in a Registry: constructors of
//     its source, sink and connection configs. A config is a struct with
//     koanf tags whose Check sets defaults and reports every problem by key;
//     its NewSubscriber or NewPublisher builds the Watermill Subscriber or
//     Publisher (the adapters live in adapter/ and in pipelines/kinds).
//   - Load (koanf: the file, then LOOMBRIDGE_* environment overrides, then
//     ${VAR} interpolation) decodes every key with mapstructure, refuses
//     unknown ones, and reports every problem at once, each at its key path.
//   - A pipeline is a Router with one consumer handler on its source. The
//     handler hands each message to a fixed pool of workers (Concurrency),
//     which apply the filter and fan it out to every sink whose when matches,
//     each sink through Watermill's Retry middleware; the message is acked
//     once every matching sink took it. A failure after the retries goes to
//     the dead letters (Watermill's PoisonQueue) or is nacked to the source.
//   - With buffer:, the handler stores each message in a spool (adapter/spool,
//     NATS JetStream) and acks it then; each sink has a consumer handler of
//     its own on its queue of the spool, with the same retries, when and
//     dead letters.
//   - The Engine starts and stops pipelines, applies a new Config on reload
//     (restarting only what changed), owns what pipelines share (embedded Loom
//     routers, the buffers' store), and reports Stats, Status, readiness and
//     Prometheus metrics.
package pipelines
