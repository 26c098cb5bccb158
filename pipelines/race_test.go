//go:build race

package pipelines_test

// raceEnabled reports a -race build: the broker round trips run 1,000 messages
// instead of 10,000 under it (.ci/run runs them again at full size without it).
const raceEnabled = true
