package strictyaml

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type conn struct {
	Broker    string        `yaml:"broker"`
	KeepAlive time.Duration `yaml:"keepalive"`
}

type item struct {
	ID string `yaml:"id"`
}

type config struct {
	conn    `yaml:",inline"`
	Site    string            `yaml:"site"`
	Items   []item            `yaml:"items"`
	ByName  map[string]item   `yaml:"by_name"`
	Options yaml.Node         `yaml:"options"`
	When    time.Time         `yaml:"when"`
	Env     map[string]string `yaml:"env"`
	Skipped string            `yaml:"-"`
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		name, doc string
		wantErr   string // substring; "" means success
	}{
		{"inline keys", "broker: tcp://b:1883\nkeepalive: 5s\nsite: s\n", ""},
		{"opaque values", "options: {anything: 1}\nwhen: 2026-01-02T03:04:05Z\nenv: {A: b}\n", ""},
		{"unknown top key", "broker: b\nsiet: s\n", "line 2: unknown key siet (allowed: broker, keepalive, site, items, by_name, options, when, env)"},
		{"unknown in a list", "items:\n  - id: a\n  - idd: b\n", "line 3: unknown key items[1].idd (allowed: id)"},
		{"unknown in a map value", "by_name:\n  x: {id: a, di: b}\n", "line 2: unknown key by_name.x.di (allowed: id)"},
		{"given twice", "site: a\nsite: b\n", "line 2: key site given twice"},
		{"skipped field", "skipped: x\n", "unknown key skipped"},
		{"empty", "  \n", "empty file"},
		{"not a mapping", "- a\n", "line 1: the top level must be a mapping of keys"},
		{"bad type", "keepalive: soon\n", "line 1: cannot unmarshal !!str `soon` into time.Duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config{Site: "default"}
			err := Unmarshal([]byte(tt.doc), &c)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// Decoding keeps the values whose keys are absent, and an inline struct's
// keys land in it.
func TestUnmarshalOverDefaults(t *testing.T) {
	c := config{Site: "default", conn: conn{KeepAlive: time.Minute}}
	if err := Unmarshal([]byte("broker: b\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Broker != "b" || c.KeepAlive != time.Minute || c.Site != "default" {
		t.Errorf("got %+v; want broker b over keepalive 1m and site default", c)
	}
}

// A node kept for later is checked when it is decoded, with its lines in the
// file.
func TestDecodeNode(t *testing.T) {
	var c config
	if err := Unmarshal([]byte("site: s\noptions:\n  id: a\n  idd: b\n"), &c); err != nil {
		t.Fatal(err)
	}
	var it item
	if err := Decode(&c.Options, &it); err == nil || !strings.Contains(err.Error(), "line 4: unknown key idd (allowed: id)") {
		t.Errorf("got %v, want line 4: unknown key idd", err)
	}
	if err := Decode(&yaml.Node{}, &it); err != nil || it.ID != "" {
		t.Errorf("absent node: got %+v, %v; want it unchanged", it, err)
	}
}
