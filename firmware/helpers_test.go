package firmware

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/takt-edge/takt/models/bundle"
)

var (
	agentOnce sync.Once
	agentBin  []byte
	agentErr  error
)

// testAgent builds testdata/testagent once and returns the binary.
func testAgent(t *testing.T) []byte {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "takt-testagent")
		if err != nil {
			agentErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "testagent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./testdata/testagent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("build testagent: %v: %s", err, b)
			return
		}
		agentBin, agentErr = os.ReadFile(out)
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

type testKey struct {
	priv    ed25519.PrivateKey
	keys    bundle.TrustedKeys
	pubPath string
}

func newKey(t *testing.T) testKey {
	t.Helper()
	path := filepath.Join(t.TempDir(), "release.key")
	pub, err := bundle.WriteKeyPair(path)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := bundle.ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := bundle.TrustedKeys{}
	keys.Add(pub)
	return testKey{priv: priv, keys: keys, pubPath: path + ".pub"}
}

func otherKey(t *testing.T) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

type relOpts struct {
	unready  bool
	rollback bool
	arch     string
	// configVersion is the station config version the release's agent reads (0: 1); keys,
	// when set, are the only station config keys it accepts (testagent's doc).
	configVersion int
	keys          string
	// storeFormat and storeMinReader go into the manifest.
	storeFormat, storeMinReader uint64
	// legacy: the manifest states no config_version (a release from before config checks).
	legacy bool
}

func manifestFor(version string, o relOpts) ReleaseManifest {
	arch := o.arch
	if arch == "" {
		arch = goarch
	}
	configVersion := max(o.configVersion, 1)
	if o.legacy {
		configVersion = 0
	}
	return ReleaseManifest{Version: version, Arch: arch, ONNXRuntime: "1.24", OpenCV: "4.6",
		Migration: "none", Rollback: o.rollback, ConfigVersion: configVersion,
		StoreFormat: o.storeFormat, StoreMinReader: o.storeMinReader}
}

func filesFor(t *testing.T, version string, o relOpts) map[string][]byte {
	props := fmt.Sprintf("version: %s\nready: %v\n", version, !o.unready)
	if o.configVersion > 0 {
		props += fmt.Sprintf("config_version: %d\n", o.configVersion)
	}
	if o.keys != "" {
		props += "keys: " + o.keys + "\n"
	}
	return map[string][]byte{AgentFile: testAgent(t), ConfigFile: []byte(props)}
}

// makeRelease writes a release signed by key into dir and returns its path.
func makeRelease(t *testing.T, dir string, key ed25519.PrivateKey, version string, o relOpts) string {
	t.Helper()
	var buf bytes.Buffer
	if err := BuildRelease(&buf, manifestFor(version, o), filesFor(t, version, o), key); err != nil {
		t.Fatal(err)
	}
	name := version
	if o.unready {
		name += "-unready"
	}
	if o.rollback {
		name += "-rollback"
	}
	if o.configVersion > 0 || o.keys != "" || o.storeFormat > 0 || o.legacy {
		name += fmt.Sprintf("-c%d-s%d-%d-%v", o.configVersion, o.storeFormat, o.storeMinReader, o.legacy)
	}
	path := filepath.Join(dir, name+".tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// station is an updater root with a process supervisor running the test agent, and the
// station's agent config (live), which starts as "station: st-1".
type station struct {
	root, addr, out, live string
	sup                   *Process
}

func newStation(t *testing.T) *station {
	t.Helper()
	s := &station{root: t.TempDir(), addr: freeAddr(t)}
	s.out = filepath.Join(s.root, "out")
	if err := os.Mkdir(s.out, 0o755); err != nil {
		t.Fatal(err)
	}
	s.live = filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(s.live, []byte("station: st-1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	s.sup = &Process{Root: s.root, Env: s.env()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := (&Process{Root: s.root}).Stop(ctx); err != nil {
			t.Errorf("stop agent: %v", err)
		}
	})
	return s
}

func (s *station) env() []string {
	return []string{"TAKT_TEST_LISTEN=" + s.addr, "TAKT_TEST_STATE_DIR=" + s.out, "TAKT_TEST_CONFIG=" + s.live}
}

func (s *station) config(timeout time.Duration) Config {
	return Config{Root: s.root, HealthURL: "http://" + s.addr + "/readyz", HealthTimeout: timeout, AgentConfig: s.live}
}

// recorder collects the steps an updater reports.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) Report(s Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s.Step)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.steps
	r.steps = nil
	return s
}

// running returns the version the agent on s.addr serves, polling until it answers.
func (s *station) running(t *testing.T) string {
	t.Helper()
	return s.get(t, "/version")
}

// get returns the body the agent on s.addr answers for path, polling until it answers.
func (s *station) get(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.addr + path)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agent on %s does not answer: %v", s.addr, last)
	return ""
}

func (s *station) versionFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.out, "version"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// checkBootable asserts that current names a complete slot: its manifest is signed by a
// trusted key and every file matches its sha256.
func checkBootable(t *testing.T, root string, keys bundle.TrustedKeys) string {
	t.Helper()
	slot := CurrentSlot(root)
	if slot == "" {
		t.Fatalf("current does not name a slot")
	}
	dir := filepath.Join(root, "slots", slot)
	if err := VerifySlot(dir, keys); err != nil {
		t.Fatalf("slot %s is not bootable: %v", slot, err)
	}
	return slot
}

func mustState(t *testing.T, root string) State {
	t.Helper()
	st, err := ReadState(root)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
