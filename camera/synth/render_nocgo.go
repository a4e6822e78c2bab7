//go:build !cgo

package synth

import "image"

const haveCgo = false

func render(*scene) ([]byte, error) { return nil, ErrNoCgo }

func openVideo(string, int, int, float64) (videoSink, error) { return nil, ErrNoCgo }

func probeVideo(string) (int, image.Point, error) { return 0, image.Point{}, ErrNoCgo }
