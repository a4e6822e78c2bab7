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
// brushed aluminium plate with rounded corners: six drilled holes, a turned boss with a
// groove and a bore, an engraved part number, a laser-marked 2D code and serial number,
// chamfered edges catching the light from the upper left, and the part's soft shadow.
// Per part, driven by the seed and the part index: the pose (shift up to ±4 px and rotation
// up to ±1.5° at 640x480), the brushing, the sheen, the lighting gradient, the sensor noise
// and the serial number. The fixture depends on the seed only, like a real fixture does not
// change between parts.
//
// Defects are drawn on the part before it is posed, so they move with it. Sizes are at
// 640x480:
//
//   - scratch: a slightly curved groove 25 to 100 px long, a 4 px bright or dark core with a
//     3 px lip of the opposite shade beside it;
//   - missing_hole: one of the six holes is not drilled (plate material instead);
//   - spot: a feathered dark brown stain 12 to 38 px across, with a few droplets;
//   - crack: a jagged dark polyline up to 3.5 px wide, tapered, sometimes branched.
//
// Scratches, spots and cracks lie on plain plate material: their whole bounding box keeps
// clear of holes, the boss, the marking and the plate edge, so that the box holds the defect
// and not an edge that moves from part to part. Every defect stays visible after a 4x
// downscale (160x120). A good part and the defective part with the same seed and index
// differ only inside the defect's box.
//
// # Caveats
//
// Rendering uses OpenCV through gocv (cgo). Without cgo, RenderPart and Generate return
// ErrNoCgo (after validating their options). Bytes are reproducible for a given OpenCV
// build and Go version; another OpenCV version may round anti-aliased edges differently.
// Geometry and defect sizes scale with min(Width/640, Height/480); below 640x480 the thin
// defects get fainter after downscaling.
package synth
