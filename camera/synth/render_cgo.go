//go:build cgo

package synth

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"

	"gocv.io/x/gocv"

	"github.com/takt-edge/takt/camera"
)

// ss is the supersampling factor of the part layer: it is drawn at ss times the output
// resolution, posed there, and averaged down, which anti-aliases every shape.
const ss = 2

const haveCgo = true

// render draws the scene and returns its BGR pixels.
func render(sc *scene) ([]byte, error) {
	W, H := sc.w, sc.h
	bg := drawFixture(sc)

	part2, mask2 := drawPart(sc)
	defer part2.Close()
	defer mask2.Close()

	m := gocv.NewMatWithSize(2, 3, gocv.MatTypeCV64F)
	defer m.Close()
	p := sc.pose
	for i, v := range []float64{p.a, p.b, p.c * ss, p.d, p.e, p.f * ss} {
		m.SetDoubleAt(i/3, i%3, v)
	}
	size2 := image.Pt(W*ss, H*ss)
	warped := gocv.NewMat()
	defer warped.Close()
	warpedMask := gocv.NewMat()
	defer warpedMask.Close()
	gocv.WarpAffineWithParams(part2, &warped, m, size2, gocv.InterpolationLinear, gocv.BorderConstant, color.RGBA{})
	gocv.WarpAffineWithParams(mask2, &warpedMask, m, size2, gocv.InterpolationLinear, gocv.BorderConstant, color.RGBA{})
	part := gocv.NewMat()
	defer part.Close()
	mask := gocv.NewMat()
	defer mask.Close()
	gocv.Resize(warped, &part, image.Pt(W, H), 0, 0, gocv.InterpolationArea)
	gocv.Resize(warpedMask, &mask, image.Pt(W, H), 0, 0, gocv.InterpolationArea)
	shadow := gocv.NewMat()
	defer shadow.Close()
	sigma := 5 * sc.s
	gocv.GaussianBlur(mask, &shadow, image.Pt(0, 0), sigma, sigma, gocv.BorderConstant)

	pp, err1 := part.DataPtrUint8()
	mp, err2 := mask.DataPtrUint8()
	sp, err3 := shadow.DataPtrUint8()
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, fmt.Errorf("synth: opencv returned a non-continuous image")
	}

	// Composite: fixture darkened by the part's shadow, the part over it, then the lighting
	// gradient and sensor noise, both different for every part.
	out := make([]byte, W*H*3)
	nr := newRand(sc.seed, streamNoise, sc.index)
	ox, oy := int(math.Round(4*sc.s)), int(math.Round(5*sc.s))
	for y := range H {
		v := (float64(y) - sc.c.Y) / sc.c.Y
		for x := range W {
			u := (float64(x) - sc.c.X) / sc.c.X
			gain := sc.gain0 * (1 + sc.gainX*u + sc.gainY*v) * (1 - sc.vignette*(u*u+v*v))
			i := y*W + x
			a := float64(mp[i]) / 255
			sh := 0.0
			if sx, sy := x-ox, y-oy; sx >= 0 && sy >= 0 {
				sh = 0.5 * float64(sp[sy*W+sx]) / 255
			}
			for ch := range 3 {
				val := (bg[3*i+ch]*(1-sh)*(1-a)+float64(pp[3*i+ch])*a)*gain + nr.NormFloat64()*sc.noiseSigma
				out[3*i+ch] = clamp8(val)
			}
		}
	}
	return out, nil
}

func clamp8(v float64) byte {
	switch {
	case v <= 0:
		return 0
	case v >= 255:
		return 255
	}
	return byte(v + 0.5)
}

func bgr(b, g, r float64) color.RGBA {
	return color.RGBA{R: clamp8(r), G: clamp8(g), B: clamp8(b), A: 255}
}

func gray(v float64) color.RGBA { return bgr(v, v, v) }

func matFromBytes(b []byte, rows, cols int, typ gocv.MatType) gocv.Mat {
	m := gocv.NewMatWithSize(rows, cols, typ)
	d, err := m.DataPtrUint8()
	if err != nil {
		panic(err) // a freshly allocated Mat is continuous
	}
	copy(d, b)
	return m
}

