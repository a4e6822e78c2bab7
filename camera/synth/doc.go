// Package synth renders synthetic machined parts on an inspection fixture, good or with one
// defect, for tests and the demo. Nothing is shipped as binary fixtures: the same seed gives
// the same images, byte for byte, on the same OpenCV build.
//
// # Basics
//
// RenderPart draws one part as a camera.Frame (BGR, owning its Pix) and returns its Label:
// the defect kind and the defect's bounding box in pixels. Generate writes a whole data set
// to a folder, either in the training layout (one folder per class) or as a production run
// (one folder in line order, optionally also as an MJPG video), with labels.csv beside it.
//
// The scene is a dark anodized fixture with a nest, screws and locating pins, and on it a
// brushed aluminium plate with rounded corners: six holes, a turned boss with a bore, an
// engraved part number, a serial number and a 2D code, chamfered edges catching the light.
// Per part, driven by the seed and the part index: the pose (shift up to ±4 px and rotation
// up to ±1.5° at 640x480), the brushing, the sheen, the lighting gradient, the sensor noise
// and the serial number. The fixture depends on the seed only, like a real fixture does not
// change between parts.
//
// Defects are drawn on the part before it is posed, so they move with it:
//
//   - scratch: a bright or dark groove, 3 to 5 px wide at 640x480;
//   - missing_hole: one of the six holes is not drilled (plate material instead);
//   - spot: a dark contamination blob with a few droplets;
//   - crack: a jagged dark polyline, sometimes branched.
//
// Every defect is sized to stay visible after a 4x downscale (160x120). A good part and the
// defective part with the same seed and index differ only by the defect.
//
// # Caveats
//
// Rendering uses OpenCV through gocv (cgo). Without cgo, RenderPart and Generate return
// ErrNoCgo (after validating their options). Bytes are reproducible for a given OpenCV
// build and Go version; another OpenCV version may round anti-aliased edges differently.
// Geometry and defect sizes scale with min(Width/640, Height/480); below 640x480 the thin
// defects get fainter after downscaling.
package synth
