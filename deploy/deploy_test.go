// Package deploy_test checks the Dockerfile and docker-compose.yml as far as a
// machine without a Docker engine can: they parse, their names, ports, paths,
// health checks and dependencies agree with each other and with the
// loombridge configurations they mount, and the Dockerfile's build command
// builds the binary.
package deploy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/loombridge/loombridge/pipelines"
	"github.com/loombridge/loombridge/pipelines/kinds"
)

const root = ".."

// loadCompose loads docker-compose.yml, and the override files given after it
// (paths from the repository root), as `docker compose -f ... -f ...` does.
func loadCompose(t *testing.T, overrides ...string) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	files := []types.ConfigFile{{Filename: filepath.Join(abs, "docker-compose.yml")}}
	for _, o := range overrides {
		files = append(files, types.ConfigFile{Filename: filepath.Join(abs, o)})
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: files,
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("loombridge", true)
		o.Profiles = []string{"*"}
	})
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

func TestComposeServicesAgree(t *testing.T) {
	p := loadCompose(t)
	want := []string{"jaeger", "loom", "loom-certs", "loombridge", "loombridge-scaled", "nats", "receiver"}
	for _, name := range want {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	for name, svc := range p.Services {
		// Every dependency exists, and waits on a condition its target can meet.
		for dep, d := range svc.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || target.HealthCheck.Disable {
					t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if target.Restart != "" && target.Restart != "no" {
					t.Errorf("%s waits for %s to complete, but it restarts (%s)", name, dep, target.Restart)
				}
			case types.ServiceConditionStarted:
			default:
				t.Errorf("%s -> %s: unexpected condition %q", name, dep, d.Condition)
			}
		}
		// Every bind-mounted file exists; named volumes are declared.
		for _, v := range svc.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s mounts %s, which does not exist", name, v.Source)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s mounts undeclared volume %s", name, v.Source)
				}
			}
		}
		for _, s := range svc.Secrets {
			sec, ok := p.Secrets[s.Source]
			if !ok {
				t.Errorf("%s uses undeclared secret %s", name, s.Source)
				continue
			}
			if _, err := os.Stat(sec.File); err != nil {
				t.Errorf("secret %s: file %s: %v", s.Source, sec.File, err)
			}
		}
	}
	// loombridge images: health checked with their own binary, a stop grace
	// period longer than shutdown_timeout, published ports where the configs
	// listen.
	for _, name := range []string{"loombridge", "receiver", "loombridge-scaled"} {
		svc := p.Services[name]
		if svc.HealthCheck == nil || strings.Join(svc.HealthCheck.Test, " ") != "CMD /usr/local/bin/loombridge healthcheck --addr 127.0.0.1:9464" {
			t.Errorf("%s: health check %v", name, svc.HealthCheck)
		}
		if svc.StopGracePeriod == nil || time.Duration(*svc.StopGracePeriod) <= 30*time.Second {
			t.Errorf("%s: stop_grace_period must exceed shutdown_timeout (30s)", name)
		}
	}
	if r := p.Services["loombridge-scaled"].Deploy; r == nil || r.Replicas == nil || *r.Replicas < 2 {
		t.Error("loombridge-scaled: deploy.replicas must be 2 or more")
	}
	ports := func(svc string) map[uint32]string {
		out := map[uint32]string{}
		for _, pt := range p.Services[svc].Ports {
			out[pt.Target] = pt.Protocol
		}
		return out
	}
	if proto, ok := ports("loom")[4242]; !ok || proto != "udp" {
		t.Errorf("loom must publish 4242/udp (QUIC), got %v", ports("loom"))
	}
	if _, ok := ports("loombridge")[9464]; !ok {
		t.Errorf("loombridge must publish 9464, got %v", ports("loombridge"))
	}
	// A NATS on the user's machine would hold 4222: published only when asked.
	if _, ok := ports("nats")[4222]; ok {
		t.Errorf("nats must not publish 4222 unless asked (deploy/compose.nats-ports.yml), got %v", ports("nats"))
	}
	asked := loadCompose(t, "deploy/compose.nats-ports.yml")
	published := false
	for _, pt := range asked.Services["nats"].Ports {
		published = published || pt.Target == 4222 && pt.Published == "4222"
	}
	if !published {
		t.Errorf("deploy/compose.nats-ports.yml must publish nats's 4222, got %v", asked.Services["nats"].Ports)
	}
	if _, ok := ports("jaeger")[16686]; !ok {
		t.Errorf("jaeger must publish its UI on 16686, got %v", ports("jaeger"))
	}
	if !strings.Contains(strings.Join(p.Services["nats"].Command, " "), "-js") {
		t.Error("nats must run with JetStream (-js)")
	}
	if _, ok := ports("receiver")[8099]; !ok {
		t.Errorf("receiver must publish 8099, got %v", ports("receiver"))
	}
}

