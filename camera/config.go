package camera

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Kinds of source Open understands.
const (
	KindFolder = "folder" // sorted image files in a folder, for replay and tests
	KindFile   = "file"   // a video file
)

// Config chooses and configures one source.
type Config struct {
	// ID names the camera in frames, verdicts and logs. Default "cam0".
	ID string `yaml:"id"`
	// Kind is "folder" or "file".
	Kind string `yaml:"kind"`
	// Path is the image folder or the video file.
	Path string `yaml:"path"`
	// Loop restarts a folder or file from the beginning at its end instead of returning io.EOF.
	Loop bool `yaml:"loop"`
	// FPS paces a folder or file like a line running at that many parts per second;
	// 0 reads as fast as the consumer asks.
	FPS float64 `yaml:"fps"`
}

// DefaultConfig is a folder source with id cam0 and no path.
func DefaultConfig() Config {
	return Config{ID: "cam0", Kind: KindFolder}
}

// ImageExtensions are the file endings a folder source reads, case-insensitive.
var ImageExtensions = []string{".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

// Validate checks the config without touching the device or file.
func (c Config) Validate() error {
	if strings.TrimSpace(c.ID) == "" {
		return fmt.Errorf("camera.id: must not be empty")
	}
	switch c.Kind {
	case KindFolder, KindFile:
	default:
		return fmt.Errorf("camera.kind: %q is not a source kind (allowed: %s, %s)", c.Kind, KindFolder, KindFile)
	}
	if strings.TrimSpace(c.Path) == "" {
		return fmt.Errorf("camera.path: must name the %s to read", map[string]string{KindFolder: "image folder", KindFile: "video file"}[c.Kind])
	}
	if c.FPS < 0 {
		return fmt.Errorf("camera.fps: %v must be >= 0 (0 reads as fast as possible)", c.FPS)
	}
	return nil
}

// pacer spaces reads 1/fps apart.
type pacer struct {
	interval time.Duration
	next     time.Time
}

func newPacer(fps float64) pacer {
	if fps <= 0 {
		return pacer{}
	}
	return pacer{interval: time.Duration(float64(time.Second) / fps)}
}

// wait blocks until the next frame is due or ctx is done.
func (p *pacer) wait(ctx context.Context) error {
	if p.interval == 0 {
		return nil
	}
	now := time.Now()
	if p.next.After(now) {
		t := time.NewTimer(p.next.Sub(now))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		now = p.next
	}
	p.next = now.Add(p.interval)
	return nil
}
