package wire

import (
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		err  bool
	}{
		{"1048576", 1 << 20, false}, {"8GiB", 8 << 30, false}, {"1.5GB", 1_500_000_000, false},
		{"200MB", 200_000_000, false}, {"64kB", 64_000, false}, {"512 KiB", 512 << 10, false},
		{"10b", 10, false}, {"", 0, true}, {"ten", 0, true}, {"-1MB", 0, true}, {"1e30TB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
	var v struct {
		Q ByteSize `yaml:"q"`
	}
	if err := yaml.Unmarshal([]byte("q: 2GiB\n"), &v); err != nil || v.Q != 2<<30 {
		t.Errorf("yaml q: 2GiB = %d, %v; want %d", v.Q, err, 2<<30)
	}
	if s := ByteSize(8 << 30).String(); s != "8GiB" {
		t.Errorf("String() = %q, want 8GiB", s)
	}
}

func TestKeys(t *testing.T) {
	at := time.Date(2026, 1, 2, 23, 30, 0, 0, time.FixedZone("X", -3600)) // 2026-01-03 UTC
	if got, want := ImageKey("st-1", at, 42, "jpg"), "images/st-1/2026/01/03/0000000000000042.jpg"; got != want {
		t.Errorf("ImageKey = %q, want %q", got, want)
	}
	if got, want := VerdictBatchKey("line/3 st", at, 1, 64), "verdicts/line_3_st/2026/01/03/0000000000000001-0000000000000064.jsonl"; got != want {
		t.Errorf("VerdictBatchKey = %q, want %q", got, want)
	}
}
