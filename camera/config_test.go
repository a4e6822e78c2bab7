package camera

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	f := 1.5
	tests := []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"folder", Config{ID: "c", Kind: KindFolder, Path: "imgs"}, ""},
		{"device index", Config{ID: "c", Kind: KindDevice, Device: "0", Width: 1280, Height: 720, FPS: 30, PixelFormat: "MJPG", Exposure: &f}, ""},
		{"device path", Config{ID: "c", Kind: KindDevice, Device: "/dev/video2"}, ""},
		{"url udp", Config{ID: "c", Kind: KindURL, URL: "rtsp://10.0.0.5/stream1", Transport: "udp", Mode: ModeTriggered}, ""},
		{"gstreamer", Config{ID: "c", Kind: KindGStreamer, Pipeline: "aravissrc ! videoconvert ! appsink"}, ""},
		{"unknown kind", Config{ID: "c", Kind: "usb"}, `camera.kind: "usb" is not a source kind (allowed: folder, file, device, url, gstreamer)`},
		{"no id", Config{Kind: KindFolder, Path: "x"}, "camera.id: must not be empty"},
		{"device missing", Config{ID: "c", Kind: KindDevice}, "camera.device: must name the V4L2 device"},
		{"device bad", Config{ID: "c", Kind: KindDevice, Device: "video0"}, `camera.device: "video0" is neither an index`},
		{"fourcc", Config{ID: "c", Kind: KindDevice, Device: "0", PixelFormat: "MJPEG"}, "camera.pixel_format: \"MJPEG\" is not a FOURCC"},
		{"url scheme", Config{ID: "c", Kind: KindURL, URL: "10.0.0.5/stream"}, "camera.url: \"10.0.0.5/stream\" has no stream scheme"},
		{"url with path", Config{ID: "c", Kind: KindURL, URL: "rtsp://x/y", Path: "z"}, "camera.path: not used by kind url (it reads camera.url)"},
		{"no appsink", Config{ID: "c", Kind: KindGStreamer, Pipeline: "videotestsrc ! autovideosink"}, "camera.pipeline: must end in appsink"},
		{"exposure on url", Config{ID: "c", Kind: KindURL, URL: "rtsp://x/y", Exposure: &f}, "camera.exposure: only a device camera takes it"},
		{"transport", Config{ID: "c", Kind: KindURL, URL: "rtsp://x/y", Transport: "quic"}, `camera.transport: "quic" is not one of tcp, udp`},
		{"loop live", Config{ID: "c", Kind: KindURL, URL: "rtsp://x/y", Loop: true}, "camera.loop: only folder and file sources end"},
		{"mode", Config{ID: "c", Kind: KindFolder, Path: "x", Mode: "burst"}, `camera.mode: "burst" is not one of stream, free_run, triggered`},
		{"ring", Config{ID: "c", Kind: KindFolder, Path: "x", Ring: 1000}, "camera.ring: 1000 is not in 0..256"},
		{"timeout", Config{ID: "c", Kind: KindFolder, Path: "x", ReadTimeout: -time.Second}, "camera.read_timeout: -1s must be >= 0"},
		{"backoff", Config{ID: "c", Kind: KindFolder, Path: "x", ReconnectMin: time.Second, ReconnectMax: time.Millisecond}, "camera.reconnect_max: 1ms is below reconnect_min 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: got %v, want %q", err, tt.want)
			}
		})
	}
	if err := (Config{Kind: KindFolder, Path: "x"}).ValidateKey("cameras[2]"); err == nil || !strings.HasPrefix(err.Error(), "cameras[2].id:") {
		t.Fatalf("ValidateKey: got %v, want the key cameras[2].id", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	live := Config{ID: "c", Kind: KindURL, URL: "rtsp://x/y"}.withDefaults()
	if live.Mode != ModeFreeRun || live.Transport != TransportTCP || live.ReadTimeout != DefaultReadTimeout || live.Ring != DefaultRing {
		t.Fatalf("url defaults: got mode=%s transport=%s read_timeout=%v ring=%d", live.Mode, live.Transport, live.ReadTimeout, live.Ring)
	}
	if m := (Config{ID: "c", Kind: KindFile, Path: "v.avi"}).withDefaults().Mode; m != ModeStream {
		t.Fatalf("file default mode: got %s, want stream", m)
	}
}