// The Loom server's config and loombridge's agree: port, token, certificate.
func TestLoomServerConfigMatches(t *testing.T) {
	loomYAML, err := os.ReadFile(filepath.Join(root, "deploy/loom/loom.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(root, "deploy/secrets/loom-token"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(loomYAML), "- token: "+strings.TrimSpace(string(token))+"\n") {
		t.Error("deploy/loom/loom.yaml does not hold the token of deploy/secrets/loom-token")
	}
	for _, want := range []string{`addr: ":4242"`, "cert_file: /certs/loom.crt", "key_file: /certs/loom.key", "partition_full_behavior: block", "chunk_full_behavior: block", "rooms: [orders, audit]"} {
		if !strings.Contains(string(loomYAML), want) {
			t.Errorf("deploy/loom/loom.yaml lacks %q", want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "deploy/loombridge/config.yaml")); !strings.Contains(string(b), `endpoint: "jaeger:4317"`) {
		t.Error("deploy/loombridge/config.yaml does not send traces to jaeger:4317")
	}
	for _, cfg := range []string{"deploy/loombridge/config.yaml", "deploy/loombridge/scale.yaml"} {
		b, _ := os.ReadFile(filepath.Join(root, cfg))
		if !strings.Contains(string(b), `addr: "loom:4242"`) || !strings.Contains(string(b), "ca_file: /certs/loom.crt") {
			t.Errorf("%s does not reach loom:4242 trusting /certs/loom.crt", cfg)
		}
	}
}

// Every loombridge configuration the compose file mounts passes validate,
// with the container's paths mapped to what compose mounts there.
func TestComposeConfigsValidate(t *testing.T) {
	p := loadCompose(t)
	tmp := t.TempDir()
	writeCert(t, filepath.Join(tmp, "loom.crt"))
	for _, name := range []string{"loombridge", "receiver", "loombridge-scaled"} {
		svc := p.Services[name]
		var cfgPath string
		mounts := map[string]string{}
		for _, v := range svc.Volumes {
			switch {
			case v.Target == "/etc/loombridge/config.yaml":
				cfgPath = v.Source
			case v.Type == types.VolumeTypeVolume && v.Source == "certs":
				mounts[v.Target] = tmp // holds loom.crt, as loom-certs makes it
			case v.Type == types.VolumeTypeVolume:
				mounts[v.Target] = t.TempDir()
			}
		}
		for _, s := range svc.Secrets {
			mounts["/run/secrets/"+s.Source] = p.Secrets[s.Source].File
		}
		if cfgPath == "" {
			t.Errorf("%s mounts no /etc/loombridge/config.yaml", name)
			continue
		}
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		// A container path the config uses must be mounted.
		for _, used := range regexp.MustCompile(`(/run/secrets/[\w-]+|/certs|/var/lib/loombridge)`).FindAllString(text, -1) {
			if _, ok := mounts[used]; !ok {
				t.Errorf("%s: its config uses %s, which the service does not mount", name, used)
			}
		}
		for target, src := range mounts {
			text = strings.ReplaceAll(text, target, src)
		}
		if _, err := pipelines.Parse([]byte(text), pipelines.LoadOptions{Kinds: kinds.Builtin(), Environ: func() []string { return nil }}); err != nil {
			t.Errorf("%s (%s) does not validate:\n%v", name, cfgPath, err)
		}
	}
}

func writeCert(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loom"}, DNSNames: []string{"loom"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The Dockerfile parses; it is multi-stage, ends on a non-root distroless
// image with a health check, a stop signal and the config path; and its build
// command, run as a plain go build with the same flags, builds the binary.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	var froms, buildCmd []string
	seen := map[string]string{}
	for _, n := range res.AST.Children {
		cmd := strings.ToLower(n.Value)
		rest := strings.TrimSpace(strings.TrimPrefix(n.Original, n.Value))
		seen[cmd] = rest
		switch cmd {
		case "from":
			froms = append(froms, rest)
		case "run":
			if strings.Contains(rest, "go build") {
				buildCmd = append(buildCmd, rest)
			}
		}
	}
	if len(froms) < 2 {
		t.Errorf("want a multi-stage build, got FROM %v", froms)
	}
	if last := froms[len(froms)-1]; !strings.Contains(last, "distroless/static") || !strings.Contains(last, "nonroot") {
		t.Errorf("final image %q: want distroless static, non-root", last)
	}
	for cmd, want := range map[string]string{
		"user":        "nonroot",
		"healthcheck": `"healthcheck", "--addr", "127.0.0.1:9464"`,
		"stopsignal":  "SIGTERM",
		"cmd":         `"/etc/loombridge/config.yaml"`,
		"volume":      "/var/lib/loombridge",
	} {
		if !strings.Contains(seen[cmd], want) {
			t.Errorf("%s: %q lacks %q", strings.ToUpper(cmd), seen[cmd], want)
		}
	}
	if len(buildCmd) != 1 {
		t.Fatalf("want one RUN with go build, got %v", buildCmd)
	}
	if testing.Short() {
		t.Skip("builds the binary")
	}
	// The same command, with the build argument filled in.
	line := strings.ReplaceAll(buildCmd[0], "${VERSION}", "v9.9.9-test")
	out := filepath.Join(t.TempDir(), "loombridge")
	line = strings.ReplaceAll(line, "/out/loombridge", out)
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, b)
	}
	v, err := exec.Command(out, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "loombridge v9.9.9-test") {
		t.Errorf("built binary's version: %q %v", v, err)
	}
	if b, _ := exec.Command("go", "version", "-m", out).CombinedOutput(); !strings.Contains(string(b), "CGO_ENABLED=0") {
		t.Errorf("binary not built with CGO off:\n%s", b)
	}
}

