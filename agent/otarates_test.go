package agent

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/agent/web"
	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
)

// writeGrayLevels writes one part per gray level into dir, each by an atomic rename.
func writeGrayLevels(t *testing.T, dir string, levels ...uint8) {
	t.Helper()
	for i, v := range levels {
		img := image.NewGray(image.Rect(0, 0, 256, 192))
		for j := range img.Pix {
			img.Pix[j] = v
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		if err := bundle.WriteFileAtomic(filepath.Join(dir, fmt.Sprintf("part-%d.png", i)), buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
}

// ratedManifest is graphManifest with the operating point a trainer records: the
// false-reject rule at a 1% budget, expecting 1% false rejects and 8% escapes.
func ratedManifest(version string, threshold float64) bundle.Manifest {
	m := graphManifest(version, threshold)
	fr, esc := 0.01, 0.08
	m.Thresholds.Rule, m.Thresholds.FalseRejectBudget = "false-reject", 0.01
	m.Thresholds.ExpectedFalseReject, m.Thresholds.ExpectedEscape = &fr, &esc
	return m
}

// TestModelUpdateShadowFalseRejects installs, beside a serving model that PASSes every part,
// a candidate whose manifest expects 1% false rejects but that would FAIL a quarter of those
// good parts: the shadow step refuses it with both figures. A candidate within its expected
// rate is promoted, and its status carries its operating point and the shadow's figures.
func TestModelUpdateShadowFalseRejects(t *testing.T) {
	keys := t.TempDir()
	line := newSigner(t, keys, "line")
	parts := t.TempDir()
	// Scores (the mean gray level) 0.08, 0.24, 0.39 and 0.78: at threshold 0.5 one part in
	// four FAILs; at 1 none does.
	writeGrayLevels(t, parts, 20, 60, 100, 200)
	cfg := otaConfig(t, line)
	cfg.Camera.Path = parts
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.ModelUpdate.Shadow.Parts, cfg.ModelUpdate.Shadow.MinParts = 40, 40
	cfg.ModelUpdate.Shadow.FalseRejectMinParts, cfg.ModelUpdate.Shadow.FalseRejectSignificance = 30, 0.01
	cfg.ModelUpdate.Shadow.MaxBusy = 1
	cfg.ModelUpdate.Shadow.Queue = 8
	r := startAgent(t, cfg)
	defer r.stop()
	client := cfg
	client.HTTP.Listen = strings.TrimPrefix(r.base, "http://")
	install := func(version string, data []byte) {
		t.Helper()
		path := filepath.Join(t.TempDir(), version+".tar")
		if err := bundle.WriteFileAtomic(path, data); err != nil {
			t.Fatal(err)
		}
		if err := InstallModel(context.Background(), client, path); err != nil {
			t.Fatalf("InstallModel: %v", err)
		}
	}
	final := func(version string) *wire.ModelStatusMsg {
		var last *wire.ModelStatusMsg
		waitFor(t, version+" decided", 90*time.Second, func() bool {
			var st ota.State
			getJSON(t, http.DefaultClient, r.base+"/model/update", http.StatusOK, &st)
			if l := st.Last; l == nil || l.Version != version || l.State != wire.ModelRejected && l.State != wire.ModelActive {
				return false
			}
			last = r.a.ota.LastStatus()
			return last != nil && last.Version == version
		})
		return last
	}

	install("0.3.0", buildTestBundle(t, ratedManifest("0.3.0", 0.5), meanGraph(t, 1), line.priv))
	got := final("0.3.0")
	t.Logf("0.3.0: %s %q", got.State, got.Reason)
	fig := got.Figures
	if got.State != wire.ModelRejected || !strings.Contains(got.Reason, "false rejects: the candidate would FAIL") ||
		!strings.Contains(got.Reason, "clearly above the 1.00% its manifest expects") {
		t.Fatalf("0.3.0: %s %q, want rejected in shadow for its false rejects, naming the 1%% it expects", got.State, got.Reason)
	}
	if fig == nil || fig.Limit != "shadow.false_reject_significance" || fig.ExpectedFalseReject == nil || *fig.ExpectedFalseReject != 0.01 ||
		fig.ObservedFalseReject == nil || *fig.ObservedFalseReject < 0.15 || fig.FalseRejectParts < 30 {
		t.Errorf("0.3.0 figures %+v: want the false-reject limit, 1%% expected and about 25%% observed over >= 30 parts", fig)
	}
	if op := got.Operating; op == nil || op.Rule != "false-reject" || op.ExpectedEscape == nil || *op.ExpectedEscape != 0.08 {
		t.Errorf("0.3.0 status operating point %+v: want the manifest's", op)
	}

	install("0.4.0", buildTestBundle(t, ratedManifest("0.4.0", 1), meanGraph(t, 1), line.priv))
	got = final("0.4.0")
	t.Logf("0.4.0: %s %q", got.State, got.Reason)
	if got.State != wire.ModelActive || !strings.Contains(got.Reason, "false rejects in shadow 0 of") || !strings.Contains(got.Reason, "against 1.00% expected") {
		t.Fatalf("0.4.0: %s %q, want promoted with its shadow false rejects beside the 1%% expected", got.State, got.Reason)
	}
	if fig := got.Figures; fig == nil || fig.ExpectedFalseReject == nil || fig.ObservedFalseReject == nil || *fig.ObservedFalseReject != 0 {
		t.Errorf("0.4.0 figures %+v: want 1%% expected and none observed", fig)
	}
	// The status API shows the serving model's operating point.
	waitFor(t, "0.4.0 serving with its operating point", 30*time.Second, func() bool {
		var s web.Status
		getJSON(t, http.DefaultClient, r.base+"/status", http.StatusOK, &s)
		op := s.Model.Operating
		return s.Model.Version == "0.4.0" && op != nil && op.ExpectedFalseReject != nil && *op.ExpectedFalseReject == 0.01 && s.Model.Seen.Parts > 0
	})
}
