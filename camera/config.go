package camera

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kinds of source Open understands.
const (
	KindFolder    = "folder"    // sorted image files in a folder, for replay and tests
	KindFile      = "file"      // a video file
	KindDevice    = "device"    // a V4L2 camera: index or /dev/videoN
	KindURL       = "url"       // an RTSP or HTTP stream, through OpenCV's FFmpeg backend
	KindGStreamer = "gstreamer" // a GStreamer pipeline ending in appsink (GigE, Jetson CSI)
)

// Capture modes; see the package doc.
const (
	ModeStream    = "stream"    // every frame in order (default for folder and file)
	ModeFreeRun   = "free_run"  // latest frame wins (default for device, url, gstreamer)
	ModeTriggered = "triggered" // one frame per Trigger
)

// Transports for an RTSP URL.
const (
	TransportTCP = "tcp" // RTSP interleaved over the TCP connection (OpenCV's default)
	TransportUDP = "udp"
)

// Defaults applied by Open where a Config leaves a value at zero.
const (
	DefaultReadTimeout  = 2 * time.Second
	DefaultOpenTimeout  = 10 * time.Second
	DefaultReconnectMin = 250 * time.Millisecond
	DefaultReconnectMax = 10 * time.Second
	DefaultRing         = 4
	// MaxPendingTriggers is how many triggers may wait for frames on one camera.
	MaxPendingTriggers = 64
)

// Config chooses and configures one camera. Zero values mean the documented default, so
// an entry of a station's `cameras:` list needs only id, kind and the source's own key.
type Config struct {
	// ID names the camera in frames, verdicts and logs. Default "cam0".
	ID string `yaml:"id"`
	// Kind is folder, file, device, url or gstreamer.
	Kind string `yaml:"kind"`
	// Path is the image folder (folder) or the video file (file).
	Path string `yaml:"path"`
	// Device is the V4L2 camera (device): an index such as "0" or a path such as /dev/video2.
	Device string `yaml:"device"`
	// URL is the stream (url): rtsp://, rtsps://, http:// or https:// (MJPEG, MPEG-TS, HLS).
	URL string `yaml:"url"`
	// Transport is the RTSP transport (url): "tcp" (default) or "udp".
	Transport string `yaml:"transport"`
	// Pipeline is the GStreamer pipeline (gstreamer); it must end in an appsink that gives
	// BGR or GRAY8 frames, e.g. "... ! videoconvert ! video/x-raw,format=BGR ! appsink
	// drop=true max-buffers=1 sync=false".
	Pipeline string `yaml:"pipeline"`

	// Width, Height, FPS and PixelFormat (a FOURCC such as MJPG or YUYV) ask a device for a
	// video mode; 0 or "" keeps the driver's. For folder and file, FPS paces the replay like a
	// line running at that many parts per second (0 reads as fast as the consumer asks).
	Width       int     `yaml:"width"`
	Height      int     `yaml:"height"`
	FPS         float64 `yaml:"fps"`
	PixelFormat string  `yaml:"pixel_format"`
	// Exposure (driver units; turns auto exposure off), Gain and WhiteBalance (Kelvin; turns
	// auto white balance off) are set on a device where the driver supports them; unset
	// keeps the driver's. Each setting the driver refuses is logged and listed in
	// Stats.Refused.
	Exposure     *float64 `yaml:"exposure"`
	Gain         *float64 `yaml:"gain"`
	WhiteBalance *float64 `yaml:"white_balance"`

	// Loop restarts a folder or file from the beginning at its end instead of returning io.EOF.
	Loop bool `yaml:"loop"`

	// Mode is stream, free_run or triggered; empty means stream for folder and file,
	// free_run for the live kinds.
	Mode string `yaml:"mode"`
	// Ring is how many recent frames free_run and triggered mode keep. Default 4.
	Ring int `yaml:"ring"`
	// TriggerWindow (triggered): 0 answers a trigger with the first frame captured after it;
	// a positive window answers at once with the newest frame captured at most that long
	// before the trigger, if there is one, else with the first frame after it.
	TriggerWindow time.Duration `yaml:"trigger_window"`

	// ReadTimeout is the deadline of one frame read: a read that takes longer, or a trigger
	// that sees no frame that long, is a stall. Default 2s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// OpenTimeout is the deadline of opening the source. Default 10s.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// ReconnectMin and ReconnectMax bound the exponential backoff between reopen attempts
	// after a stall or error. Defaults 250ms and 10s.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
}

// DefaultConfig is a folder source with id cam0 and no path.
func DefaultConfig() Config {
	return Config{ID: "cam0", Kind: KindFolder}
}

