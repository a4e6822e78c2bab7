package firmware

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

var (
	storeAgentMu   sync.Mutex
	storeAgentBins = map[string][]byte{}
)

// storeAgent builds testdata/storeagent with the given build tags (once per tag set).
func storeAgent(t *testing.T, tags string) []byte {
	t.Helper()
	storeAgentMu.Lock()
	defer storeAgentMu.Unlock()
	if bin, ok := storeAgentBins[tags]; ok {
		return bin
	}
	out := filepath.Join(t.TempDir(), "storeagent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-tags", tags, "-o", out, "./testdata/storeagent")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build storeagent -tags %q: %v: %s", tags, err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	storeAgentBins[tags] = bin
	return bin
}

// storeRelease packs a storeagent release; next builds the agent of the next store format
// and reads station config version 2.
func storeRelease(t *testing.T, k testKey, version string, next, ready, sync bool) string {
	t.Helper()
	tags := ""
	m := manifestFor(version, relOpts{})
	m.StoreFormat, m.StoreMinReader = store.CurrentFormat(), store.CurrentMinReader()
	props := fmt.Sprintf("version: %s\nready: %v\nsync: %v\n", version, ready, sync)
	if next {
		tags = "takt_next_format"
		m.StoreFormat++ // the fixture's step keeps min_reader
		m.ConfigVersion = 2
		props += "config_version: 2\n"
	}
	files := map[string][]byte{AgentFile: storeAgent(t, tags), ConfigFile: []byte(props)}
	var buf bytes.Buffer
	if err := BuildRelease(&buf, m, files, k.priv); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), version+".tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

type agentVerdicts struct {
	Verdicts []store.Verdict `json:"verdicts"`
	Backlog  int             `json:"backlog"`
}

