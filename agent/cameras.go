package agent

import (
	"errors"
	"fmt"

	"github.com/takt-edge/takt/camera"
)

// frameSource is what Run reads parts from: one camera, or a set for a `cameras:` list.
// Recycle gives a frame's pixels back once its part is committed.
type frameSource interface {
	camera.Source
	Recycle(camera.Frame)
	cameraControl
}

// cameraControl is what the services reach of the frame source.
type cameraControl interface {
	// Cameras lists the cameras behind the source, for the status and the health checks.
	Cameras() []*camera.Camera
	// Trigger asks for the part in place now (triggered mode; else camera.ErrNotTriggered).
	Trigger(camera.Trigger) error
}

// oneCamera is the frame source of a station with one camera.
type oneCamera struct{ *camera.Camera }

func (c oneCamera) Cameras() []*camera.Camera { return []*camera.Camera{c.Camera} }

// cameraSet is the frame source of a `cameras:` list; a trigger goes to every camera.
type cameraSet struct{ *camera.Set }

func (s cameraSet) Trigger(t camera.Trigger) error { return s.Set.Trigger("", t) }

var (
	_ frameSource = oneCamera{}
	_ frameSource = cameraSet{}
)

// CameraConfigs returns the station's cameras: the `cameras:` list if given, else `camera:`.
func (c Config) CameraConfigs() []camera.Config {
	if len(c.Cameras) > 0 {
		return c.Cameras
	}
	return []camera.Config{c.Camera}
}

// validateCameras checks `camera:` or, when given, every entry of `cameras:`.
func (c Config) validateCameras() error {
	if len(c.Cameras) == 0 {
		return c.Camera.Validate()
	}
	if c.Camera != camera.DefaultConfig() {
		return errors.New("camera: give either camera (one camera) or cameras (a list), not both")
	}
	seen := map[string]bool{}
	var errs []error
	for i, cc := range c.Cameras {
		key := fmt.Sprintf("cameras[%d]", i)
		if err := cc.ValidateKey(key); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[cc.ID] {
			errs = append(errs, fmt.Errorf("%s.id: %q is used by another camera", key, cc.ID))
		}
		seen[cc.ID] = true
	}
	return errors.Join(errs...)
}

// openCameras opens the station's cameras: one camera, or a set for several.
func (a *Agent) openCameras() (frameSource, error) {
	cfgs := a.cfg.CameraConfigs()
	if len(cfgs) == 1 {
		c, err := camera.Open(cfgs[0], camera.WithLogger(a.log))
		if err != nil {
			return nil, err
		}
		return oneCamera{c}, nil
	}
	s, err := camera.OpenSet(cfgs, camera.WithLogger(a.log))
	if err != nil {
		return nil, err
	}
	return cameraSet{s}, nil
}
