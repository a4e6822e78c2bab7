package camera

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Set is the cameras of one station read as one Source: Read returns the next frame (or
// error) of any camera, round robin, and io.EOF once every camera has ended.
type Set struct {
	cams []*Camera
	byID map[string]*Camera
	wake chan struct{}

	readMu sync.Mutex
	timer  *time.Timer
	next   int
}

var _ Source = (*Set)(nil)

// OpenSet opens every camera of cfgs (ids must differ). If one fails to open, the ones
// already open are closed and the error names the camera.
func OpenSet(cfgs []Config, opts ...Option) (*Set, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("camera: no camera configured")
	}
	s := &Set{byID: map[string]*Camera{}, wake: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	s.timer.Stop()
	opts = append(opts[:len(opts):len(opts)], func(o *options) { o.wake = s.wake })
	for _, cfg := range cfgs {
		if _, dup := s.byID[cfg.ID]; dup {
			s.Close()
			return nil, fmt.Errorf("camera.id: %q is used by two cameras", cfg.ID)
		}
		c, err := Open(cfg, opts...)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.cams = append(s.cams, c)
		s.byID[cfg.ID] = c
	}
	return s, nil
}

// Cameras returns the set's cameras in config order.
func (s *Set) Cameras() []*Camera { return append([]*Camera(nil), s.cams...) }

// Camera returns the camera with this id, or nil.
func (s *Set) Camera(id string) *Camera { return s.byID[id] }

// Read returns the next frame of any camera; see Camera.Read for the errors.
func (s *Set) Read(ctx context.Context) (Frame, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	return readAny(ctx, s.cams, s.wake, s.timer, &s.next)
}

// Trigger triggers the camera with this id, or, with an empty id, every camera in
// triggered mode (one answer each). See Camera.Trigger.
func (s *Set) Trigger(cameraID string, t Trigger) error {
	if t.Time.IsZero() {
		t.Time = time.Now()
	}
	if cameraID != "" {
		c := s.byID[cameraID]
		if c == nil {
			return fmt.Errorf("camera: no camera %q", cameraID)
		}
		return c.Trigger(t)
	}
	var errs []error
	n := 0
	for _, c := range s.cams {
		if c.cfg.Mode == ModeTriggered {
			n++
			errs = append(errs, c.Trigger(t))
		}
	}
	if n == 0 {
		return fmt.Errorf("camera: %w (no camera of the station is)", ErrNotTriggered)
	}
	return errors.Join(errs...)
}

// Recycle gives f's pixel buffer back to the pool of the camera that returned it.
func (s *Set) Recycle(f Frame) {
	if c := s.byID[f.CameraID]; c != nil {
		c.Recycle(f)
	}
}

// Close closes every camera.
func (s *Set) Close() error {
	for _, c := range s.cams {
		c.Close()
	}
	return nil
}
