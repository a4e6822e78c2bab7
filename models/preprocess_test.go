//go:build cgo

package models

import (
	"errors"
	"strings"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models/bundle"
)

func TestPreprocess(t *testing.T) {
	gray := func(w, h int, pix ...byte) camera.Frame {
		return camera.Frame{Width: w, Height: h, Channels: 1, Pix: pix}
	}
	bgr := func(w, h int, pix ...byte) camera.Frame {
		return camera.Frame{Width: w, Height: h, Channels: 3, Pix: pix}
	}
	tests := []struct {
		name  string
		frame camera.Frame
		in    bundle.InputShape
		want  []byte // expected values * 255
	}{
		{"gray, model size", gray(2, 2, 0, 51, 204, 255), bundle.InputShape{Channels: 1, Height: 2, Width: 2}, []byte{0, 51, 204, 255}},
		{"gray, INTER_AREA 2x down", gray(4, 2, 0, 10, 100, 110, 20, 30, 120, 130), bundle.InputShape{Channels: 1, Height: 1, Width: 2}, []byte{15, 115}},
		{"BGR to gray", bgr(3, 1, 255, 0, 0, 0, 255, 0, 0, 0, 255), bundle.InputShape{Channels: 1, Height: 1, Width: 3}, []byte{29, 150, 76}},
		{"BGR to RGB planes", bgr(2, 1, 1, 2, 3, 4, 5, 6), bundle.InputShape{Channels: 3, Height: 1, Width: 2}, []byte{3, 6, 2, 5, 1, 4}},
		{"BGR to RGB planes, 2x down", bgr(2, 2, 10, 20, 30, 10, 20, 30, 30, 40, 50, 30, 40, 50), bundle.InputShape{Channels: 3, Height: 1, Width: 1}, []byte{40, 30, 20}},
		{"gray into three planes", gray(1, 2, 7, 9), bundle.InputShape{Channels: 3, Height: 2, Width: 1}, []byte{7, 9, 7, 9, 7, 9}},
		{"gray into three planes, resized", gray(2, 2, 7, 7, 9, 9), bundle.InputShape{Channels: 3, Height: 1, Width: 1}, []byte{8, 8, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]float32, tt.in.Len())
			if err := Preprocess(tt.frame, tt.in, dst); err != nil {
				t.Fatalf("Preprocess: %v", err)
			}
			for i, w := range tt.want {
				if dst[i] != float32(w)/255 {
					t.Fatalf("value %d: got %v (x255 = %v), want %v/255; all: %v", i, dst[i], dst[i]*255, w, dst)
				}
			}
		})
	}
}

func TestPreprocessErrors(t *testing.T) {
	tests := []struct {
		name   string
		frame  camera.Frame
		in     bundle.InputShape
		dstLen int
		wantIs error
		want   string
	}{
		{"two channels", camera.Frame{Width: 1, Height: 1, Channels: 2, Pix: []byte{1, 2}}, bundle.InputShape{Channels: 1, Height: 1, Width: 1}, 1, ErrBadFrame, "2 channels"},
		{"short Pix", camera.Frame{Width: 4, Height: 4, Channels: 3, Pix: make([]byte, 47)}, bundle.InputShape{Channels: 1, Height: 1, Width: 1}, 1, ErrBadFrame, "4x4x3 needs 48 bytes, Pix has 47"},
		{"empty frame", camera.Frame{Channels: 1}, bundle.InputShape{Channels: 1, Height: 1, Width: 1}, 1, ErrBadFrame, "size 0x0"},
		{"dst too short", camera.Frame{Width: 1, Height: 1, Channels: 1, Pix: []byte{1}}, bundle.InputShape{Channels: 1, Height: 2, Width: 2}, 3, nil, "dst holds 3 values, input gray 1x1x2x2 scale=1/255 needs 4"},
		{"bad input shape", camera.Frame{Width: 1, Height: 1, Channels: 1, Pix: []byte{1}}, bundle.InputShape{Channels: 2, Height: 1, Width: 1}, 2, nil, "input channels 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Preprocess(tt.frame, tt.in, make([]float32, tt.dstLen))
			if err == nil || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Preprocess error: got %v, want %v containing %q", err, tt.wantIs, tt.want)
			}
		})
	}
}
