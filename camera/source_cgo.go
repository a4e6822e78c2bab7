//go:build cgo

package camera

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"gocv.io/x/gocv"
)

// Open validates cfg, opens the source within cfg.OpenTimeout and starts capturing. It
// fails with an error naming the camera and the source when the first open fails (missing
// folder, file or device, unreachable stream, a pipeline GStreamer refuses); after that the
// camera reconnects by itself.
func Open(cfg Config, opts ...Option) (*Camera, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return start(cfg, openCapture, opts...)
}

func openCapture(cfg Config, resume uint64) (capture, []string, error) {
	switch cfg.Kind {
	case KindFolder:
		cp, err := openFolder(cfg, resume)
		return cp, nil, err
	case KindFile:
		cp, err := openVideoFile(cfg, resume)
		return cp, nil, err
	case KindDevice:
		return openDevice(cfg)
	case KindURL:
		cp, err := openURL(cfg)
		return cp, nil, err
	case KindGStreamer:
		cp, err := openPipeline(cfg)
		return cp, nil, err
	}
	return nil, nil, fmt.Errorf("camera.kind: %q is not a source kind", cfg.Kind)
}

// copyMat copies m into a Frame with a pixel buffer from p; conv is scratch space for
// converting 4-channel frames.
func copyMat(m, conv *gocv.Mat, p *pool, origin string) (Frame, error) {
	now := time.Now()
	src := m
	switch m.Type() {
	case gocv.MatTypeCV8UC3, gocv.MatTypeCV8UC1:
	case gocv.MatTypeCV8UC4:
		gocv.CvtColor(*m, conv, gocv.ColorBGRAToBGR)
		src = conv
	default:
		return Frame{}, &badFrame{origin: origin, err: fmt.Errorf("pixel type %v is not 8-bit gray, BGR or BGRA", m.Type())}
	}
	f := Frame{Time: now, Width: src.Cols(), Height: src.Rows(), Channels: src.Channels(), Origin: origin}
	if data, err := src.DataPtrUint8(); err == nil {
		f.Pix = p.get(len(data))
		copy(f.Pix, data)
	} else {
		f.Pix = src.ToBytes()
	}
	return f, nil
}

type folderCapture struct {
	cfg   Config
	files []string
	next  int
	conv  gocv.Mat
}

