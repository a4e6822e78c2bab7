package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/camera/cameratest"
)

func TestLoadConfigCameras(t *testing.T) {
	cfg, err := LoadConfig("../testdata/config/cameras.yml")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	cams := cfg.CameraConfigs()
	if len(cams) != 4 {
		t.Fatalf("got %d cameras, want 4", len(cams))
	}
	abs, _ := filepath.Abs("../testdata/config/line")
	checks := []struct {
		name      string
		got, want any
	}{
		{"top kind", cams[0].Kind, camera.KindDevice},
		{"top exposure", *cams[0].Exposure, 150.0},
		{"top mode", cams[0].Mode, camera.ModeTriggered},
		{"top trigger_window", cams[0].TriggerWindow, 50 * time.Millisecond},
		{"side url", cams[1].URL, "rtsp://10.0.0.21:554/stream1"},
		{"side read_timeout", cams[1].ReadTimeout, time.Second},
		{"gige kind", cams[2].Kind, camera.KindGStreamer},
		{"replay path resolved against the file", mustAbs(t, cams[3].Path), abs},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	one := DefaultConfig()
	one.Camera.Path = "x"
	if got := one.CameraConfigs(); len(got) != 1 || got[0].Path != "x" {
		t.Errorf("camera: alone: got %+v, want the one camera", got)
	}
}

// commitLog turns the agent's "part committed" log lines into a channel of serials.
type commitLog struct{ ch chan store.Verdict }

func (c commitLog) Write(p []byte) (int, error) {
	var line struct {
		Message string `json:"message"`
		Serial  string `json:"serial"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
	}
	if json.Unmarshal(p, &line) == nil && line.Message == "part committed" {
		select {
		case c.ch <- store.Verdict{Serial: line.Serial, Decision: line.Verdict, Reason: line.Reason}:
		default:
		}
	}
	return len(p), nil
}

// A real RTSP stream freezes and dies under a running agent: the agent neither hangs nor
// stops nor records a part while no frame can be had, and it resumes inspecting once the
// camera has reconnected.
func TestRunSurvivesRTSPOutage(t *testing.T) {
	srv := cameratest.StartRTSP(t, 0)
	cfg := testConfig(t)
	cfg.Camera = camera.Config{ID: "top", Kind: camera.KindURL, URL: srv.URL(), Mode: camera.ModeFreeRun,
		ReadTimeout: time.Second, OpenTimeout: 5 * time.Second, ReconnectMin: 100 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
	cfg.Images.Keep = KeepNone
	commits := commitLog{ch: make(chan store.Verdict, 1000)}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), commits))
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	next := func(within time.Duration) (store.Verdict, bool) {
		select {
		case v := <-commits.ch:
			return v, true
		case err := <-done:
			t.Fatalf("Run returned during the test: %v", err)
		case <-time.After(within):
		}
		return store.Verdict{}, false
	}
	for i := range 3 {
		if _, ok := next(20 * time.Second); !ok {
			t.Fatalf("part %d before the outage: none committed", i)
		}
	}
	srv.Freeze()
	// Drain what was in flight, then expect silence: no part without a frame.
	time.Sleep(1500 * time.Millisecond)
	for len(commits.ch) > 0 {
		<-commits.ch
	}
	if v, ok := next(time.Second); ok {
		t.Fatalf("a part was committed while the stream was frozen: %+v", v)
	}
	srv.Restart()
	v, ok := next(20 * time.Second)
	if !ok {
		t.Fatalf("no part committed within 20s after the stream came back")
	}
	if !strings.HasPrefix(v.Serial, "top-") || v.Decision == store.NoDecision {
		t.Fatalf("part after the reconnect: got serial %q verdict %s (%s), want top-<seq> with a decision", v.Serial, v.Decision, v.Reason)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run did not return within 5s of cancel")
	}
}

// Triggers while the stream is gone get NO_DECISION with the reason, never a PASS; after the
// stream is back, triggers get decisions again.
func TestTriggersDuringRTSPOutage(t *testing.T) {
	srv := cameratest.StartRTSP(t, 0)
	cfg := testConfig(t)
	cfg.Camera = camera.Config{ID: "top", Kind: camera.KindURL, URL: srv.URL(), Mode: camera.ModeTriggered,
		ReadTimeout: time.Second, OpenTimeout: 5 * time.Second, ReconnectMin: 100 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
	cfg.Images.Keep = KeepNone
	a, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	trigger := func(serial string) store.Verdict {
		t.Helper()
		tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
		defer tcancel()
		for {
			v, err := a.Trigger(tctx, serial)
			if errors.Is(err, ErrNotRunning) && tctx.Err() == nil {
				time.Sleep(50 * time.Millisecond) // Run is still opening the camera
				continue
			}
			if err != nil {
				t.Fatalf("trigger %s: %v", serial, err)
			}
			return v
		}
	}
	if v := trigger("before-1"); v.Decision == store.NoDecision || v.Serial != "before-1" {
		t.Fatalf("trigger before the outage: got %s %q (%s), want a decision for before-1", v.Decision, v.Serial, v.Reason)
	}
	srv.Freeze()
	var gap []store.Verdict
	for i := range 3 {
		gap = append(gap, trigger(fmt.Sprintf("gap-%d", i)))
	}
	for _, v := range gap {
		if v.Decision != store.NoDecision || v.Reason == "" {
			t.Fatalf("trigger %s during the outage: got %s (%q), want NO_DECISION with a reason", v.Serial, v.Decision, v.Reason)
		}
	}
	srv.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := trigger("after")
		if v.Decision != store.NoDecision {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision within 20s after the stream came back; last: %s", v.Reason)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("outage reasons: %q", gap[0].Reason)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
