package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// A reload refused for an invalid file shows in /status (the last reload's
// result, the refused file's hash and its problems; the running config's
// hash) and in /metrics, until a valid file is applied. /metrics also
// carries the build.
func TestRefusedReloadShowsInStatusAndMetrics(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	good := func(topic string) string {
		return fmt.Sprintf(`
log: {stats_interval: 0}
http: {addr: "127.0.0.1:0"}
pipelines:
  a:
    from: {type: generate, interval: 5ms}
    to: {f: {type: file, dir: %s, topic: %s, fsync: never}}
`, dir, topic)
	}
	first := good("first")
	bad := first + "    typo_key: 1\n"
	writeFile(t, cfg, first)
	_, stderr, stop, done := startCmd(t, strings.NewReader(""), "run", "-c", cfg)
	addr := healthAddr(t, stderr)

	type status struct {
		Config struct {
			Hash       string `json:"hash"`
			LastReload *struct {
				Result   string   `json:"result"`
				Hash     string   `json:"hash"`
				Problems []string `json:"problems"`
			} `json:"last_reload"`
		} `json:"config"`
		Warnings []string `json:"warnings"`
	}
	getStatus := func() status {
		_, body := get(t, "http://"+addr+"/status")
		var st status
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/status: %v\n%s", err, body)
		}
		return st
	}
	if st := getStatus(); st.Config.Hash != sha256hex(first) || st.Config.LastReload != nil {
		t.Fatalf("before any reload: %+v, want hash %s and no last_reload", st.Config, sha256hex(first))
	}
	_, metrics := get(t, "http://"+addr+"/metrics")
	for _, w := range []string{
		fmt.Sprintf(`loombridge_build_info{goversion=%q,version=%q} 1`, runtime.Version(), buildVersion()),
		"loombridge_config_last_reload_successful 1",
		fmt.Sprintf(`loombridge_config_info{hash=%q} 1`, sha256hex(first)),
	} {
		if !strings.Contains(metrics, w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}

	writeFile(t, cfg, bad)
	var st status
	waitUntil(t, "the refused reload in /status", func() bool {
		st = getStatus()
		return st.Config.LastReload != nil && st.Config.LastReload.Result == "refused"
	})
	lr := st.Config.LastReload
	if lr.Hash != sha256hex(bad) || st.Config.Hash != sha256hex(first) {
		t.Errorf("refused file's hash %s (want %s), running %s (want %s)", lr.Hash, sha256hex(bad), st.Config.Hash, sha256hex(first))
	}
	if len(lr.Problems) != 1 || !strings.Contains(lr.Problems[0], "pipelines.a.typo_key: unknown key") {
		t.Errorf("problems: %q", lr.Problems)
	}
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "reload refused") {
		t.Errorf("warnings: %q", st.Warnings)
	}
	_, metrics = get(t, "http://"+addr+"/metrics")
	for _, w := range []string{
		"loombridge_config_last_reload_successful 0",
		fmt.Sprintf(`loombridge_config_last_reload_info{hash=%q,result="refused"} 1`, sha256hex(bad)),
		fmt.Sprintf(`loombridge_config_info{hash=%q} 1`, sha256hex(first)),
		`loombridge_config_reloads_total{result="refused"} 1`,
		`loombridge_config_reloads_total{result="applied"} 0`,
	} {
		if !strings.Contains(metrics, w+"\n") {
			t.Errorf("/metrics after the refusal lacks %q", w)
		}
	}

	second := good("second")
	writeFile(t, cfg, second)
	waitUntil(t, "the applied reload in /status", func() bool {
		st = getStatus()
		return st.Config.LastReload != nil && st.Config.LastReload.Result == "applied"
	})
	if st.Config.Hash != sha256hex(second) || st.Config.LastReload.Hash != sha256hex(second) || len(st.Warnings) != 0 {
		t.Errorf("after a valid reload: %+v, warnings %q", st.Config, st.Warnings)
	}
	_, metrics = get(t, "http://"+addr+"/metrics")
	if !strings.Contains(metrics, "loombridge_config_last_reload_successful 1\n") {
		t.Error("config_last_reload_successful is not 1 again after a valid reload")
	}
	stop()
	if r := waitResult(t, done); r.code != exitOK {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}
