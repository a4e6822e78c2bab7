package synth

import (
	"fmt"
	"hash/fnv"
	"image"
	"math"
	"math/rand/v2"
)

// This file holds what is decided before any pixel is drawn: geometry in the part's own
// (canonical, unposed) coordinates at output resolution, the pose, per-part appearance and
// the defect. It is pure Go; render_cgo.go draws it.

// Random streams. Each quantity draws from its own stream so that, for one seed and index,
// the good part and every defective variant share the scene exactly.
const (
	streamPlan uint64 = iota + 1
	streamFixture
	streamScene
	streamTurning
	streamBrush
	streamCode
	streamNoise
	streamDefect
)

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func mix(seed, stream, index uint64) uint64 {
	return splitmix(splitmix(seed^splitmix(stream)) + index)
}

func newRand(seed int64, stream uint64, index int) *rand.Rand {
	s := mix(uint64(seed), stream, uint64(index))
	return rand.New(rand.NewPCG(s, splitmix(s)))
}

func uniform(r *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*r.Float64() }

type vec struct{ X, Y float64 }

func (v vec) add(u vec) vec     { return vec{v.X + u.X, v.Y + u.Y} }
func (v vec) sub(u vec) vec     { return vec{v.X - u.X, v.Y - u.Y} }
func (v vec) mul(k float64) vec { return vec{v.X * k, v.Y * k} }
func (v vec) len() float64      { return math.Hypot(v.X, v.Y) }
func (v vec) dot(u vec) float64 { return v.X*u.X + v.Y*u.Y }
func (v vec) unit() vec         { return v.mul(1 / v.len()) }
func polar(r, a float64) vec    { return vec{r * math.Cos(a), r * math.Sin(a)} }
func (v vec) pt(k float64) image.Point {
	return image.Pt(int(math.Round(v.X*k)), int(math.Round(v.Y*k)))
}

type circle struct {
	C vec
	R float64
}

// affine maps canonical part coordinates to frame coordinates: x' = a x + b y + c,
// y' = d x + e y + f.
type affine struct{ a, b, c, d, e, f float64 }

func (m affine) apply(p vec) vec {
	return vec{m.a*p.X + m.b*p.Y + m.c, m.d*p.X + m.e*p.Y + m.f}
}

// light points from the surface toward the light (upper left, as on a ring light mounted
// slightly off axis). Surfaces whose normal tilts toward it look brighter.
var light = vec{-0.6, -0.8}

const codeN = 12 // modules per side of the 2D code

// scene is everything RenderPart draws, in pixels of the output frame.
type scene struct {
	w, h  int
	s     float64 // scale against 640x480
	c     vec     // frame center, where the unposed part is centered
	seed  int64
	index int

	plateW, plateH, plateR float64
	chamfer                float64
	holes                  []circle // through holes, in drawing order
	boss, bore             circle
	grooveR                float64
	partNo, rev, serial    string
	textAt, revAt, snAt    vec
	codeAt                 vec // top-left of the 2D code
	codeMod                float64
	marking                struct{ Min, Max vec } // text and code, relative to c
	code                   [codeN][codeN]bool

	angle, dx, dy float64 // pose: degrees, pixels
	pose          affine

	brushAmp, sheenAmp, sheenPos, sheenWidth float64
	gain0, gainX, gainY, vignette            float64
	noiseSigma                               float64

	defect defectGeom
}

type defectGeom struct {
	kind   Defect
	hole   int   // missing_hole: index into scene.holes
	pts    []vec // scratch, crack: polyline; spot: blob outline
	branch []vec // crack: side branch, may be empty
	drops  []circle
	spotR  float64 // spot: radius
	bright bool    // scratch: bright groove (else dark)
	width  float64 // scratch, crack: line width in pixels
	pad    float64 // extra margin of the bounding box
}

