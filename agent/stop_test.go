package agent

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/models/bundle"
)

// TestStopJudgesThePartInFlight: stopping the agent while a part is being inferred still
// gives that part its real verdict (within its deadline), not a NO_DECISION.
func TestStopJudgesThePartInFlight(t *testing.T) {
	keys := t.TempDir()
	line := newSigner(t, keys, "line")
	path := filepath.Join(t.TempDir(), "slow.tar")
	// 40 rounds of ~0.2 GFLOP: tens of milliseconds a part, seconds under -race; the
	// agent spends nearly all its time inside inference, where the stop lands.
	if err := bundle.WriteBundleFile(path, graphManifest("0.3.0", 1), slowGraph(t, 40), nil, line.priv); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Model = ModelConfig{Bundle: path, TrustedKeys: []string{line.pub}}
	cfg.Camera.Loop = true
	cfg.Deadline = 30 * time.Second
	r := startAgent(t, cfg)
	waitFor(t, "first parts", 60*time.Second, func() bool { return len(verdictsAfter(t, r, 0)) >= 2 })
	start := time.Now()
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	st := openStore(t, cfg.DataDir)
	vs, err := st.List(0, int(st.LastID())+1)
	if err != nil || len(vs) < 2 {
		t.Fatalf("verdicts after the stop: %d (%v)", len(vs), err)
	}
	for _, v := range vs {
		if v.Decision != store.Pass && v.Decision != store.Fail || strings.Contains(v.Reason, "canceled") {
			t.Errorf("part %s: %s %q: want every captured part judged, the one in flight at the stop too", v.Serial, v.Decision, v.Reason)
		}
	}
	if !t.Failed() {
		t.Logf("%d parts, all judged", len(vs))
	}
}