// The Loom server has a health check, a QUIC handshake by the loombridge binary
// its image carries, against the port and certificate of its configuration;
// loombridge waits for it.
func TestComposeLoomHealthCheck(t *testing.T) {
	p := loadCompose(t)
	loom := p.Services["loom"]
	want := "CMD /usr/local/bin/loombridge healthcheck --loom 127.0.0.1:4242 --ca-file /certs/loom.crt"
	if loom.HealthCheck == nil || strings.Join(loom.HealthCheck.Test, " ") != want {
		t.Errorf("loom: health check %v, want %q", loom.HealthCheck, want)
	}
	certs := false
	for _, v := range loom.Volumes {
		certs = certs || v.Type == types.VolumeTypeVolume && v.Source == "certs" && v.Target == "/certs"
	}
	if !certs {
		t.Error("loom: the health check's CA /certs/loom.crt needs the certs volume at /certs")
	}
	for _, name := range []string{"loombridge"} {
		if d, ok := p.Services[name].DependsOn["loom"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s must wait for loom to be healthy, got %+v", name, p.Services[name].DependsOn["loom"])
		}
	}
	if loom.Build == nil || loom.Build.Dockerfile != "deploy/loom/Dockerfile" {
		t.Fatalf("loom: want build from deploy/loom/Dockerfile, got %+v", loom.Build)
	}
	abs, _ := filepath.Abs(root)
	if loom.Build.Context != abs {
		t.Errorf("loom: the build context must be the repository root (for the loombridge binary), got %s", loom.Build.Context)
	}
}

// deploy/loom/Dockerfile builds loomd at a pinned commit and carries the
// loombridge binary the health check runs.
func TestLoomDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join(root, "deploy/loom/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("deploy/loom/Dockerfile: %v", err)
	}
	var froms, copies, runs []string
	commit := ""
	for _, n := range res.AST.Children {
		rest := strings.TrimSpace(strings.TrimPrefix(n.Original, n.Value))
		switch strings.ToLower(n.Value) {
		case "from":
			froms = append(froms, rest)
		case "copy":
			copies = append(copies, rest)
		case "run":
			runs = append(runs, rest)
		case "arg":
			if v, ok := strings.CutPrefix(rest, "LOOM_COMMIT="); ok {
				commit = v
			}
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(commit) {
		t.Errorf("ARG LOOM_COMMIT must pin a full commit hash, got %q", commit)
	}
	all := strings.Join(runs, "\n")
	for _, want := range []string{"https://github.com/BurntRouter/Loom.git", `"${LOOM_COMMIT}"`, "go build", "./cmd/loomd", "./cmd/loombridge"} {
		if !strings.Contains(all, want) {
			t.Errorf("deploy/loom/Dockerfile's RUNs lack %q", want)
		}
	}
	if len(froms) == 0 || !strings.Contains(froms[len(froms)-1], "distroless/static") {
		t.Errorf("final image: want distroless static, got %v", froms)
	}
	if !strings.Contains(strings.Join(copies, "\n"), "/out/loombridge /usr/local/bin/loombridge") {
		t.Errorf("the image must carry /usr/local/bin/loombridge for the health check, COPYs %v", copies)
	}
}

// .dockerignore keeps history and local data out of the build context.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{".git", "**/data/", ".loombridge-dev/"} {
		if !lines[want] {
			t.Errorf(".dockerignore lacks %q", want)
		}
	}
	// What the image builds from must not be ignored.
	for _, keep := range []string{"go.mod", "go.sum", "cmd", "pipelines", "adapter", "internal"} {
		if lines[keep] || lines[keep+"/"] {
			t.Errorf(".dockerignore must not exclude %s", keep)
		}
	}
}