func newScene(o RenderOptions, index int, d Defect) *scene {
	s := math.Min(float64(o.Width)/640, float64(o.Height)/480)
	sc := &scene{
		w: o.Width, h: o.Height, s: s,
		c:    vec{float64(o.Width) / 2, float64(o.Height) / 2},
		seed: o.Seed, index: index,
		plateW: 440 * s, plateH: 300 * s, plateR: 32 * s, chamfer: 3.5 * s,
		partNo: "TK-4471-A", rev: "REV C  AL6061-T6",
		serial: fmt.Sprintf("SN %06d", index),
	}
	at := func(x, y float64) vec { return sc.c.add(vec{x * s, y * s}) }
	for _, p := range []vec{{-192, -122}, {192, -122}, {192, 122}, {-192, 122}} {
		sc.holes = append(sc.holes, circle{at(p.X, p.Y), 12 * s})
	}
	sc.holes = append(sc.holes, circle{at(-50, 126), 7 * s}, circle{at(50, 126), 7 * s})
	sc.boss = circle{at(-135, 0), 54 * s}
	sc.bore = circle{at(-135, 0), 18 * s}
	sc.grooveR = 38 * s
	sc.textAt = at(30, -98)
	sc.revAt = at(32, -76)
	sc.codeAt = at(-32, -120)
	sc.codeMod = 3.5 * s
	sc.snAt = at(32, -55)
	sc.marking.Min, sc.marking.Max = vec{-36 * s, -124 * s}, vec{190 * s, -48 * s}

	r := newRand(o.Seed, streamScene, index)
	sc.angle = uniform(r, -1.5, 1.5)
	sc.dx = uniform(r, -4, 4) * s
	sc.dy = uniform(r, -4, 4) * s
	sc.brushAmp = uniform(r, 2, 3)
	sc.sheenAmp = uniform(r, 14, 17)
	sc.sheenPos = uniform(r, -0.06, 0.06)
	sc.sheenWidth = uniform(r, 0.21, 0.25)
	sc.gain0 = uniform(r, 0.985, 1.015)
	sc.gainX = uniform(r, -0.02, 0.02)
	sc.gainY = uniform(r, -0.02, 0.02)
	sc.vignette = uniform(r, 0.12, 0.14)
	sc.noiseSigma = uniform(r, 1.5, 2.2)

	th := sc.angle * math.Pi / 180
	cs, sn := math.Cos(th), math.Sin(th)
	sc.pose = affine{a: cs, b: -sn, d: sn, e: cs}
	sc.pose.c = sc.c.X - (cs*sc.c.X - sn*sc.c.Y) + sc.dx
	sc.pose.f = sc.c.Y - (sn*sc.c.X + cs*sc.c.Y) + sc.dy

	cr := newRand(o.Seed, streamCode, index)
	for i := range codeN {
		for j := range codeN {
			switch {
			case j == 0 || i == codeN-1: // solid finder edges, left and bottom
				sc.code[i][j] = true
			case i == 0 || j == codeN-1: // clock track, top and right
				sc.code[i][j] = (i+j)%2 == 0
			default:
				sc.code[i][j] = cr.IntN(2) == 1
			}
		}
	}

	if d != None {
		sc.defect = sc.placeDefect(d)
	}
	return sc
}

// onPlate reports whether p is on plain plate material at least margin away from the plate
// edge, every hole, the boss (with its shadow) and the marking.
func (sc *scene) onPlate(p vec, margin float64) bool {
	q := p.sub(sc.c)
	if math.Abs(q.X) > sc.plateW/2-margin || math.Abs(q.Y) > sc.plateH/2-margin {
		return false
	}
	if q.X > sc.marking.Min.X-margin && q.X < sc.marking.Max.X+margin &&
		q.Y > sc.marking.Min.Y-margin && q.Y < sc.marking.Max.Y+margin {
		return false
	}
	for _, h := range sc.holes {
		if p.sub(h.C).len() < h.R+margin {
			return false
		}
	}
	return p.sub(sc.boss.C).len() >= sc.boss.R+5*sc.s+margin
}

// boxOnPlate reports whether the whole bounding box of g, unposed, lies on plain plate
// material at least margin away from any feature, so that in the posed frame the labelled
// box holds the defect on plain plate and no edge that moves from part to part.
func (sc *scene) boxOnPlate(g defectGeom, margin float64) bool {
	lo, hi := g.bounds()
	step := 4 * sc.s
	for y := lo.Y; ; y = math.Min(y+step, hi.Y) {
		for x := lo.X; ; x = math.Min(x+step, hi.X) {
			if !sc.onPlate(vec{x, y}, margin) {
				return false
			}
			if x == hi.X {
				break
			}
		}
		if y == hi.Y {
			return true
		}
	}
}

