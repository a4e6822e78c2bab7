package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

// fixtureThreshold is the threshold the fixture model carries.
func fixtureThreshold(t *testing.T) float64 {
	t.Helper()
	rt, err := models.LoadRuntime(fixture.model, models.RuntimeOptions{Warmup: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	return rt.Info().Threshold
}

// Several models score every frame: a part FAILs when any model fails it, and the verdict
// names the deciding model and keeps every model's outcome.
func TestRunSeveralModelsPerFrame(t *testing.T) {
	th := fixtureThreshold(t)
	single := testConfig(t)
	if _, err := runAgent(t, single); err != nil {
		t.Fatalf("single-model run: %v", err)
	}
	want := map[string]string{}
	vs, err := openStore(t, single.DataDir).List(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		want[v.Serial] = v.Decision
	}

	cases := []struct {
		name    string
		models  []ModelConfig
		decider func(single string) (decision, model string)
	}{
		{"strict model decides, lenient never fails",
			[]ModelConfig{{Name: "lenient", Path: fixture.model, Threshold: th * 1e6}, {Name: "body", Path: fixture.model}},
			func(single string) (string, string) {
				if single == store.Fail {
					return store.Fail, "body"
				}
				return store.Pass, ""
			}},
		{"one model fails every part",
			[]ModelConfig{{Name: "body", Path: fixture.model}, {Name: "hair-trigger", Path: fixture.model, Threshold: 1e-9}},
			func(string) (string, string) { return store.Fail, "hair-trigger" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Model = ModelConfig{}
			cfg.Models = tc.models
			sum, err := runAgent(t, cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if sum.Parts != len(want) {
				t.Fatalf("got %d parts, want %d", sum.Parts, len(want))
			}
			vs, err := openStore(t, cfg.DataDir).List(0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				dec, by := tc.decider(want[v.Serial])
				if v.Decision != dec {
					t.Fatalf("part %s: got %s, want %s (single model said %s)", v.Serial, v.Decision, dec, want[v.Serial])
				}
				if len(v.Models) != 2 || v.Models[0].Name != tc.models[0].Name || v.Models[1].Name != tc.models[1].Name {
					t.Fatalf("part %s: got model outcomes %+v, want one per model in config order", v.Serial, v.Models)
				}
				for _, o := range v.Models {
					if o.Score == nil || o.Provider != models.ProviderCPU || o.Model.Name != "fixture-part" {
						t.Fatalf("part %s: model outcome %+v lacks score, provider or model", v.Serial, o)
					}
				}
				if by != "" && !strings.HasPrefix(v.Reason, by+": ") {
					t.Fatalf("part %s: reason %q does not name the deciding model %s", v.Serial, v.Reason, by)
				}
				if by == "hair-trigger" && v.Threshold != 1e-9 {
					t.Fatalf("part %s: threshold %v is not the deciding model's", v.Serial, v.Threshold)
				}
			}
		})
	}
}

func TestModelsConfigErrors(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.Camera = camera.Config{ID: "cam0", Kind: camera.KindFolder, Path: "/tmp"}
		return c
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"model and models", func(c *Config) {
			c.Model.Path = "a.onnx"
			c.Models = []ModelConfig{{Name: "a", Path: "a.onnx"}}
		}, "model and models: set one"},
		{"missing name", func(c *Config) { c.Models = []ModelConfig{{Path: "a.onnx"}} }, "models[0].name"},
		{"duplicate name", func(c *Config) {
			c.Models = []ModelConfig{{Name: "a", Path: "a.onnx"}, {Name: "a", Path: "b.onnx"}}
		}, `models[1].name: "a" is also models[0].name`},
		{"entry without model", func(c *Config) { c.Models = []ModelConfig{{Name: "a"}} }, "models[0].path: must name"},
		{"negative threshold", func(c *Config) {
			c.Models = []ModelConfig{{Name: "a", Path: "a.onnx", Threshold: -1}}
		}, "models[0].threshold"},
	}
	for _, tc := range cases {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// A replaced model keeps serving the parts that hold it and closes after the last one.
func TestActiveModelsReplaceWaitsForInFlightParts(t *testing.T) {
	load := func(name string) *stationModel {
		rt, err := models.LoadRuntime(fixture.model, models.RuntimeOptions{Warmup: -1})
		if err != nil {
			t.Fatal(err)
		}
		m, err := newStationModel(name, fixture.model, rt, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	old := load("body")
	h := newActiveModels([]*stationModel{old})
	frame := fixtureFrame(t)

	held, release := h.acquire()
	next := load("body")
	prev, err := h.replace("body", next)
	if err != nil || prev != old {
		t.Fatalf("replace: got %v, %v; want the old model", prev, err)
	}
	if _, err := held.models[0].rt.Infer(context.Background(), frame); err != nil {
		t.Fatalf("in-flight part on the replaced model: %v", err)
	}
	now, releaseNow := h.acquire()
	if now.models[0] != next {
		t.Fatal("a part acquired after replace does not get the new model")
	}
	releaseNow()
	release()
	if _, err := old.rt.Infer(context.Background(), frame); err == nil {
		t.Fatal("the replaced model still runs after its last part released it; want it closed")
	}
	stray := load("nope")
	if _, err := h.replace("nope", stray); err == nil {
		t.Fatal("replace of an unknown model name: got nil error")
	}
	stray.release()
	h.close()
	if _, err := next.rt.Infer(context.Background(), frame); err == nil {
		t.Fatal("active model still runs after close")
	}
}

func fixtureFrame(t *testing.T) camera.Frame {
	t.Helper()
	src, err := camera.Open(camera.Config{ID: "cam0", Kind: camera.KindFolder, Path: fixture.line})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.Time = time.Now()
	return f
}