// valueNoise returns smooth noise in [-1, 1] with features about cell pixels apart.
func valueNoise(r *rand.Rand, w, h int, cell float64) []float64 {
	gw, gh := int(float64(w)/cell)+2, int(float64(h)/cell)+2
	grid := make([]float64, gw*gh)
	for i := range grid {
		grid[i] = 2*r.Float64() - 1
	}
	smooth := func(t float64) float64 { return t * t * (3 - 2*t) }
	out := make([]float64, w*h)
	for y := range h {
		fy := float64(y) / cell
		y0 := int(fy)
		ty := smooth(fy - float64(y0))
		for x := range w {
			fx := float64(x) / cell
			x0 := int(fx)
			tx := smooth(fx - float64(x0))
			a := grid[y0*gw+x0]*(1-tx) + grid[y0*gw+x0+1]*tx
			b := grid[(y0+1)*gw+x0]*(1-tx) + grid[(y0+1)*gw+x0+1]*tx
			out[y*w+x] = a*(1-ty) + b*ty
		}
	}
	return out
}

// drawFixture returns the fixture (same for every part of a seed) as BGR float pixels.
func drawFixture(sc *scene) []float64 {
	W, H, s := sc.w, sc.h, sc.s
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(72, 68, 64, 0), H, W, gocv.MatTypeCV8UC3)
	defer img.Close()
	at := func(v vec) image.Point { return v.pt(1) }

	// The nest the part sits in: a pocket a little larger than the plate, its walls lit on
	// the side facing the light.
	pocket := roundedRect(sc.c, sc.plateW+28*s, sc.plateH+28*s, sc.plateR+14*s, 12)
	fillPoly(&img, pocket, 1, bgr(58, 55, 52))
	shadeOutline(&img, pocket, 1, 2*s, func(n vec) color.RGBA { return gray(70 - 50*n.dot(light)) })

	// Socket head cap screws holding the fixture, one per corner.
	m := 44 * s
	for _, p := range []vec{{m, m}, {float64(W) - m, m}, {m, float64(H) - m}, {float64(W) - m, float64(H) - m}} {
		gocv.CircleWithParams(&img, at(p.add(vec{2, 3}.mul(s))), int(17*s), bgr(40, 38, 36), -1, gocv.LineAA, 0)
		gocv.CircleWithParams(&img, at(p), int(16*s), bgr(100, 100, 104), -1, gocv.LineAA, 0)
		shadeArcs(&img, circle{p, 15 * s}, 1, 2*s, func(n vec) color.RGBA { return gray(110 + 70*n.dot(light)) })
		var hex []vec
		for i := range 6 {
			hex = append(hex, p.add(polar(6.5*s, math.Pi/6+float64(i)*math.Pi/3)))
		}
		fillPoly(&img, hex, 1, bgr(24, 24, 26))
	}

	// Locating pins: two against the left edge of the part, one against the top edge.
	for _, p := range []vec{
		sc.c.add(vec{-sc.plateW/2 - 8*s, -85 * s}),
		sc.c.add(vec{-sc.plateW/2 - 8*s, 85 * s}),
		sc.c.add(vec{120 * s, -sc.plateH/2 - 8*s}),
	} {
		gocv.CircleWithParams(&img, at(p.add(vec{2, 3}.mul(s))), int(7*s), bgr(35, 33, 32), -1, gocv.LineAA, 0)
		gocv.CircleWithParams(&img, at(p), int(7*s), bgr(150, 152, 156), -1, gocv.LineAA, 0)
		gocv.CircleWithParams(&img, at(p.add(vec{-2, -2.5}.mul(s))), int(math.Max(2.5*s, 1)), gray(235), -1, gocv.LineAA, 0)
	}
	gocv.PutTextWithParams(&img, "NEST 07", at(vec{20 * s, float64(H) - 14*s}), gocv.FontHersheySimplex,
		0.45*s, bgr(110, 106, 102), 1, gocv.LineAA, false)

	// Anodized, bead-blasted surface: blotches and fine grain, fixed for the fixture.
	r := newRand(sc.seed, streamFixture, 0)
	blotch := valueNoise(r, W, H, 50*s)
	src, _ := img.DataPtrUint8()
	out := make([]float64, W*H*3)
	for i := range W * H {
		t := 5*blotch[i] + 3*r.NormFloat64()
		for ch := range 3 {
			out[3*i+ch] = float64(src[3*i+ch]) + t
		}
	}
	return out
}

