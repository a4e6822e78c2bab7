package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/synth"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/train"
)

// fixture is a trained starter model and a production run of synthetic parts, made once.
var fixture struct {
	dir    string
	model  string
	line   string // image folder in line order
	video  string
	labels []synth.Label
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "takt-agent-test-")
	if err != nil {
		panic(err)
	}
	if err := makeFixture(dir); err != nil {
		fmt.Fprintln(os.Stderr, "agent test fixture:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func makeFixture(dir string) error {
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	trainDir := filepath.Join(dir, "train")
	if _, err := synth.Generate(synth.Options{Out: trainDir, Seed: 11, Good: 16, Layout: synth.LayoutClasses}); err != nil {
		return err
	}
	sum, err := synth.Generate(synth.Options{Out: filepath.Join(dir, "run"), Seed: 11, FirstSeq: 101, Good: 24, Defective: 8, Layout: synth.LayoutLine, Video: true})
	if err != nil {
		return err
	}
	goodDir := filepath.Join(trainDir, "good")
	src, err := camera.Open(camera.Config{ID: "train", Kind: camera.KindFolder, Path: goodDir})
	if err != nil {
		return err
	}
	defer src.Close()
	var good []camera.Frame
	for {
		f, err := src.Read(context.Background())
		if err != nil {
			break
		}
		good = append(good, f)
	}
	// The serial number and 2D code change on every part: the model must not judge them.
	m := synth.MarkingRegion(synth.RenderOptions{Seed: 11})
	w, h := float64(good[0].Width), float64(good[0].Height)
	ignore := []bundle.Region{{X0: float64(m.Min.X) / w, Y0: float64(m.Min.Y) / h, X1: float64(m.Max.X) / w, Y1: float64(m.Max.Y) / h}}
	tm, err := train.TrainTemplate(context.Background(), good, train.TemplateOptions{Name: "fixture-part", Version: "0.1.0", Ignore: ignore})
	if err != nil {
		return err
	}
	fixture.dir = dir
	fixture.model = filepath.Join(dir, "model.onnx")
	fixture.line = filepath.Join(dir, "run", "line")
	fixture.video = sum.Video
	fixture.labels = sum.Labels
	return tm.WriteFile(fixture.model)
}

func testConfig(t *testing.T) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Station = "st-test"
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Camera = camera.Config{ID: "cam0", Kind: camera.KindFolder, Path: fixture.line}
	cfg.Model.Path = fixture.model
	cfg.Deadline = 5 * time.Second // -race on 2 cores is slow; deadlines have their own test
	return cfg
}

