package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
)

// TestCrashDuringModelUpdate kills the agent (SIGKILL) once it entered each step of an
// update (downloading, verifying, validating, shadow, swapping) and starts it again: every
// time the update completes, the station serves the new model, and nothing is left in
// staging. Under -race (make test) it kills in the download and the swap only; make soak and
// runs without -race kill in every step.
func TestCrashDuringModelUpdate(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "takt-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/takt-agent").CombinedOutput(); err != nil {
		t.Fatalf("build takt-agent: %v\n%s", err, out)
	}
	keys := t.TempDir()
	line := newSigner(t, keys, "line")
	broker := cloudtest.StartMosquitto(t)
	s3 := cloudtest.StartS3(t)
	bk := newBucket(t, s3, "takt")
	configured := filepath.Join(t.TempDir(), "model-0.2.0.tar")
	if err := bundle.WriteBundleFile(configured, graphManifest("0.2.0", 1), meanGraph(t, 1), nil, line.priv); err != nil {
		t.Fatal(err)
	}
	// 3 MB of padding at 2 MiB/s (downloading round): the download takes long enough to be cut.
	pad := make([]byte, 3<<20)
	for i := range pad {
		pad[i] = byte(i * 7)
	}
	var buf []byte
	{
		b, err := buildBundleWith(graphManifest("0.9.0", 1), meanGraph(t, 1), map[string][]byte{"extra/pad.bin": pad}, line)
		if err != nil {
			t.Fatal(err)
		}
		buf = b
	}
	key := "models/fixture-part/0.9.0/bundle.tar"
	bk.put(t, key, buf)
	topics, _ := wire.NewTopics("plant", "line-1", "st-crash")
	w := newModelWatcher(t, broker.URL, topics)
	w.announce(t, true, wire.ModelAvailableMsg{Name: "fixture-part", Version: "0.9.0", Key: key, SHA256: sha256Of(buf), Size: int64(len(buf))})

	phases := []string{ota.PhaseDownloading, ota.PhaseVerifying, ota.PhaseValidating, ota.PhaseShadow, ota.PhaseSwapping}
	if raceEnabled && os.Getenv("TAKT_SOAK") != "1" {
		phases = []string{ota.PhaseDownloading, ota.PhaseSwapping}
	}
	for _, phase := range phases {
		t.Run(phase, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			rate := "0"
			if phase == ota.PhaseDownloading {
				rate = "2MiB" // slow enough to be cut in the middle
			}
			cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
			cfgYAML := fmt.Sprintf(`station: st-crash
data_dir: %s
camera: {kind: folder, path: %s, loop: true, fps: 50}
model: {bundle: %s, trusted_keys: [%s]}
deadline: 2s
images: {keep: none}
log: {format: json, level: debug}
mqtt: {broker: %q, site: plant, line: line-1, reconnect_min: 50ms, reconnect_max: 300ms}
sync:
  endpoint: http://%s
  bucket: takt
  path_style: true
  max_bytes_per_s: %s
  backoff_min: 20ms
  backoff_max: 300ms
model_update:
  enabled: true
  validate: {latency_runs: 3}
  shadow: {parts: 5, min_parts: 5}
  watch: {parts: 5, min_parts: 5}
`, dataDir, fixture.line, configured, line.pub, broker.URL, s3.Endpoint, rate)
			if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o644); err != nil {
				t.Fatal(err)
			}
			env := append(os.Environ(), "TAKT_S3_ACCESS_KEY="+s3.AccessKey, "TAKT_S3_SECRET_KEY="+s3.SecretKey)
			run := func(until func(msg, phase, state, version string) bool, kill bool) {
				t.Helper()
				cmd := exec.Command(bin, "--config", cfgPath)
				cmd.Env = env
				stderr, err := cmd.StderrPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
				defer timer.Stop()
				sc := bufio.NewScanner(stderr)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				met := false
				var tail []string
				for sc.Scan() {
					tail = append(tail, sc.Text())
					if len(tail) > 8 {
						tail = tail[1:]
					}
					var l struct{ Message, Phase, State, Version string }
					if json.Unmarshal(sc.Bytes(), &l) != nil || met {
						continue
					}
					if until(l.Message, l.Phase, l.State, l.Version) {
						met = true
						if kill {
							if phase == ota.PhaseDownloading {
								time.Sleep(300 * time.Millisecond) // part of the bundle is on disk
							}
							cmd.Process.Signal(syscall.SIGKILL)
						} else {
							cmd.Process.Signal(syscall.SIGTERM)
						}
					}
				}
				cmd.Wait()
				if !met {
					t.Fatalf("the agent ended (%v) before the awaited log line; its last lines:\n%s", cmd.ProcessState, strings.Join(tail, "\n"))
				}
			}
			run(func(msg, p, _, _ string) bool { return msg == "model update step" && p == phase }, true)
			st, err := ota.ReadState(filepath.Join(dataDir, "models"))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed in %s: candidate %+v", phase, st.Candidate)
			run(func(msg, _, state, version string) bool {
				return msg == "model update" && state == wire.ModelActive && version == "0.9.0" ||
					msg == "serving an installed model bundle" && version == "0.9.0"
			}, false)
			st, err = ota.ReadState(filepath.Join(dataDir, "models"))
			if err != nil {
				t.Fatal(err)
			}
			m := st.Models["fixture-part"]
			if st.Candidate != nil || m == nil || m.Active == nil || m.Active.Version != "0.9.0" {
				t.Fatalf("after the restart: state %+v, %+v, last %+v; want 0.9.0 active and no candidate", st, m, st.Last)
			}
			if ents, _ := os.ReadDir(filepath.Join(dataDir, "models", "staging")); len(ents) != 0 {
				t.Errorf("staging holds %d files after the update", len(ents))
			}
			// The new model scores the parts (SIGTERM may have landed before its first part:
			// one more part is taken then).
			last := func() store.Verdict {
				st, err := store.Open(dataDir, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				vs, err := st.List(max(st.LastID(), 5)-5, 5)
				if err != nil || len(vs) == 0 {
					t.Fatalf("verdicts: %v (%d)", err, len(vs))
				}
				for i := len(vs) - 1; i > 0; i-- {
					if !strings.Contains(vs[i].Reason, "context canceled") {
						return vs[i] // not a part cut short by the SIGTERM
					}
				}
				return vs[0]
			}
			if v := last(); v.Model.Version != "0.9.0" {
				run(func(msg, _, _, _ string) bool { return msg == "part committed" }, false)
			}
			if v := last(); v.Model.Version != "0.9.0" || v.Decision == store.NoDecision {
				t.Fatalf("last verdict on %s %s %q, want 0.9.0 deciding", v.Model.Version, v.Decision, v.Reason)
			}
		})
	}
}
