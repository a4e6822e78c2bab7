package train

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

// colorPart is makePart's part in colour: a green plate and a red component (the slot), or
// with wrongColor a blue component of the same gray level, a defect only colour shows.
// Every hue is added to the gray level along a direction of zero luma (0.114 B + 0.587 G +
// 0.299 R), so the gray image is makePart's whatever the colours.
func colorPart(width, height int, seed uint64, wrongColor bool) camera.Frame {
	gray := makePart(partSpec{width: width, height: height, channels: 1, seed: seed})
	plate := [3]float64{-30, 21.1, -30} // B, G, R offsets: green
	part := [3]float64{-20, -16.5, 40}  // red
	if wrongColor {
		part = [3]float64{40, 2.4, -20} // blue
	}
	f := camera.Frame{Width: width, Height: height, Channels: 3, Seq: seed, Pix: make([]byte, 3*width*height)}
	for i, v := range gray.Pix {
		var d [3]float64
		switch l := float64(v); {
		case l > 130:
			d = plate
		case l > 60:
			d = part
		}
		for c := range 3 {
			f.Pix[3*i+c] = clampByte(float64(v) + d[c])
		}
	}
	return f
}

func TestInputChannels(t *testing.T) {
	gray := []camera.Frame{makePart(partSpec{width: 320, height: 240, channels: 1, seed: 1})}
	warm := []camera.Frame{makePart(partSpec{width: 320, height: 240, channels: 3, seed: 1})}
	colour := []camera.Frame{colorPart(320, 240, 1, false)}
	for _, c := range []struct {
		name   string
		color  string
		frames []camera.Frame
		want   int
	}{
		{"gray camera", "", gray, 1},
		{"gray part under a warm light", ColorAuto, warm, 1},
		{"coloured part", "", colour, 3},
		{"coloured part, gray asked", ColorGray, colour, 1},
		{"gray part, rgb asked", ColorRGB, gray, 3},
	} {
		got, err := inputChannels(c.color, c.frames)
		if err != nil || got != c.want {
			t.Errorf("%s: channels %d, %v; want %d (chroma spread %.2f)", c.name, got, err, c.want, chromaSpread(c.frames[0]))
		}
	}
	if _, err := inputChannels("bgr", gray); err == nil {
		t.Error("color bgr: no error")
	}
	if _, err := Train(context.Background(), TrainSet{Good: colour}, TrainOptions{Color: "cmyk"}); err == nil {
		t.Error("Train with color cmyk: no error")
	}
}

// A component of the wrong colour but the same gray level passes a gray model and fails
// the colour model that the coloured training images get by default, for the template and
// for PatchCore.
func TestColorModelSeesAHueOnlyDefect(t *testing.T) {
	const w, h = 320, 240
	var good, heldOut, wrong []camera.Frame
	for i := range 16 {
		good = append(good, colorPart(w, h, uint64(1+i), false))
	}
	for i := range 8 {
		heldOut = append(heldOut, colorPart(w, h, uint64(101+i), false))
		wrong = append(wrong, colorPart(w, h, uint64(201+i), true))
	}
	var labelled []LabeledFrame
	for i := range 10 {
		labelled = append(labelled, LabeledFrame{Frame: colorPart(w, h, uint64(301+i), true), Label: "wrong_colour"})
	}
	for _, c := range []struct {
		method, color string
		defects       []LabeledFrame
	}{
		{MethodTemplate, ColorAuto, nil}, {MethodTemplate, ColorGray, nil},
		{MethodPatchCore, ColorAuto, nil}, {MethodPatchCore, ColorGray, nil},
		{MethodAuto, ColorAuto, nil}, {MethodPatchCore, ColorAuto, labelled},
	} {
		method, color := c.method, c.color
		m, err := Train(context.Background(), TrainSet{Good: good, Defects: c.defects}, TrainOptions{Method: method, Color: color, Threads: 2})
		if err != nil {
			t.Fatalf("%s %s: %v", method, color, err)
		}
		wantCh := map[string]int{ColorAuto: 3, ColorGray: 1}[color]
		if m.Input.Channels != wantCh {
			t.Fatalf("%s %s: input %v, want %d channels", method, color, m.Input, wantCh)
		}
		man, err := m.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if wantColor := map[int]string{1: bundle.ColorGray, 3: bundle.ColorRGB}[wantCh]; man.Input.Color != wantColor {
			t.Errorf("%s %s: manifest color %q, want %q", method, color, man.Input.Color, wantColor)
		}
		// The station sees the model as the trainer did: from the bundle's manifest and
		// from the plain model's metadata, the camera's BGR frames scored as in training.
		r := runtimeOf(t, man, m.ONNX, models.RuntimeOptions{})
		path := filepath.Join(t.TempDir(), "part.onnx")
		if err := m.WriteFile(path); err != nil {
			t.Fatal(err)
		}
		plain, err := models.LoadRuntime(path, models.RuntimeOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if got := plain.Info().Color; got != man.Input.Color {
			t.Errorf("%s %s: plain model's color %q, manifest's %q", method, color, got, man.Input.Color)
		}
		for i, f := range good[:3] {
			for _, rt := range []*models.Runtime{r, plain} {
				res, err := rt.Infer(context.Background(), f)
				if err != nil {
					t.Fatal(err)
				}
				// The ensemble's trainer scores are its two models' float32 scores over
				// their thresholds in float64: equal to float32 precision.
				if math.Abs(res.Score-m.TrainScores[i]) > 1e-6*max(1, math.Abs(res.Score)) {
					t.Errorf("%s %s: good image %d: station score %v, trainer's %v: want equal", method, color, i, res.Score, m.TrainScores[i])
				}
			}
		}
		gs, err := scoreRaw(m.ONNX, m.Input, 2, heldOut)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := scoreRaw(m.ONNX, m.Input, 2, wrong)
		if err != nil {
			t.Fatal(err)
		}
		auroc := eval.EvaluateScores(gs, ds)
		caught := 0
		for _, s := range ds {
			if s > m.Threshold {
				caught++
			}
		}
		t.Logf("%s %s (%d labelled): %s, input %v, supervised %v, AUROC %.3f, %d of %d wrong colours caught at threshold %.4g",
			method, color, len(c.defects), m.Method, m.Input, m.Supervised, auroc, caught, len(ds), m.Threshold)
		if len(c.defects) > 0 && !m.Supervised {
			t.Errorf("%s with %d labelled defects: no supervised head", method, len(c.defects))
		}
		switch color {
		case ColorAuto:
			if auroc < 0.99 || caught < len(ds) {
				t.Errorf("%s in colour: AUROC %.3f, caught %d of %d: want every wrong colour caught", method, auroc, caught, len(ds))
			}
		case ColorGray:
			if caught > len(ds)/4 {
				t.Errorf("%s in gray: caught %d of %d defects of colour only: the test's parts are not what it says", method, caught, len(ds))
			}
		}
	}
}
