package agent

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigGood(t *testing.T) {
	t.Setenv("TAKT_DATA_DIR", "")
	cfg, err := LoadConfig("../testdata/config/good.yml")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	abs, _ := filepath.Abs("../testdata/config/model.onnx")
	checks := []struct {
		name      string
		got, want any
	}{
		{"station", cfg.Station, "st-07"},
		{"camera.id", cfg.Camera.ID, "top"},
		{"camera.kind", cfg.Camera.Kind, "file"},
		{"camera.path", cfg.Camera.Path, "/srv/line3.avi"},
		{"model.path resolved against the file", mustAbs(t, cfg.Model.Path), abs},
		{"model.threshold", cfg.Model.Threshold, 3.5},
		{"deadline", cfg.Deadline, 250 * time.Millisecond},
		{"images.keep", cfg.Images.Keep, KeepFail},
		{"images.format", cfg.Images.Format, "png"},
		{"log.format", cfg.Log.Format, "json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLoadConfigDefaultsAndEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("model: {path: m.onnx}\ncamera: {path: images}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TAKT_DATA_DIR", "/data/takt")
	t.Setenv("TAKT_STATION", "st-env")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	def := DefaultConfig()
	if cfg.DataDir != "/data/takt" || cfg.Station != "st-env" {
		t.Errorf("env overrides: got data_dir=%s station=%s, want /data/takt st-env", cfg.DataDir, cfg.Station)
	}
	if cfg.Deadline != def.Deadline || cfg.Images != def.Images || cfg.Camera.Kind != "folder" || cfg.Camera.ID != "cam0" {
		t.Errorf("defaults: got deadline=%v images=%+v camera=%+v", cfg.Deadline, cfg.Images, cfg.Camera)
	}
	if want := filepath.Join(filepath.Dir(path), "images"); cfg.Camera.Path != want {
		t.Errorf("camera.path: got %s, want %s", cfg.Camera.Path, want)
	}
}

// Each testdata/config/*.bad.yml starts with "# error: <text the error must contain>".
func TestLoadConfigBad(t *testing.T) {
	files, err := filepath.Glob("../testdata/config/*.bad.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want := expectedError(t, f)
			_, err := LoadConfig(f)
			if err == nil {
				t.Fatalf("LoadConfig: got no error, want %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("LoadConfig:\n got %q\nwant it to contain %q", err, want)
			}
			if !strings.Contains(err.Error(), f) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func expectedError(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "# error: ") {
		t.Fatalf("%s: first line must be '# error: ...'", path)
	}
	return strings.TrimPrefix(sc.Text(), "# error: ")
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("got %v, want an error naming nope.yaml", err)
	}
}

func TestLoadConfigSparkplug(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "takt.yml")
	os.WriteFile(path, []byte("station: st-7\nmodel: {path: m.onnx}\ncamera: {kind: folder, path: ., id: cam-a}\n"+
		"mqtt: {broker: \"tcp://broker:1883\", sparkplug: true}\n"), 0o644)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	sp := cfg.MQTT.sparkplug(cfg.Station, cfg.Camera.ID, "bdseq")
	if !sp.Enabled || sp.Group != "takt" || sp.Node != "st-7" || len(sp.Devices) != 1 || sp.Devices[0] != "cam-a" {
		t.Errorf("sparkplug settings %+v, want group takt, node st-7, device cam-a", sp)
	}
}
