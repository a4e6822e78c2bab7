package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// TestCrashWhileSyncingLosesAndDuplicatesNothing runs the agent binary with
// sync to a real versitygw and SIGKILLs it at a random moment, again and
// again (5 rounds, 20 under make soak): after each kill the store passes its
// check and holds every verdict the agent logged as committed. A last run
// drains the backlog; then every record is in exactly one batch object and
// every image is in the bucket with its content.
func TestCrashWhileSyncingLosesAndDuplicatesNothing(t *testing.T) {
	rounds := 5
	if os.Getenv("TAKT_SOAK") == "1" {
		rounds = 20
	}
	bin := filepath.Join(t.TempDir(), "takt-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/takt-agent").CombinedOutput(); err != nil {
		t.Fatalf("build takt-agent: %v\n%s", err, out)
	}
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	cfgYAML := fmt.Sprintf(`station: st-crash
data_dir: %s
camera: {kind: folder, path: %s, loop: true}
model: {path: %s}
deadline: 5s
log: {format: json}
sync:
  endpoint: http://%s
  bucket: %s
  path_style: true
  batch_size: 16
  poll_interval: 20ms
  backoff_min: 20ms
  backoff_max: 500ms
  drain_timeout: 60s
  sample: {pass_fraction: 1}
`, dataDir, fixture.line, fixture.model, s3.Endpoint, bucket)
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "TAKT_S3_ACCESS_KEY="+s3.AccessKey, "TAKT_S3_SECRET_KEY="+s3.SecretKey)

	committed := map[uint64]bool{}
	for round := range rounds {
		cmd := exec.Command(bin, "--config", cfgPath)
		cmd.Env = env
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := time.Duration(rand.IntN(1500)) * time.Millisecond
		var timer *time.Timer
		n := 0
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Message string `json:"message"`
				ID      uint64 `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if strings.Contains(sc.Text(), s3.SecretKey) {
				t.Errorf("the agent logged the S3 secret: %s", sc.Text())
			}
			if line.Message == "part committed" {
				committed[line.ID] = true
				if n++; n == 1 {
					timer = time.AfterFunc(killAt, func() { cmd.Process.Signal(syscall.SIGKILL) })
				}
			}
		}
		cmd.Wait()
		if timer == nil {
			t.Fatalf("round %d: the agent exited (%v) before committing a part", round, cmd.ProcessState)
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: agent ended with %v, want killed by SIGKILL", round, cmd.ProcessState)
		}
		st, err := store.Open(dataDir, store.Options{})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("round %d: store check after SIGKILL at +%v: %v", round, killAt, err)
		}
		lost := 0
		for id := range committed {
			if _, err := st.Get(id); err != nil {
				lost++
			}
		}
		b, _ := st.Backlog()
		st.Close()
		t.Logf("round %d: killed %v after the first commit; %d committed so far, lost %d, backlog %d", round, killAt, len(committed), lost, b.Count)
		if lost != 0 {
			t.Fatalf("round %d: lost %d committed verdicts", round, lost)
		}
	}

	// A clean run drains what the crashes left.
	cmd := exec.Command(bin, "--config", cfgPath, "--max-parts", "1")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("final run: %v\n%s", err, out)
	}
	st := openStore(t, dataDir)
	if b, _ := st.Backlog(); b.Count != 0 {
		t.Fatalf("backlog after the final run = %+v, want empty", b)
	}
	if err := st.Check(); err != nil {
		t.Errorf("store check: %v", err)
	}
	all, err := st.List(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	inBatch := map[uint64]string{}
	keys := map[string]bool{}
	for _, o := range s3.Objects(t, bucket, "") {
		keys[o.Key] = true
		if strings.Contains(o.Key, "-conflict-") {
			t.Errorf("conflict object %s: a retry wrote other content under a key", o.Key)
		}
		if !strings.HasPrefix(o.Key, "verdicts/") {
			continue
		}
		for _, line := range bytes.Split(bytes.TrimSpace(s3.Get(t, bucket, o.Key)), []byte("\n")) {
			var v store.Verdict
			if err := json.Unmarshal(line, &v); err != nil {
				t.Fatalf("%s: %v", o.Key, err)
			}
			if prev, dup := inBatch[v.ID]; dup {
				t.Errorf("record %d uploaded twice: %s and %s", v.ID, prev, o.Key)
			}
			inBatch[v.ID] = o.Key
		}
	}
	for _, v := range all {
		if _, ok := inBatch[v.ID]; !ok {
			t.Errorf("record %d not in the bucket", v.ID)
		}
		key := wire.ImageKey(v.Station, v.Time, v.ID, "jpg")
		if !keys[key] {
			t.Errorf("image of %d: %s not in the bucket", v.ID, key)
			continue
		}
		local, err := os.ReadFile(st.ImagePath(v))
		if err != nil {
			t.Fatalf("image of %d: %v", v.ID, err)
		}
		if !bytes.Equal(s3.Get(t, bucket, key), local) {
			t.Errorf("image %s differs from the local file", key)
		}
	}
	t.Logf("%d verdicts, %d objects after %d kills", len(all), len(keys), rounds)
}

// A small image quota: the agent keeps inspecting every part, the images on
// disk never exceed the quota, FAIL images are kept before PASS ones.
func TestRunWithinImageQuota(t *testing.T) {
	cfg := testConfig(t)
	const quota = 120_000
	cfg.Store = StoreConfig{ImagesMaxBytes: quota, EvictUnsynced: []string{store.ClassDebug, store.ClassPass}}
	sum, err := runAgent(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := len(fixture.labels); sum.Parts != n {
		t.Fatalf("inspected %d parts with a full image quota, want all %d", sum.Parts, n)
	}
	var used int64
	filepath.WalkDir(filepath.Join(cfg.DataDir, "images"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, _ := d.Info()
			used += fi.Size()
		}
		return nil
	})
	if used > quota || used == 0 {
		t.Errorf("image bytes on disk = %d, want 1..%d", used, quota)
	}
	st := openStore(t, cfg.DataDir)
	vs, _ := st.List(0, 1000)
	var passKept, failEvicted int
	for _, v := range vs {
		kept := v.ImageRef != "" && !v.ImageEvicted
		if v.Decision == store.Pass && kept {
			passKept++
		}
		if v.Decision != store.Pass && !kept {
			failEvicted++
		}
	}
	if failEvicted > 0 && passKept > 0 {
		t.Errorf("%d FAIL images gone while %d PASS images are kept, want PASS evicted first", failEvicted, passKept)
	}
	if err := st.Check(); err != nil {
		t.Errorf("store check: %v", err)
	}
}