// drawPart draws the unposed part at ss times the output resolution and returns it (BGR)
// with its coverage mask (8-bit, 255 on the part).
func drawPart(sc *scene) (gocv.Mat, gocv.Mat) {
	W, H, s := sc.w*ss, sc.h*ss, sc.s
	outline := roundedRect(sc.c, sc.plateW, sc.plateH, sc.plateR, 24)

	// Brushed aluminium: streaks along x, a broad sheen across the plate, faint blotches.
	br := newRand(sc.seed, streamBrush, sc.index)
	blotch := valueNoise(br, W, H, 60*s*ss)
	base := make([]byte, W*H*3)
	row := make([]float64, W)
	const run = 24 // box length of the brushing, in supersampled pixels
	diag := vec{1, 0.6}.unit()
	half := math.Hypot(sc.plateW, sc.plateH) / 2 * ss
	prev, prev2 := br.NormFloat64(), br.NormFloat64()
	for y := range H {
		for x := range row {
			row[x] = br.NormFloat64()
		}
		streak := br.NormFloat64()
		streak, prev, prev2 = 0.5*streak+0.3*prev+0.2*prev2, streak, prev
		sum := 0.0
		for x := range W {
			sum += row[x]
			if x >= run {
				sum -= row[x-run]
			}
			t := vec{float64(x) - sc.c.X*ss, float64(y) - sc.c.Y*ss}.dot(diag)/half - sc.sheenPos
			sheen := sc.sheenAmp * math.Exp(-t*t/(sc.sheenWidth*sc.sheenWidth))
			d := sc.brushAmp*(0.9*sum/math.Sqrt(run)+0.7*streak) + 2*blotch[y*W+x] + sheen
			i := 3 * (y*W + x)
			base[i], base[i+1], base[i+2] = clamp8(170+d), clamp8(168+d), clamp8(164+d)
		}
	}
	img := matFromBytes(base, H, W, gocv.MatTypeCV8UC3)

	// Chamfered edge: bright where it faces the light.
	inset := roundedRect(sc.c, sc.plateW-sc.chamfer, sc.plateH-sc.chamfer, sc.plateR-sc.chamfer/2, 24)
	shadeOutline(&img, inset, ss, sc.chamfer, func(n vec) color.RGBA { return gray(150 + 95*n.dot(light)) })

	// Turned boss with a groove and a bore.
	tr := newRand(sc.seed, streamTurning, sc.index)
	b := sc.boss
	for k := 3; k >= 0; k-- {
		shade := 168 - 14*float64(4-k)
		gocv.CircleWithParams(&img, b.C.add(vec{3, 4}.mul(s)).pt(ss), int((b.R+float64(k)*1.5*s)*ss), gray(shade), -1, gocv.LineAA, 0)
	}
	gocv.CircleWithParams(&img, b.C.pt(ss), int(b.R*ss), bgr(184, 182, 178), -1, gocv.LineAA, 0)
	for rr := sc.bore.R + sc.chamfer; rr < b.R-sc.chamfer; rr += 1.0 / ss {
		gocv.CircleWithParams(&img, b.C.pt(ss), int(rr*ss), gray(182+6*tr.NormFloat64()), 1, gocv.LineAA, 0)
	}
	shadeArcs(&img, circle{b.C, b.R - sc.chamfer/2}, ss, sc.chamfer, func(n vec) color.RGBA { return gray(160 + 90*n.dot(light)) })
	gocv.CircleWithParams(&img, b.C.add(vec{0.8, 0.8}.mul(s)).pt(ss), int(sc.grooveR*ss), gray(215), int(2*s*ss), gocv.LineAA, 0)
	gocv.CircleWithParams(&img, b.C.pt(ss), int(sc.grooveR*ss), gray(95), int(2*s*ss), gocv.LineAA, 0)
	drawHole(&img, sc.bore, sc.chamfer*1.3)

	for i, h := range sc.holes {
		if sc.defect.kind == MissingHole && sc.defect.hole == i {
			continue // not drilled: plate material stays
		}
		drawHole(&img, h, sc.chamfer)
	}

	// Engraved part number and text, laser-marked 2D code and serial number.
	engrave := func(text string, at vec, scale, thick float64) {
		th := int(math.Max(1, math.Round(thick*s*ss)))
		gocv.PutTextWithParams(&img, text, at.add(vec{0.7, 0.7}.mul(s)).pt(ss), gocv.FontHersheySimplex, scale*s*ss, gray(212), th, gocv.LineAA, false)
		gocv.PutTextWithParams(&img, text, at.pt(ss), gocv.FontHersheySimplex, scale*s*ss, gray(78), th, gocv.LineAA, false)
	}
	engrave(sc.partNo, sc.textAt, 0.85, 2)
	engrave(sc.rev, sc.revAt, 0.4, 1)
	for i := range codeN {
		for j := range codeN {
			if sc.code[i][j] {
				p := sc.codeAt.add(vec{float64(j), float64(i)}.mul(sc.codeMod))
				q := p.add(vec{sc.codeMod, sc.codeMod})
				gocv.Rectangle(&img, image.Rectangle{p.pt(ss), q.pt(ss).Sub(image.Pt(1, 1))}, bgr(58, 60, 64), -1)
			}
		}
	}
	gocv.PutTextWithParams(&img, sc.serial, sc.snAt.pt(ss), gocv.FontHersheySimplex, 0.45*s*ss, bgr(58, 60, 64), int(math.Max(1, math.Round(1.2*s*ss))), gocv.LineAA, false)

	drawDefect(&img, sc)

	mask := gocv.NewMatWithSize(H, W, gocv.MatTypeCV8U)
	fillPoly(&mask, outline, ss, gray(255))
	return img, mask
}