// synced polls the agent until it holds want verdicts and its backlog is empty, and
// returns its verdicts.
func (s *station) synced(t *testing.T, want int) agentVerdicts {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v agentVerdicts
		if err := json.Unmarshal([]byte(s.get(t, "/verdicts")), &v); err != nil {
			t.Fatal(err)
		}
		if v.Backlog == 0 && len(v.Verdicts) == want {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: %d verdicts, backlog %d after 30s, want %d and 0", s.running(t), len(v.Verdicts), v.Backlog, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// committed reads the ids the agent of version reported durable.
func (s *station) committed(t *testing.T, version string) []uint64 {
	t.Helper()
	var ids []uint64
	for _, line := range strings.Fields(readString(t, filepath.Join(s.out, "committed-"+version))) {
		id, err := strconv.ParseUint(line, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// uploaded returns the serial of every verdict record in the bucket's batches, by id.
func uploaded(t *testing.T, s3 *cloudtest.S3, bucket string) map[uint64]string {
	t.Helper()
	got := map[uint64]string{}
	for _, o := range s3.Objects(t, bucket, "verdicts/") {
		sc := bufio.NewScanner(bytes.NewReader(s3.Get(t, bucket, o.Key)))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var v store.Verdict
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Fatalf("%s: %v", o.Key, err)
			}
			got[v.ID] = v.Serial
		}
	}
	return got
}

// TestRollbackKeepsConfigAndVerdicts is the story with a real verdict store and a
// real object store: install 1.0.0 (store format N, station config version 1), which
// records and syncs -> update to 1.1.0 (store format N+1 readable by N, config version 2
// renaming a key 1.0.0 refuses), which migrates both, records without syncing and never
// becomes healthy -> rollback: 1.0.0 runs with the config snapshot of its slot on the
// migrated store, serves and uploads every verdict 1.1.0 committed -> update to 1.1.1
// (format N+1, config version 2) -> committed. Every verdict any agent reported committed
// ends in the bucket: lost must be 0.
func TestRollbackKeepsConfigAndVerdicts(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	s3 := cloudtest.StartS3(t)
	bucket := s3.NewBucket(t, "takt")
	s := newStation(t)
	const original, migrated = "station: st-1\nposition: 4\n", "config_version: 2\nstation: st-1\nline_position: 4\n"
	if err := os.WriteFile(s.live, []byte(original), 0o640); err != nil {
		t.Fatal(err)
	}
	const parts = 30
	s.sup.Env = append(s.env(), "TAKT_TEST_DATA_DIR="+filepath.Join(t.TempDir(), "data"), "TAKT_TEST_PARTS="+strconv.Itoa(parts),
		"TAKT_S3_ENDPOINT=http://"+s3.Endpoint, "TAKT_S3_BUCKET="+bucket, "TAKT_S3_REGION="+s3.Region,
		"TAKT_S3_ACCESS_KEY="+s3.AccessKey, "TAKT_S3_SECRET_KEY="+s3.SecretKey)
	u, err := New(s.config(3*time.Second), k.keys, s.sup, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	format := func() store.FormatInfo {
		var fi store.FormatInfo
		if err := json.Unmarshal([]byte(s.get(t, "/format")), &fi); err != nil {
			t.Fatal(err)
		}
		return fi
	}
	n := store.CurrentFormat()

	if err := u.Install(ctx, storeRelease(t, k, "1.0.0", false, true, true)); err != nil {
		t.Fatal(err)
	}
	s.synced(t, parts)

	err = u.Install(ctx, storeRelease(t, k, "1.1.0", true, false, false))
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("unhealthy 1.1.0: %v, want rolled back", err)
	}
	newer := s.committed(t, "1.1.0")
	if len(newer) != parts {
		t.Fatalf("1.1.0 committed %d verdicts while it was tested, want %d", len(newer), parts)
	}
	if got, config := s.running(t), s.get(t, "/config"); got != "1.0.0" || config != original {
		t.Fatalf("after the rollback %s runs with config %q, want 1.0.0 with %q", got, config, original)
	}
	if fi := format(); fi.Format != n+1 || fi.Reader != n || fi.MinReader > n {
		t.Errorf("1.0.0 on the store 1.1.0 migrated: %+v, want format %d read by %d", fi, n+1, n)
	}
	served := map[uint64]string{}
	// 1.0.0 records parts more on its restart.
	for _, v := range s.synced(t, 3*parts).Verdicts {
		served[v.ID] = v.Serial
	}
	lost := 0
	for _, id := range newer {
		if !strings.HasPrefix(served[id], "1.1.0-") {
			lost++
		}
	}
	if lost != 0 {
		t.Errorf("1.0.0 serves %d of the %d verdicts 1.1.0 committed, want all", len(newer)-lost, len(newer))
	}

	if err := u.Install(ctx, storeRelease(t, k, "1.1.1", true, true, true)); err != nil {
		t.Fatal(err)
	}
	if got := s.get(t, "/config"); got != migrated {
		t.Errorf("1.1.1 runs with config %q, want %q", got, migrated)
	}
	if fi := format(); fi.Format != n+1 || len(fi.History) != int(n+1) {
		t.Errorf("1.1.1 on the migrated store: %+v, want format %d migrated once per step", fi, n+1)
	}
	s.synced(t, 4*parts)
	inBucket := uploaded(t, s3, bucket)
	total := 0
	lost = 0
	for _, version := range []string{"1.0.0", "1.1.0", "1.1.1"} {
		ids := s.committed(t, version)
		total += len(ids)
		for _, id := range ids {
			if !strings.HasPrefix(inBucket[id], version+"-") {
				lost++
				t.Errorf("verdict %d committed by %s is not in the bucket", id, version)
			}
		}
	}
	if want := 4 * parts; total != want {
		t.Errorf("agents committed %d verdicts, want %d (1.0.0 twice, 1.1.0, 1.1.1)", total, want)
	}
	t.Logf("verdicts committed %d, in the bucket %d, lost %d (of them by the rolled-back 1.1.0: %d)", total, len(inBucket), lost, len(newer))
}
