//go:build !cgo

package synth

import (
	"errors"
	"testing"
)

func TestNoCgo(t *testing.T) {
	if _, _, err := RenderPart(RenderOptions{}, 1, None); !errors.Is(err, ErrNoCgo) {
		t.Errorf("RenderPart = %v, want ErrNoCgo", err)
	}
	dir := t.TempDir()
	if _, err := Generate(Options{Out: dir, Good: 1}); !errors.Is(err, ErrNoCgo) {
		t.Errorf("Generate = %v, want ErrNoCgo", err)
	}
}