// drawHole draws a drilled through hole: a countersink lit on the side away from the light
// and a dark bore.
func drawHole(img *gocv.Mat, h circle, ch float64) {
	shadeArcs(img, circle{h.C, h.R + ch/2}, ss, ch, func(n vec) color.RGBA { return gray(140 - 90*n.dot(light)) })
	gocv.CircleWithParams(img, h.C.pt(ss), int(h.R*ss), gray(30), -1, gocv.LineAA, 0)
	// The far wall catches a little light.
	gocv.EllipseWithParams(img, h.C.pt(ss), image.Pt(int((h.R-1)*ss), int((h.R-1)*ss)), 0, 10, 80,
		gray(75), int(math.Max(1, 0.15*h.R*ss)), gocv.LineAA, 0)
}

func drawDefect(img *gocv.Mat, sc *scene) {
	g := sc.defect
	switch g.kind {
	case Scratch:
		core, lip := gray(248), gray(55)
		if !g.bright {
			core, lip = gray(62), gray(222)
		}
		off := offsetPolyline(g.pts, g.width*0.85)
		polyline(img, off, ss, g.width*0.7, lip)
		polyline(img, g.pts, ss, g.width, core)
	case Spot:
		// Opacity of the stain: a body with a darker core and droplets, feathered by a blur,
		// then a dark brown blended over the plate by that opacity.
		alpha := gocv.NewMatWithSize(img.Rows(), img.Cols(), gocv.MatTypeCV8U)
		defer alpha.Close()
		c := centroid(g.pts)
		core := make([]vec, len(g.pts))
		for i, p := range g.pts {
			core[i] = c.add(p.sub(c).mul(0.6))
		}
		fillPoly(&alpha, g.pts, ss, gray(200))
		fillPoly(&alpha, core, ss, gray(240))
		for _, d := range g.drops {
			gocv.CircleWithParams(&alpha, d.C.pt(ss), int(d.R*ss), gray(235), -1, gocv.LineAA, 0)
		}
		sigma := 1.2 * sc.s * ss
		gocv.GaussianBlur(alpha, &alpha, image.Pt(0, 0), sigma, sigma, gocv.BorderConstant)
		ap, _ := alpha.DataPtrUint8()
		ip, _ := img.DataPtrUint8()
		stain := [3]float64{30, 36, 46}
		for i, a := range ap {
			if a == 0 {
				continue
			}
			k := float64(a) / 255
			for ch := range 3 {
				ip[3*i+ch] = clamp8(float64(ip[3*i+ch])*(1-k) + stain[ch]*k)
			}
		}
	case Crack:
		// Dark fissure, widest in the middle, with a bright broken edge on one side.
		taper := func(ps []vec, w float64, c color.RGBA) {
			for i := 1; i < len(ps); i++ {
				t := (float64(i) - 0.5) / float64(len(ps)-1)
				k := 0.55 + 0.45*math.Sin(math.Pi*t)
				polyline(img, ps[i-1:i+1], ss, w*k, c)
			}
		}
		taper(offsetPolyline(g.pts, g.width*0.6), g.width*0.45, gray(200))
		taper(g.pts, g.width, gray(24))
		if len(g.branch) > 1 {
			taper(g.branch, g.width*0.6, gray(30))
		}
	}
}