// bounds returns the corners of g's unposed bounding box, padded.
func (g defectGeom) bounds() (lo, hi vec) {
	lo, hi = vec{math.Inf(1), math.Inf(1)}, vec{math.Inf(-1), math.Inf(-1)}
	grow := func(p vec, r float64) {
		lo = vec{math.Min(lo.X, p.X-r), math.Min(lo.Y, p.Y-r)}
		hi = vec{math.Max(hi.X, p.X+r), math.Max(hi.Y, p.Y+r)}
	}
	for _, p := range g.pts {
		grow(p, g.pad)
	}
	for _, p := range g.branch {
		grow(p, g.pad)
	}
	for _, d := range g.drops {
		grow(d.C, d.R+g.pad)
	}
	return lo, hi
}

func (sc *scene) randomPoint(r *rand.Rand, margin float64) vec {
	for {
		p := sc.c.add(vec{uniform(r, -sc.plateW/2, sc.plateW/2), uniform(r, -sc.plateH/2, sc.plateH/2)})
		if sc.onPlate(p, margin) {
			return p
		}
	}
}

func defectStream(d Defect) uint64 {
	h := fnv.New32a()
	h.Write([]byte(d))
	return uint64(h.Sum32())
}

// placeDefect draws the defect's geometry from its own random stream. It picks a center on
// plain plate material, then shrinks the defect (down to half size) until its whole box lies
// on plain plate, clear of edges that move with the pose (there a defect would be hard to
// tell from part-to-part variation); failing that, it tries another center. After maxTries
// it takes what it has, so placement always ends.
func (sc *scene) placeDefect(d Defect) defectGeom {
	r := newRand(sc.seed, streamDefect|defectStream(d)<<32, sc.index)
	if d == MissingHole {
		return defectGeom{kind: d, hole: r.IntN(len(sc.holes)), pad: 3 * sc.s}
	}
	clear := 14 * sc.s
	for try := 0; ; try++ {
		c := sc.randomPoint(r, clear)
		for k := 1.0; k > 0.45; k -= 0.1 {
			var g defectGeom
			switch d {
			case Scratch:
				g = sc.scratch(r, c, k)
			case Spot:
				g = sc.spot(r, c, k)
			case Crack:
				g = sc.crack(r, c, k)
			}
			if sc.boxOnPlate(g, clear) || try > maxTries {
				return g
			}
		}
	}
}

const maxTries = 2000

// scratch returns a slightly curved groove centered on c, k times the full size.
func (sc *scene) scratch(r *rand.Rand, c vec, k float64) defectGeom {
	s := sc.s
	g := defectGeom{kind: Scratch, bright: r.IntN(2) == 0, width: math.Max(4*s, 1.5)}
	g.pad = 1.2*g.width + 2*s
	dir := polar(1, uniform(r, 0, math.Pi))
	length := uniform(r, 50, 100) * s * k
	a, b := c.sub(dir.mul(length/2)), c.add(dir.mul(length/2))
	ctl := c.add(vec{-dir.Y, dir.X}.mul(uniform(r, -0.12, 0.12) * length))
	for i := range 25 {
		t := float64(i) / 24
		g.pts = append(g.pts, a.mul((1-t)*(1-t)).add(ctl.mul(2*t*(1-t))).add(b.mul(t*t)))
	}
	return g
}

// crack returns a jagged, sometimes branched fissure centered on c, k times the full size.
func (sc *scene) crack(r *rand.Rand, c vec, k float64) defectGeom {
	s := sc.s
	g := defectGeom{kind: Crack, width: math.Max(3.5*s, 1.5)}
	g.pad = g.width/2 + 2*s
	heading := uniform(r, 0, 2*math.Pi)
	p, dir := vec{}, heading
	g.pts = append(g.pts, p)
	for range 13 + r.IntN(7) {
		dir = heading + 0.3*(dir-heading) + r.NormFloat64()*0.5
		p = p.add(polar(uniform(r, 3.5, 8)*s*k, dir))
		g.pts = append(g.pts, p)
	}
	if r.IntN(3) > 0 {
		q := g.pts[len(g.pts)/3+r.IntN(len(g.pts)/3)]
		bh := heading + math.Copysign(uniform(r, 0.5, 1.0), r.Float64()-0.5)
		g.branch = append(g.branch, q)
		for range 5 + r.IntN(5) {
			q = q.add(polar(uniform(r, 3, 7)*s*k, bh+r.NormFloat64()*0.7))
			g.branch = append(g.branch, q)
		}
	}
	lo, hi := g.bounds()
	shift := c.sub(lo.add(hi).mul(0.5))
	for i := range g.pts {
		g.pts[i] = g.pts[i].add(shift)
	}
	for i := range g.branch {
		g.branch[i] = g.branch[i].add(shift)
	}
	return g
}