func openFolder(cfg Config, resume uint64) (*folderCapture, error) {
	entries, err := os.ReadDir(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("camera %s: open image folder: %w", cfg.ID, err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || !slices.Contains(ImageExtensions, strings.ToLower(filepath.Ext(e.Name()))) {
			continue
		}
		files = append(files, filepath.Join(cfg.Path, e.Name()))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("camera %s: image folder %s holds no images (%s)", cfg.ID, cfg.Path, strings.Join(ImageExtensions, " "))
	}
	slices.Sort(files)
	return &folderCapture{cfg: cfg, files: files, next: int(resume % uint64(len(files)+1)), conv: gocv.NewMat()}, nil
}

func (s *folderCapture) grab(p *pool) (Frame, error) {
	if s.next >= len(s.files) {
		if !s.cfg.Loop {
			return Frame{}, io.EOF
		}
		s.next = 0
	}
	path := s.files[s.next]
	s.next++
	m := gocv.IMRead(path, gocv.IMReadColor)
	defer m.Close()
	if m.Empty() {
		return Frame{}, &badFrame{origin: path, err: errUndecodable}
	}
	return copyMat(&m, &s.conv, p, path)
}

func (s *folderCapture) pos() uint64 { return uint64(s.next) }
func (s *folderCapture) close()      { s.conv.Close() }

// vcCapture reads a gocv.VideoCapture: a video file, a device, a stream or a pipeline.
type vcCapture struct {
	vc    *gocv.VideoCapture
	mat   gocv.Mat
	conv  gocv.Mat
	geom  geometry       // of the last frame, when OpenCV can write frames straight into a pool buffer
	pin   runtime.Pinner // pins the pool buffer OpenCV writes into during a read
	file  string         // video file path; "" for live sources
	loop  bool
	index uint64 // frames read in the current pass over a file
	names []byte // arena for "file#index" origins; written once, never changed
	// clock dates a network stream's frames by their timestamps; nil for other sources.
	clock *streamClock
}

// geometry is the size and pixel type of a gray or BGR frame; the zero value is unknown.
type geometry struct {
	rows, cols, ch int
	typ            gocv.MatType
}

func (g geometry) size() int { return g.rows * g.cols * g.ch }

var errStreamEnded = errors.New("the stream gave no frame (ended or broken)")

func newVC(vc *gocv.VideoCapture) *vcCapture {
	return &vcCapture{vc: vc, mat: gocv.NewMat(), conv: gocv.NewMat()}
}

func (v *vcCapture) grab(p *pool) (Frame, error) {
	f, ok, err := v.read(p)
	if !ok {
		if v.file == "" {
			return Frame{}, errStreamEnded
		}
		if !v.loop || v.index == 0 {
			return Frame{}, io.EOF
		}
		v.vc.Set(gocv.VideoCapturePosFrames, 0)
		v.index = 0
		if f, ok, err = v.read(p); !ok {
			return Frame{}, io.EOF
		}
	}
	v.index++
	if v.file != "" {
		f.Origin = v.origin()
	}
	if v.clock != nil && err == nil {
		f.Time = v.clock.at(f.Time, v.vc.Get(gocv.VideoCapturePosMsec))
	}
	if bad, isBad := err.(*badFrame); isBad {
		bad.origin = f.Origin
	}
	return f, err
}

// read reads the next frame into a buffer from p; ok is false when OpenCV gave none. Once
// it knows the frame's geometry, OpenCV writes the pixels straight into the pool buffer:
// its read copies the decoded frame into a destination of the right size and type without
// reallocating it, so the frame is copied once, as in a bare gocv loop, not twice.
func (v *vcCapture) read(p *pool) (f Frame, ok bool, err error) {
	if v.geom.size() == 0 {
		if !v.vc.Read(&v.mat) {
			return Frame{}, false, nil
		}
		return v.copyOut(&v.mat, p)
	}
	g := v.geom
	buf := p.get(g.size())
	// The Mat header holds a pointer to buf across cgo calls: pin it for that time.
	v.pin.Pin(&buf[0])
	defer v.pin.Unpin()
	dst, err := gocv.NewMatFromBytes(g.rows, g.cols, g.typ, buf)
	if err != nil {
		p.put(buf)
		return Frame{}, false, err
	}
	defer dst.Close()
	if !v.vc.Read(&dst) {
		p.put(buf)
		return Frame{}, false, nil
	}
	now := time.Now()
	if data, err := dst.DataPtrUint8(); err == nil && len(data) == len(buf) && unsafe.SliceData(data) == unsafe.SliceData(buf) {
		return Frame{Time: now, Width: g.cols, Height: g.rows, Channels: g.ch, Pix: buf}, true, nil
	}
	// The frame changed size or type, so OpenCV gave dst memory of its own.
	p.put(buf)
	return v.copyOut(&dst, p)
}

// copyOut copies m into a Frame and remembers its geometry when the next frames can be
// read straight into a pool buffer.
func (v *vcCapture) copyOut(m *gocv.Mat, p *pool) (Frame, bool, error) {
	f, err := copyMat(m, &v.conv, p, "")
	v.geom = geometry{}
	if err == nil && m.IsContinuous() {
		if t := m.Type(); t == gocv.MatTypeCV8UC3 || t == gocv.MatTypeCV8UC1 {
			v.geom = geometry{rows: f.Height, cols: f.Width, ch: f.Channels, typ: t}
		}
	}
	return f, true, err
}

// origin returns "file#index" without an allocation per frame: the strings live in a
// shared arena whose bytes are never written twice.
func (v *vcCapture) origin() string {
	need := len(v.file) + 21
	if cap(v.names)-len(v.names) < need {
		v.names = make([]byte, 0, max(4096, need))
	}
	start := len(v.names)
	v.names = strconv.AppendUint(append(append(v.names, v.file...), '#'), v.index, 10)
	b := v.names[start:]
	return unsafe.String(&b[0], len(b))
}

func (v *vcCapture) pos() uint64 { return v.index }

func (v *vcCapture) close() {
	v.mat.Close()
	v.conv.Close()
	v.vc.Close()
}

func openVideoFile(cfg Config, resume uint64) (*vcCapture, error) {
	if _, err := os.Stat(cfg.Path); err != nil {
		return nil, fmt.Errorf("camera %s: open video file: %w", cfg.ID, err)
	}
	vc, err := gocv.VideoCaptureFileWithAPI(cfg.Path, gocv.VideoCaptureFFmpeg)
	if err != nil || !vc.IsOpened() {
		vc.Close()
		return nil, fmt.Errorf("camera %s: %s is not a video OpenCV can decode", cfg.ID, cfg.Path)
	}
	v := newVC(vc)
	v.file, v.loop = cfg.Path, cfg.Loop
	// A file that opens but yields no first frame is as useless as one that does not open.
	if !vc.Read(&v.mat) || v.mat.Empty() {
		v.close()
		return nil, fmt.Errorf("camera %s: video file %s has no decodable frame", cfg.ID, cfg.Path)
	}
	vc.Set(gocv.VideoCapturePosFrames, float64(resume))
	v.index = resume
	return v, nil
}

// devicePath turns "0" into /dev/video0.
func devicePath(dev string) string {
	if _, err := strconv.Atoi(dev); err == nil {
		return "/dev/video" + dev
	}
	return dev
}

func openDevice(cfg Config) (capture, []string, error) {
	path := devicePath(cfg.Device)
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("camera %s: V4L2 device %s: %w (is the camera connected? `ls /dev/video*` lists the devices)", cfg.ID, path, err)
	}
	vc, err := gocv.VideoCaptureFileWithAPI(path, gocv.VideoCaptureV4L2)
	if err != nil || !vc.IsOpened() {
		vc.Close()
		return nil, nil, fmt.Errorf("camera %s: V4L2 device %s exists but OpenCV cannot open it (busy, not a capture device, or no permission: is the user in group video?)", cfg.ID, path)
	}
	refused := applyDeviceSettings(vc, cfg)
	return newVC(vc), refused, nil
}

