package web

import (
	"context"
	"math"
	"sync"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
)

// Recent keeps the last parts for the live view: the verdict, and once the renderer got to
// them a JPEG of the frame and of the heatmap overlay. It fans part events out to the
// page's server-sent-event subscribers.
type Recent struct {
	mu    sync.Mutex
	parts []*part // oldest first, at most max
	max   int
	subs  map[chan event]struct{}

	work chan renderJob // to the renderer; parts are dropped from rendering when it is full
}

// part is one recent part.
type part struct {
	V       store.Verdict
	Image   []byte // JPEG of the frame; nil until rendered (or when the frame had no pixels)
	Heatmap []byte // JPEG of the frame with the anomaly map overlaid; nil without a map
}

type renderJob struct {
	id     uint64
	frame  camera.Frame
	amap   []float32
	mw, mh int
	thr    float64
}

// event is one server-sent event.
type event struct {
	name string // "part", "label", "status"
	data any
}

// NewRecent keeps the last n parts.
func NewRecent(n int) *Recent {
	return &Recent{max: n, subs: map[chan event]struct{}{}, work: make(chan renderJob, 4)}
}

// Add records a committed part with its frame (whose pixels the caller gives up) and
// anomaly map (nil when none). It never blocks: when the renderer is behind, the part
// shows its stored image only.
func (r *Recent) Add(v store.Verdict, f camera.Frame, amap []float32, mw, mh int) {
	r.mu.Lock()
	r.parts = append(r.parts, &part{V: v})
	if len(r.parts) > r.max {
		r.parts[0] = nil
		r.parts = r.parts[1:]
	}
	r.mu.Unlock()
	if f.Pix != nil {
		select {
		case r.work <- renderJob{id: v.ID, frame: f, amap: amap, mw: mw, mh: mh, thr: v.Threshold}:
		default: // the renderer is behind: this part shows its stored image only
			r.publish(event{name: "part", data: v})
		}
		return
	}
	r.publish(event{name: "part", data: v})
}

func (r *Recent) get(id uint64) (part, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if p.V.ID == id {
			return *p, true
		}
	}
	return part{}, false
}

// SetLabel updates the label of a recent part and tells the page.
func (r *Recent) SetLabel(id uint64, label string) {
	r.mu.Lock()
	var v store.Verdict
	found := false
	for _, p := range r.parts {
		if p.V.ID == id {
			p.V.Label = label
			v, found = p.V, true
		}
	}
	r.mu.Unlock()
	if found {
		r.publish(event{name: "label", data: v})
	}
}

func (r *Recent) subscribe() (chan event, func()) {
	ch := make(chan event, 32)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs, ch)
		r.mu.Unlock()
	}
}

// publish sends e to every subscriber; a subscriber too slow to keep up misses it (the
// page reloads the list when it reconnects).
func (r *Recent) publish(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Run encodes recent parts' images and heatmaps until ctx is done.
func (r *Recent) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-r.work:
			r.render(j)
		}
	}
}

func (r *Recent) render(j renderJob) {
	img, err := camera.Encode(j.frame, "jpg", 85)
	if err != nil {
		img = nil
	}
	var heat []byte
	if len(j.amap) == j.mw*j.mh && j.mw > 0 && j.thr > 0 {
		if f, ok := overlay(j.frame, j.amap, j.mw, j.mh, j.thr); ok {
			heat, _ = camera.Encode(f, "jpg", 85)
		}
	}
	r.mu.Lock()
	var v store.Verdict
	for _, p := range r.parts {
		if p.V.ID == j.id {
			p.Image, p.Heatmap = img, heat
			v = p.V
		}
	}
	r.mu.Unlock()
	if v.ID != 0 {
		r.publish(event{name: "part", data: v})
	}
}

// overlay blends a colorized anomaly map over the frame. The map is scaled to the frame
// (the model saw the whole frame resized) and normalized by the threshold: blue is far
// below it, red at or above it; the overlay is transparent where the map is near zero.
func overlay(f camera.Frame, amap []float32, mw, mh int, thr float64) (camera.Frame, bool) {
	if f.Channels != 3 && f.Channels != 1 {
		return camera.Frame{}, false
	}
	out := camera.Frame{CameraID: f.CameraID, Seq: f.Seq, Time: f.Time, Width: f.Width, Height: f.Height, Channels: 3,
		Pix: make([]byte, f.Width*f.Height*3), Origin: f.Origin}
	lut := heatLUT()
	for y := range f.Height {
		my := min(y*mh/f.Height, mh-1)
		row := amap[my*mw : (my+1)*mw]
		for x := range f.Width {
			v := float64(row[min(x*mw/f.Width, mw-1)]) / thr
			if math.IsNaN(v) || v < 0 {
				v = 0
			}
			var b, g, r byte
			if f.Channels == 3 {
				i := (y*f.Width + x) * 3
				b, g, r = f.Pix[i], f.Pix[i+1], f.Pix[i+2]
			} else {
				b = f.Pix[y*f.Width+x]
				g, r = b, b
			}
			// Below a tenth of the threshold nothing shows; at the threshold the color is
			// 65% opaque.
			a := min(max((v-0.1)/0.9, 0), 1) * 0.65
			c := lut[int(min(v, 1)*255)]
			o := (y*f.Width + x) * 3
			out.Pix[o] = byte(float64(b)*(1-a) + float64(c[0])*a)
			out.Pix[o+1] = byte(float64(g)*(1-a) + float64(c[1])*a)
			out.Pix[o+2] = byte(float64(r)*(1-a) + float64(c[2])*a)
		}
	}
	return out, true
}

var (
	lutOnce sync.Once
	lut     [256][3]byte // BGR
)

// heatLUT is a blue-cyan-green-yellow-red ramp, BGR.
func heatLUT() *[256][3]byte {
	lutOnce.Do(func() {
		stops := [][3]float64{{255, 0, 0}, {255, 255, 0}, {0, 255, 0}, {0, 255, 255}, {0, 0, 255}} // BGR
		for i := range 256 {
			t := float64(i) / 255 * float64(len(stops)-1)
			k := min(int(t), len(stops)-2)
			u := t - float64(k)
			for c := range 3 {
				lut[i][c] = byte(stops[k][c]*(1-u) + stops[k+1][c]*u)
			}
		}
	})
	return &lut
}
