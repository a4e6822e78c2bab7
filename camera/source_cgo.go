//go:build cgo

package camera

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// Open validates cfg and opens the source it names.
func Open(cfg Config) (Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Kind {
	case KindFolder:
		return openFolder(cfg)
	case KindFile:
		return openVideoFile(cfg)
	}
	return nil, fmt.Errorf("camera.kind: %q is not a source kind", cfg.Kind)
}

// frameFromMat copies m into a new Frame; the caller still owns m.
func frameFromMat(m gocv.Mat, cameraID string, seq uint64, origin string) Frame {
	return Frame{
		CameraID: cameraID,
		Seq:      seq,
		Time:     time.Now(),
		Width:    m.Cols(),
		Height:   m.Rows(),
		Channels: m.Channels(),
		Pix:      m.ToBytes(),
		Origin:   origin,
	}
}

type folderSource struct {
	mu     sync.Mutex
	cfg    Config
	files  []string
	next   int
	seq    uint64
	pace   pacer
	closed bool
}

func openFolder(cfg Config) (*folderSource, error) {
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
	return &folderSource{cfg: cfg, files: files, pace: newPacer(cfg.FPS)}, nil
}

func (s *folderSource) Read(ctx context.Context) (Frame, error) {
	if err := ctx.Err(); err != nil {
		return Frame{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Frame{}, ErrClosed
	}
	if err := s.pace.wait(ctx); err != nil {
		return Frame{}, err
	}
	if s.next == len(s.files) {
		if !s.cfg.Loop {
			return Frame{}, io.EOF
		}
		s.next = 0
	}
	path := s.files[s.next]
	s.next++
	s.seq++
	m := gocv.IMRead(path, gocv.IMReadColor)
	defer m.Close()
	if m.Empty() {
		return Frame{}, &FrameError{CameraID: s.cfg.ID, Seq: s.seq, Origin: path, Err: errUndecodable}
	}
	return frameFromMat(m, s.cfg.ID, s.seq, path), nil
}

func (s *folderSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

type videoFileSource struct {
	mu     sync.Mutex
	cfg    Config
	vc     *gocv.VideoCapture
	mat    gocv.Mat
	seq    uint64
	index  uint64 // frame index within the current pass over the file
	pace   pacer
	closed bool
}

func openVideoFile(cfg Config) (*videoFileSource, error) {
	if _, err := os.Stat(cfg.Path); err != nil {
		return nil, fmt.Errorf("camera %s: open video file: %w", cfg.ID, err)
	}
	vc, err := gocv.VideoCaptureFileWithAPI(cfg.Path, gocv.VideoCaptureFFmpeg)
	if err != nil || !vc.IsOpened() {
		if vc != nil {
			vc.Close()
		}
		return nil, fmt.Errorf("camera %s: %s is not a video OpenCV can decode", cfg.ID, cfg.Path)
	}
	s := &videoFileSource{cfg: cfg, vc: vc, mat: gocv.NewMat(), pace: newPacer(cfg.FPS)}
	// A file that opens but yields no first frame is as useless as one that does not open.
	if !vc.Read(&s.mat) || s.mat.Empty() {
		s.Close()
		return nil, fmt.Errorf("camera %s: video file %s has no decodable frame", cfg.ID, cfg.Path)
	}
	vc.Set(gocv.VideoCapturePosFrames, 0)
	return s, nil
}

func (s *videoFileSource) Read(ctx context.Context) (Frame, error) {
	if err := ctx.Err(); err != nil {
		return Frame{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Frame{}, ErrClosed
	}
	if err := s.pace.wait(ctx); err != nil {
		return Frame{}, err
	}
	if !s.vc.Read(&s.mat) || s.mat.Empty() {
		if !s.cfg.Loop || s.index == 0 {
			return Frame{}, io.EOF
		}
		s.vc.Set(gocv.VideoCapturePosFrames, 0)
		s.index = 0
		if !s.vc.Read(&s.mat) || s.mat.Empty() {
			return Frame{}, io.EOF
		}
	}
	s.index++
	s.seq++
	return frameFromMat(s.mat, s.cfg.ID, s.seq, fmt.Sprintf("%s#%d", s.cfg.Path, s.index)), nil
}

func (s *videoFileSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.mat.Close()
	return s.vc.Close()
}