// applyDeviceSettings asks the driver for each configured setting and reads it back; the
// ones the driver does not take are returned as "key value (driver gives x)".
func applyDeviceSettings(vc *gocv.VideoCapture, cfg Config) []string {
	var refused []string
	check := func(key string, prop gocv.VideoCaptureProperties, want float64, tol float64) {
		vc.Set(prop, want)
		if got := vc.Get(prop); math.Abs(got-want) > tol {
			refused = append(refused, fmt.Sprintf("%s %v (driver gives %v)", key, want, got))
		}
	}
	if cfg.PixelFormat != "" {
		vc.Set(gocv.VideoCaptureFOURCC, vc.ToCodec(cfg.PixelFormat))
		if got := vc.CodecString(); !strings.EqualFold(got, cfg.PixelFormat) {
			refused = append(refused, fmt.Sprintf("pixel_format %s (driver gives %q)", cfg.PixelFormat, got))
		}
	}
	if cfg.Width > 0 {
		check("width", gocv.VideoCaptureFrameWidth, float64(cfg.Width), 0)
	}
	if cfg.Height > 0 {
		check("height", gocv.VideoCaptureFrameHeight, float64(cfg.Height), 0)
	}
	if cfg.FPS > 0 {
		check("fps", gocv.VideoCaptureFPS, cfg.FPS, 0.5)
	}
	if cfg.Exposure != nil {
		vc.Set(gocv.VideoCaptureAutoExposure, 1) // V4L2: 1 = manual exposure
		check("exposure", gocv.VideoCaptureExposure, *cfg.Exposure, 0.5)
	}
	if cfg.Gain != nil {
		check("gain", gocv.VideoCaptureGain, *cfg.Gain, 0.5)
	}
	if cfg.WhiteBalance != nil {
		vc.Set(gocv.VideoCaptureAutoWB, 0)
		check("white_balance", gocv.VideoCaptureWBTemperature, *cfg.WhiteBalance, 50)
	}
	return refused
}

// ffmpegEnv serialises opens that change OPENCV_FFMPEG_CAPTURE_OPTIONS, which OpenCV's
// FFmpeg backend reads when it opens a stream.
var ffmpegEnv sync.Mutex

const ffmpegOptionsEnv = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

func openURL(cfg Config) (capture, error) {
	if cfg.Transport == TransportUDP && strings.HasPrefix(cfg.URL, "rtsp") {
		// OpenCV uses RTSP over TCP unless the options say otherwise.
		ffmpegEnv.Lock()
		defer ffmpegEnv.Unlock()
		old, had := os.LookupEnv(ffmpegOptionsEnv)
		os.Setenv(ffmpegOptionsEnv, "rtsp_transport;udp")
		defer func() {
			if had {
				os.Setenv(ffmpegOptionsEnv, old)
			} else {
				os.Unsetenv(ffmpegOptionsEnv)
			}
		}()
	}
	vc, err := gocv.VideoCaptureFileWithAPI(cfg.URL, gocv.VideoCaptureFFmpeg)
	if err != nil || !vc.IsOpened() {
		vc.Close()
		return nil, fmt.Errorf("camera %s: open stream %s: OpenCV's FFmpeg backend could not open it (server down, wrong path, or a codec FFmpeg lacks)", cfg.ID, cfg.URL)
	}
	v := newVC(vc)
	v.clock = &streamClock{}
	return v, nil
}

func openPipeline(cfg Config) (capture, error) {
	vc, err := gocv.VideoCaptureFileWithAPI(cfg.Pipeline, gocv.VideoCaptureGstreamer)
	if err != nil || !vc.IsOpened() {
		vc.Close()
		return nil, fmt.Errorf("camera %s: open GStreamer pipeline %q: OpenCV's GStreamer backend could not start it (a missing element or plugin, or a camera that is not there; try it with gst-launch-1.0)", cfg.ID, cfg.Pipeline)
	}
	return newVC(vc), nil
}