func centroid(ps []vec) vec {
	var c vec
	for _, p := range ps {
		c = c.add(p)
	}
	return c.mul(1 / float64(len(ps)))
}

// offsetPolyline shifts each point of ps sideways (to the left of its direction) by d.
func offsetPolyline(ps []vec, d float64) []vec {
	out := make([]vec, len(ps))
	for i := range ps {
		a, b := ps[max(i-1, 0)], ps[min(i+1, len(ps)-1)]
		t := b.sub(a).unit()
		out[i] = ps[i].add(vec{t.Y, -t.X}.mul(d))
	}
	return out
}

func polyline(img *gocv.Mat, ps []vec, k, width float64, c color.RGBA) {
	th := int(math.Max(1, math.Round(width*k)))
	for i := 1; i < len(ps); i++ {
		gocv.Line(img, ps[i-1].pt(k), ps[i].pt(k), c, th)
	}
}

func fillPoly(img *gocv.Mat, ps []vec, k float64, c color.RGBA) {
	pts := make([]image.Point, len(ps))
	for i, p := range ps {
		pts[i] = p.pt(k)
	}
	pv := gocv.NewPointsVectorFromPoints([][]image.Point{pts})
	defer pv.Close()
	gocv.FillPolyWithParams(img, pv, c, gocv.LineAA, 0, image.Point{})
}

// shadeOutline strokes a closed clockwise outline, each segment colored from its outward
// normal.
func shadeOutline(img *gocv.Mat, ps []vec, k, width float64, shade func(n vec) color.RGBA) {
	th := int(math.Max(1, math.Round(width*k)))
	for i := range ps {
		a, b := ps[i], ps[(i+1)%len(ps)]
		t := b.sub(a)
		if t.len() == 0 {
			continue
		}
		t = t.unit()
		gocv.Line(img, a.pt(k), b.pt(k), shade(vec{t.Y, -t.X}), th)
	}
}

// shadeArcs strokes a circle in short arcs, each colored from its outward normal.
func shadeArcs(img *gocv.Mat, c circle, k, width float64, shade func(n vec) color.RGBA) {
	const n = 48
	th := int(math.Max(1, math.Round(width*k)))
	r := int(math.Round(c.R * k))
	for i := range n {
		a0 := 360 * float64(i) / n
		mid := (a0 + 180.0/n) * math.Pi / 180
		gocv.EllipseWithParams(img, c.C.pt(k), image.Pt(r, r), 0, a0, a0+360.0/n+1, shade(polar(1, mid)), th, gocv.LineAA, 0)
	}
}

type aviWriter struct {
	vw   *gocv.VideoWriter
	w, h int
	name string
}

func openVideo(name string, w, h int, fps float64) (videoSink, error) {
	vw, err := gocv.VideoWriterFile(name, "MJPG", fps, w, h, true)
	if err != nil {
		return nil, fmt.Errorf("synth: open video %s: %w", name, err)
	}
	if !vw.IsOpened() {
		vw.Close()
		return nil, fmt.Errorf("synth: OpenCV cannot write MJPG to %s", name)
	}
	return &aviWriter{vw: vw, w: w, h: h, name: name}, nil
}

func (a *aviWriter) Add(f camera.Frame) error {
	if f.Width != a.w || f.Height != a.h || f.Channels != 3 {
		return fmt.Errorf("synth: video frame %dx%dx%d, want %dx%dx3", f.Width, f.Height, f.Channels, a.w, a.h)
	}
	m := matFromBytes(f.Pix, f.Height, f.Width, gocv.MatTypeCV8UC3)
	defer m.Close()
	return a.vw.Write(m)
}

func (a *aviWriter) Close() error {
	if a.vw == nil {
		return nil
	}
	err := a.vw.Close()
	a.vw = nil
	return err
}

// probeVideo decodes every frame of a video file and returns their count and the size of
// the last one.
func probeVideo(name string) (int, image.Point, error) {
	vc, err := gocv.VideoCaptureFile(name)
	if err != nil {
		return 0, image.Point{}, fmt.Errorf("synth: read back video: %w", err)
	}
	defer vc.Close()
	if !vc.IsOpened() {
		return 0, image.Point{}, fmt.Errorf("synth: OpenCV cannot read back %s", name)
	}
	m := gocv.NewMat()
	defer m.Close()
	n := 0
	var size image.Point
	for vc.Read(&m) && !m.Empty() {
		n++
		size = image.Pt(m.Cols(), m.Rows())
	}
	return n, size, nil
}