// ImageExtensions are the file endings a folder source reads, case-insensitive.
var ImageExtensions = []string{".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

// Validate checks the config without touching the device or file; errors name the key as
// camera.<key>.
func (c Config) Validate() error { return c.ValidateKey("camera") }

// ValidateKey is Validate with errors naming keys under key, e.g. "cameras[1]".
func (c Config) ValidateKey(key string) error {
	k := func(name string) string { return key + "." + name }
	if strings.TrimSpace(c.ID) == "" {
		return fmt.Errorf("%s: must not be empty", k("id"))
	}
	need := map[string]struct {
		key, val, what string
	}{
		KindFolder:    {"path", c.Path, "the image folder"},
		KindFile:      {"path", c.Path, "the video file"},
		KindDevice:    {"device", c.Device, "the V4L2 device (0 or /dev/video0)"},
		KindURL:       {"url", c.URL, "the stream URL (rtsp:// or http://)"},
		KindGStreamer: {"pipeline", c.Pipeline, "the GStreamer pipeline ending in appsink"},
	}
	n, ok := need[c.Kind]
	if !ok {
		return fmt.Errorf("%s: %q is not a source kind (allowed: %s, %s, %s, %s, %s)", k("kind"), c.Kind,
			KindFolder, KindFile, KindDevice, KindURL, KindGStreamer)
	}
	if strings.TrimSpace(n.val) == "" {
		return fmt.Errorf("%s: must name %s", k(n.key), n.what)
	}
	for _, other := range []struct{ key, val string }{{"path", c.Path}, {"device", c.Device}, {"url", c.URL}, {"pipeline", c.Pipeline}} {
		if other.key != n.key && other.val != "" {
			return fmt.Errorf("%s: not used by kind %s (it reads %s)", k(other.key), c.Kind, k(n.key))
		}
	}
	switch c.Kind {
	case KindDevice:
		if _, err := strconv.Atoi(c.Device); err != nil && !strings.HasPrefix(c.Device, "/dev/") {
			return fmt.Errorf("%s: %q is neither an index (0) nor a device path (/dev/video0)", k("device"), c.Device)
		}
		if c.PixelFormat != "" && len(c.PixelFormat) != 4 {
			return fmt.Errorf("%s: %q is not a FOURCC of 4 characters (e.g. MJPG, YUYV)", k("pixel_format"), c.PixelFormat)
		}
	case KindURL:
		scheme, _, _ := strings.Cut(c.URL, "://")
		switch scheme {
		case "rtsp", "rtsps", "http", "https", "tcp", "udp", "rtmp":
		default:
			return fmt.Errorf("%s: %q has no stream scheme (allowed: rtsp, rtsps, http, https, tcp, udp, rtmp)", k("url"), c.URL)
		}
	case KindGStreamer:
		if !strings.Contains(c.Pipeline, "appsink") {
			return fmt.Errorf("%s: must end in appsink (e.g. ... ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1)", k("pipeline"))
		}
	}
	if c.Kind != KindDevice {
		for _, s := range []struct {
			key string
			set bool
		}{{"width", c.Width != 0}, {"height", c.Height != 0}, {"pixel_format", c.PixelFormat != ""},
			{"exposure", c.Exposure != nil}, {"gain", c.Gain != nil}, {"white_balance", c.WhiteBalance != nil}} {
			if s.set {
				return fmt.Errorf("%s: only a device camera takes it (set it in the pipeline or on the camera for kind %s)", k(s.key), c.Kind)
			}
		}
	}
	if c.Transport != "" && c.Transport != TransportTCP && c.Transport != TransportUDP {
		return fmt.Errorf("%s: %q is not one of tcp, udp", k("transport"), c.Transport)
	}
	if c.Transport != "" && c.Kind != KindURL {
		return fmt.Errorf("%s: only a url camera takes it", k("transport"))
	}
	if c.Loop && c.Kind != KindFolder && c.Kind != KindFile {
		return fmt.Errorf("%s: only folder and file sources end; a live source reconnects instead", k("loop"))
	}
	if c.Width < 0 || c.Height < 0 {
		return fmt.Errorf("%s: %dx%d must be >= 0", k("width"), c.Width, c.Height)
	}
	if c.FPS < 0 {
		return fmt.Errorf("%s: %v must be >= 0 (0 reads as fast as possible)", k("fps"), c.FPS)
	}
	switch c.Mode {
	case "", ModeStream, ModeFreeRun, ModeTriggered:
	default:
		return fmt.Errorf("%s: %q is not one of %s, %s, %s", k("mode"), c.Mode, ModeStream, ModeFreeRun, ModeTriggered)
	}
	if c.Ring < 0 || c.Ring > 256 {
		return fmt.Errorf("%s: %d is not in 0..256 (0 keeps %d)", k("ring"), c.Ring, DefaultRing)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"trigger_window", c.TriggerWindow}, {"read_timeout", c.ReadTimeout}, {"open_timeout", c.OpenTimeout},
		{"reconnect_min", c.ReconnectMin}, {"reconnect_max", c.ReconnectMax}} {
		if d.v < 0 {
			return fmt.Errorf("%s: %v must be >= 0 (0 keeps the default)", k(d.key), d.v)
		}
	}
	if c.ReconnectMin > 0 && c.ReconnectMax > 0 && c.ReconnectMax < c.ReconnectMin {
		return fmt.Errorf("%s: %v is below reconnect_min %v", k("reconnect_max"), c.ReconnectMax, c.ReconnectMin)
	}
	return nil
}

// Live reports whether the kind is a live source (device, url, gstreamer): it never ends,
// and on error or stall it reconnects.
func (c Config) Live() bool {
	return c.Kind == KindDevice || c.Kind == KindURL || c.Kind == KindGStreamer
}

// withDefaults fills zero values with the documented defaults.
func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeStream
		if c.Live() {
			c.Mode = ModeFreeRun
		}
	}
	if c.Ring == 0 {
		c.Ring = DefaultRing
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = max(DefaultReconnectMax, c.ReconnectMin)
	}
	if c.Transport == "" && c.Kind == KindURL {
		c.Transport = TransportTCP
	}
	return c
}

// source names what the camera reads, for logs and errors.
func (c Config) source() string {
	switch c.Kind {
	case KindDevice:
		return c.Device
	case KindURL:
		return c.URL
	case KindGStreamer:
		return c.Pipeline
	}
	return c.Path
}
