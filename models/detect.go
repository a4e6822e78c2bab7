package models

import (
	"cmp"
	"slices"

	"github.com/takt-edge/takt/models/bundle"
)

// Box is one detection of a detector: its class, confidence and rectangle in frame pixels
// (x0 <= x < x1, y0 <= y < y1).
type Box struct {
	Class      string  `json:"class"`
	Confidence float64 `json:"confidence"`
	X0         float64 `json:"x0"`
	Y0         float64 `json:"y0"`
	X1         float64 `json:"x1"`
	Y1         float64 `json:"y1"`
}

// detection is a box in input pixels, before it is mapped to the frame.
type detection struct {
	x0, y0, x1, y1 float32
	conf           float32
	class          int
}

// maxDetections caps the boxes of one image, as Ultralytics' max_det.
const maxDetections = 300

// detector turns a [1, 4+K, anchors] output (BoxLayoutCXCYWH) into boxes the way
// Ultralytics' non_max_suppression does: each anchor's best class, kept when its score is
// above minConf, then per-class greedy NMS by descending score. An end-to-end output
// [1, N, 6] (BoxLayoutXYXY) holds its boxes already: those above minConf are kept. Its
// buffers are reused.
type detector struct {
	classes, anchors int
	xyxy             bool    // BoxLayoutXYXY: anchors is the number of rows
	minConf, iou     float32 // iou 0: no NMS
	cand, kept       []detection
}

func newDetector(layout string, classes, anchors int, minConf, iou float64) *detector {
	return &detector{classes: classes, anchors: anchors, xyxy: layout == bundle.BoxLayoutXYXY, minConf: float32(minConf), iou: float32(iou),
		cand: make([]detection, 0, anchors), kept: make([]detection, 0, min(anchors, maxDetections))}
}

// detect returns the kept boxes, highest score first; the slice is reused by the next call.
func (d *detector) detect(out []float32) []detection {
	a := d.anchors
	d.cand = d.cand[:0]
	if d.xyxy {
		for i := range a {
			row := out[i*6 : i*6+6]
			class := int(row[5])
			if !(row[4] > d.minConf) || float32(class) != row[5] || class < 0 || class >= d.classes {
				continue
			}
			d.cand = append(d.cand, detection{x0: row[0], y0: row[1], x1: row[2], y1: row[3], conf: row[4], class: class})
		}
	} else {
		for i := range a {
			best, conf := 0, out[4*a+i]
			for k := 1; k < d.classes; k++ {
				if v := out[(4+k)*a+i]; v > conf {
					best, conf = k, v
				}
			}
			if !(conf > d.minConf) {
				continue
			}
			cx, cy, w, h := out[i], out[a+i], out[2*a+i], out[3*a+i]
			d.cand = append(d.cand, detection{x0: cx - w/2, y0: cy - h/2, x1: cx + w/2, y1: cy + h/2, conf: conf, class: best})
		}
	}
	slices.SortStableFunc(d.cand, func(p, q detection) int { return cmp.Compare(q.conf, p.conf) })
	d.kept = d.kept[:0]
	for _, c := range d.cand {
		if len(d.kept) == maxDetections {
			break
		}
		if d.iou > 0 && d.suppressed(c) {
			continue
		}
		d.kept = append(d.kept, c)
	}
	return d.kept
}

// suppressed says whether a kept box of c's class overlaps c by more than the IoU limit.
func (d *detector) suppressed(c detection) bool {
	area := (c.x1 - c.x0) * (c.y1 - c.y0)
	for _, k := range d.kept {
		if k.class != c.class {
			continue
		}
		iw := min(c.x1, k.x1) - max(c.x0, k.x0)
		ih := min(c.y1, k.y1) - max(c.y0, k.y0)
		if iw <= 0 || ih <= 0 {
			continue
		}
		inter := iw * ih
		if inter/(area+(k.x1-k.x0)*(k.y1-k.y0)-inter) > d.iou {
			return true
		}
	}
	return false
}
