package agent

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// withConfigStep adds a config migration for one test (the tests that parse configs while
// it is in place are this test's own: it does not run in parallel).
func withConfigStep(t *testing.T, step configStep) {
	t.Helper()
	saved := slices.Clone(configSteps)
	configSteps = append(configSteps, step)
	t.Cleanup(func() { configSteps = saved })
}

const v1Config = `# station 7, line 3
station: st-07
model: {path: /srv/m.onnx}
camera: {path: /srv/images}
images:
  store_images: fail # only rejects
`

// A release that renames images.store_images to images.keep: an older file is migrated in
// memory on load and written by MigrateConfig with its comments, once.
func TestMigrateConfigRename(t *testing.T) {
	if _, err := ParseConfig([]byte(v1Config)); err == nil || !strings.Contains(err.Error(), "unknown key images.store_images") {
		t.Fatalf("before the step exists: %v, want unknown key images.store_images", err)
	}
	next := CurrentConfigVersion() + 1
	withConfigStep(t, configStep{to: next, name: "images.store_images is images.keep", apply: func(root *yaml.Node) error {
		return renameKey(root, []string{"images", "store_images"}, "keep")
	}})
	out, m, err := MigrateConfig([]byte(v1Config))
	if err != nil {
		t.Fatal(err)
	}
	if m.From != 1 || m.To != next || !slices.Equal(m.Steps, []string{"images.store_images is images.keep"}) {
		t.Errorf("migration %+v, want 1 -> %d by the rename", m, next)
	}
	for _, want := range []string{"config_version: 2", "keep: fail # only rejects", "# station 7, line 3"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("migrated file lacks %q:\n%s", want, out)
		}
	}
	cfg, err := ParseConfig([]byte(v1Config))
	if err != nil {
		t.Fatalf("ParseConfig of the old file: %v", err)
	}
	if cfg.Images.Keep != KeepFail || cfg.ConfigVersion != next || cfg.Validate() != nil {
		t.Errorf("old file in memory: keep %q, config_version %d, validate %v; want fail, %d, valid", cfg.Images.Keep, cfg.ConfigVersion, cfg.Validate(), next)
	}
	again, m2, err := MigrateConfig(out)
	if err != nil || string(again) != string(out) || m2.From != next || len(m2.Steps) != 0 {
		t.Errorf("migrating the migrated file: %v, changed %v, %+v; want unchanged", err, string(again) != string(out), m2)
	}
	both := strings.Replace(v1Config, "images:\n", "images:\n  keep: all\n", 1)
	if _, _, err := MigrateConfig([]byte(both)); err == nil || !strings.Contains(err.Error(), "both store_images and its new name keep are set") {
		t.Errorf("old and new name both set: %v, want an error naming both", err)
	}
}

// A file without config_version is version 1 and is left byte for byte; a newer or a
// malformed version is refused with a message naming it.
func TestMigrateConfigVersions(t *testing.T) {
	out, m, err := MigrateConfig([]byte(v1Config))
	if err != nil || string(out) != v1Config || m.From != 1 || m.To != CurrentConfigVersion() {
		t.Errorf("current file: %v, %+v, changed %v; want unchanged at version 1", err, m, string(out) != v1Config)
	}
	cases := []struct{ data, want string }{
		{"config_version: 9\nstation: x\n", "config_version 9, this agent reads config versions up to 1"},
		{"config_version: 0\n", `config_version: "0" is not a version number`},
		{"config_version: [1]\n", "is not a version number"},
		{"- a\n", "line 1: the top level must be a mapping"},
		{"", "empty file"},
	}
	for _, c := range cases {
		_, _, err := MigrateConfig([]byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("MigrateConfig(%q): %v, want %q", c.data, err, c.want)
		}
	}
	if _, _, err := MigrateConfig([]byte("config_version: 9\n")); !errors.Is(err, ErrConfigTooNew) {
		t.Errorf("newer version: %v, want ErrConfigTooNew", err)
	}
}