func runAgent(t *testing.T, cfg Config) (Summary, error) {
	t.Helper()
	a, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		return Summary{}, err
	}
	err = a.Run(context.Background())
	return a.Summary(), err
}

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestRunInspectsProductionRun(t *testing.T) {
	cfg := testConfig(t)
	sum, err := runAgent(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	n := len(fixture.labels)
	if sum.Parts != n || sum.Pass+sum.Fail+sum.NoDecision != n {
		t.Fatalf("summary: got %+v, want %d parts", sum, n)
	}
	st := openStore(t, cfg.DataDir)
	counts, err := st.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if int(counts.Total) != n || int(counts.Fail) != sum.Fail || int(counts.Pass) != sum.Pass {
		t.Fatalf("store counts %+v disagree with summary %+v", counts, sum)
	}
	vs, err := st.List(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	truth := map[string]synth.Label{}
	for _, l := range fixture.labels {
		truth[strings.TrimSuffix(filepath.Base(l.File), ".png")] = l
	}
	var caught, escapes, falseRejects, noDecision int
	for _, v := range vs {
		l, ok := truth[v.Serial]
		if !ok {
			t.Fatalf("verdict %d: serial %q is not a part of the run", v.ID, v.Serial)
		}
		if v.Station != "st-test" || v.Model.Name != "fixture-part" || len(v.Model.SHA256) != 64 || v.Provider != models.ProviderCPU {
			t.Fatalf("verdict %d: got station=%s model=%+v provider=%s", v.ID, v.Station, v.Model, v.Provider)
		}
		if v.ImageRef == "" {
			t.Fatalf("verdict %d: no image kept with images.keep=all", v.ID)
		}
		if img, err := os.ReadFile(st.ImagePath(v)); err != nil || len(img) < 1000 {
			t.Fatalf("verdict %d: image %s: %d bytes, %v", v.ID, v.ImageRef, len(img), err)
		}
		switch {
		case v.Decision == store.NoDecision:
			noDecision++
		case l.Good() && v.Decision == store.Fail:
			falseRejects++
		case !l.Good() && v.Decision == store.Fail:
			caught++
		case !l.Good() && v.Decision == store.Pass:
			escapes++
		}
	}
	t.Logf("caught=%d escapes=%d false_rejects=%d no_decision=%d of %d parts", caught, escapes, falseRejects, noDecision, n)
	if noDecision != 0 {
		t.Errorf("got %d NO_DECISION verdicts on clean input, want 0", noDecision)
	}
	if escapes > 1 || falseRejects > 1 {
		t.Errorf("starter model: got %d escapes and %d false rejects, want at most 1 each", escapes, falseRejects)
	}
}

func TestRunVideoFileAndMaxParts(t *testing.T) {
	cfg := testConfig(t)
	cfg.Camera = camera.Config{ID: "cam0", Kind: camera.KindFile, Path: fixture.video, Loop: true}
	cfg.MaxParts = 40 // more than the video holds: it loops
	cfg.Images.Keep = KeepFail
	sum, err := runAgent(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sum.Parts != 40 {
		t.Fatalf("got %d parts, want 40", sum.Parts)
	}
	st := openStore(t, cfg.DataDir)
	vs, err := st.List(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if (v.ImageRef != "") != (v.Decision != store.Pass) {
			t.Fatalf("verdict %d %s: image kept=%v, want images only for FAIL/NO_DECISION", v.ID, v.Decision, v.ImageRef != "")
		}
		if !strings.HasPrefix(v.Serial, "cam0-") {
			t.Fatalf("verdict %d: serial %q, want cam0-<seq> for a video", v.ID, v.Serial)
		}
	}
}

func TestRunDeadlineGivesNoDecision(t *testing.T) {
	cfg := testConfig(t)
	cfg.Deadline = time.Nanosecond
	cfg.MaxParts = 5
	sum, err := runAgent(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sum.NoDecision != 5 || sum.Pass != 0 {
		t.Fatalf("got %+v, want 5 NO_DECISION and no PASS", sum)
	}
	vs, _ := openStore(t, cfg.DataDir).List(0, 10)
	if len(vs) != 5 || !strings.Contains(vs[0].Reason, "deadline") {
		t.Fatalf("got %d verdicts, first reason %q, want 5 with a deadline reason", len(vs), vs[0].Reason)
	}
}

func TestRunUndecodableFrameGivesNoDecision(t *testing.T) {
	dir := t.TempDir()
	entries, _ := os.ReadDir(fixture.line)
	for _, e := range entries[:3] {
		data, err := os.ReadFile(filepath.Join(fixture.line, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644)
	}
	os.WriteFile(filepath.Join(dir, entries[0].Name()+"-broken.png"), []byte("\x89PNG truncated"), 0o644)
	cfg := testConfig(t)
	cfg.Camera.Path = dir
	sum, err := runAgent(t, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sum.Parts != 4 || sum.NoDecision != 1 {
		t.Fatalf("got %+v, want 4 parts with 1 NO_DECISION", sum)
	}
}

// Bad inputs fail Run with an error naming the problem, and what was committed before stays.
func TestRunBadInputsKeepCommittedVerdicts(t *testing.T) {
	base := testConfig(t)
	base.MaxParts = 3
	if _, err := runAgent(t, base); err != nil {
		t.Fatalf("first run: %v", err)
	}
	dir := t.TempDir()
	notONNX := filepath.Join(dir, "model.onnx")
	os.WriteFile(notONNX, []byte("this is not a model"), 0o644)
	truncated := filepath.Join(dir, "truncated.onnx")
	data, _ := os.ReadFile(fixture.model)
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	notVideo := filepath.Join(dir, "line.avi")
	os.WriteFile(notVideo, []byte("not a video"), 0o644)

	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"model missing", func(c *Config) { c.Model.Path = filepath.Join(dir, "nope.onnx") }, "nope.onnx"},
		{"model not ONNX", func(c *Config) { c.Model.Path = notONNX }, "model " + notONNX},
		{"model truncated", func(c *Config) { c.Model.Path = truncated }, "model " + truncated},
		{"video unreadable", func(c *Config) { c.Camera = camera.Config{ID: "cam0", Kind: camera.KindFile, Path: notVideo} }, "not a video"},
		{"folder missing", func(c *Config) { c.Camera.Path = filepath.Join(dir, "none") }, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.change(&cfg)
			_, err := runAgent(t, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tt.want)
			}
			st := openStore(t, base.DataDir)
			c, err := st.Counts()
			if err != nil || c.Total != 3 {
				t.Fatalf("after a failed run: store holds %d verdicts (%v), want the 3 committed before", c.Total, err)
			}
			st.Close()
		})
	}
}

// The agent binary is SIGKILLed mid-run; every verdict it logged as committed must be in
// the store afterwards, with its image.
func TestCrashLosesNoCommittedVerdict(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "takt-agent")
	build := exec.Command("go", "build", "-o", bin, "./cmd/takt-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build takt-agent: %v\n%s", err, out)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	cfgYAML := fmt.Sprintf("station: st-crash\ndata_dir: %s\ncamera: {kind: folder, path: %s, loop: true}\nmodel: {path: %s}\ndeadline: 5s\nlog: {format: json}\n",
		dataDir, fixture.line, fixture.model)
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	const killAfter = 25
	var committed []uint64
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && len(committed) < killAfter {
		var line struct {
			Message string `json:"message"`
			ID      uint64 `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "part committed" {
			committed = append(committed, line.ID)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(committed) < killAfter {
		t.Fatalf("agent logged %d committed parts before it stopped, want %d", len(committed), killAfter)
	}

	st := openStore(t, dataDir)
	c, err := st.Counts()
	if err != nil {
		t.Fatal(err)
	}
	var lost []uint64
	for _, id := range committed {
		v, err := st.Get(id)
		if err != nil {
			lost = append(lost, id)
			continue
		}
		if _, err := os.Stat(st.ImagePath(v)); err != nil {
			t.Errorf("verdict %d: image missing after crash: %v", id, err)
		}
	}
	t.Logf("killed after %d logged commits; store holds %d verdicts; lost %d", len(committed), c.Total, len(lost))
	if len(lost) != 0 {
		t.Fatalf("lost %d committed verdicts: %v", len(lost), lost)
	}
	if c.Total < uint64(len(committed)) {
		t.Fatalf("store holds %d verdicts, fewer than the %d logged", c.Total, len(committed))
	}
}
