package agent

import (
	"errors"
	"fmt"

	"github.com/takt-edge/takt/camera"
)

// frameSource is what Run reads parts from: a *camera.Camera for one camera, a *camera.Set
// for a `cameras:` list. Recycle gives a frame's pixels back once its part is committed.
type frameSource interface {
	camera.Source
	Recycle(camera.Frame)
}

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

// openCameras opens the station's cameras: the *camera.Camera itself for one camera (what
// triggers and the camera health check reach), a *camera.Set for several.
func (a *Agent) openCameras() (frameSource, error) {
	cfgs := a.cfg.CameraConfigs()
	if len(cfgs) == 1 {
		return camera.Open(cfgs[0], camera.WithLogger(a.log))
	}
	return camera.OpenSet(cfgs, camera.WithLogger(a.log))
}