// spot returns a contamination blob with droplets centered on c, k times the full size.
func (sc *scene) spot(r *rand.Rand, c vec, k float64) defectGeom {
	s := sc.s
	g := defectGeom{kind: Spot}
	rad := uniform(r, 12, 19) * s * k
	ph := [3]float64{uniform(r, 0, 2*math.Pi), uniform(r, 0, 2*math.Pi), uniform(r, 0, 2*math.Pi)}
	amp := [3]float64{uniform(r, 0.08, 0.2), uniform(r, 0.05, 0.12), uniform(r, 0.02, 0.06)}
	for i := range 36 {
		a := 2 * math.Pi * float64(i) / 36
		f := 1 + amp[0]*math.Sin(2*a+ph[0]) + amp[1]*math.Sin(3*a+ph[1]) + amp[2]*math.Sin(5*a+ph[2])
		g.pts = append(g.pts, c.add(polar(rad*f, a)))
	}
	for range 2 + r.IntN(3) {
		g.drops = append(g.drops, circle{c.add(polar(rad*uniform(r, 1.3, 1.9), uniform(r, 0, 2*math.Pi))), uniform(r, 1.8, 3.5) * s})
	}
	g.spotR = rad
	g.pad = 0.1*rad + 4*s // the feathered edge
	return g
}

// defectBox returns the defect's bounding box in frame coordinates, clipped to the frame;
// empty for a good part.
func (sc *scene) defectBox() image.Rectangle {
	g := sc.defect
	if g.kind == None {
		return image.Rectangle{}
	}
	lo, hi := vec{math.Inf(1), math.Inf(1)}, vec{math.Inf(-1), math.Inf(-1)}
	grow := func(p vec, r float64) {
		q := sc.pose.apply(p)
		lo = vec{math.Min(lo.X, q.X-r), math.Min(lo.Y, q.Y-r)}
		hi = vec{math.Max(hi.X, q.X+r), math.Max(hi.Y, q.Y+r)}
	}
	if g.kind == MissingHole {
		h := sc.holes[g.hole]
		grow(h.C, h.R+sc.chamfer+g.pad)
	}
	for _, p := range g.pts {
		grow(p, g.pad)
	}
	for _, p := range g.branch {
		grow(p, g.pad)
	}
	for _, d := range g.drops {
		grow(d.C, d.R+g.pad)
	}
	b := image.Rect(int(math.Floor(lo.X)), int(math.Floor(lo.Y)), int(math.Ceil(hi.X))+1, int(math.Ceil(hi.Y))+1)
	return b.Intersect(image.Rect(0, 0, sc.w, sc.h))
}

// roundedRect returns the outline of a rounded rectangle centered on c, clockwise in image
// coordinates (y down), with n points per corner arc.
func roundedRect(c vec, w, h, r float64, n int) []vec {
	var pts []vec
	corners := []struct {
		c     vec
		start float64
	}{
		{vec{c.X + w/2 - r, c.Y - h/2 + r}, -math.Pi / 2},
		{vec{c.X + w/2 - r, c.Y + h/2 - r}, 0},
		{vec{c.X - w/2 + r, c.Y + h/2 - r}, math.Pi / 2},
		{vec{c.X - w/2 + r, c.Y - h/2 + r}, math.Pi},
	}
	for _, k := range corners {
		for i := range n + 1 {
			pts = append(pts, k.c.add(polar(r, k.start+math.Pi/2*float64(i)/float64(n))))
		}
	}
	return pts
}
