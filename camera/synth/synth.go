package synth

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/takt-edge/takt/camera"
)

// Defect is a kind of defect drawn on a part. The zero value None means a good part.
type Defect string

// Defect kinds. The string values are the folder names of the classes layout and the
// defect column of labels.csv.
const (
	None        Defect = ""
	Scratch     Defect = "scratch"
	MissingHole Defect = "missing_hole"
	Spot        Defect = "spot"
	Crack       Defect = "crack"
)

// AllDefects returns every defect kind, in the order Generate uses them by default.
func AllDefects() []Defect { return []Defect{Scratch, MissingHole, Spot, Crack} }

func (d Defect) valid() bool {
	switch d {
	case Scratch, MissingHole, Spot, Crack:
		return true
	}
	return false
}

func errUnknownDefect(d Defect) error {
	return fmt.Errorf("synth: unknown defect kind %q (want scratch, missing_hole, spot or crack)", string(d))
}

// ParseDefects parses a comma-separated list of defect kinds, such as the value of a
// --defects flag. An empty string gives AllDefects.
func ParseDefects(s string) ([]Defect, error) {
	if strings.TrimSpace(s) == "" {
		return AllDefects(), nil
	}
	var out []Defect
	for _, f := range strings.Split(s, ",") {
		d := Defect(strings.TrimSpace(f))
		if !d.valid() {
			return nil, errUnknownDefect(d)
		}
		out = append(out, d)
	}
	return out, nil
}

// Layout is how Generate arranges its output folder.
type Layout string

const (
	// LayoutClasses is the training layout: good/part-00001.png ..., and one folder per
	// defect kind (scratch/, missing_hole/, spot/, crack/) holding that kind's parts, each
	// numbered from 1 in line order.
	LayoutClasses Layout = "classes"
	// LayoutLine is a production run: line/00001.png ... in line order, good and defective
	// parts interleaved, and optionally line.avi with the same frames.
	LayoutLine Layout = "line"
)

// Default sizes and rates.
const (
	DefaultWidth    = 640
	DefaultHeight   = 480
	DefaultVideoFPS = 10

	minWidth, minHeight = 128, 96
	maxWidth, maxHeight = 4096, 4096
)

// RenderOptions select the scene. The zero value renders 640x480 with seed 0.
type RenderOptions struct {
	Seed   int64 // drives the fixture, and with the part index, everything that varies per part
	Width  int   // pixels; 0 means DefaultWidth
	Height int   // pixels; 0 means DefaultHeight
}

func (o RenderOptions) withDefaults() RenderOptions {
	if o.Width == 0 {
		o.Width = DefaultWidth
	}
	if o.Height == 0 {
		o.Height = DefaultHeight
	}
	return o
}

func (o RenderOptions) validate() error {
	if o.Width < minWidth || o.Width > maxWidth {
		return fmt.Errorf("synth: width %d out of range [%d, %d]", o.Width, minWidth, maxWidth)
	}
	if o.Height < minHeight || o.Height > maxHeight {
		return fmt.Errorf("synth: height %d out of range [%d, %d]", o.Height, minHeight, maxHeight)
	}
	return nil
}

// Label describes one rendered part.
type Label struct {
	Seq    int             // part index: 1-based position in the line
	File   string          // slash-separated path relative to Options.Out; empty from RenderPart
	Defect Defect          // None for a good part
	Box    image.Rectangle // the defect's bounding box in the frame; empty for a good part
}

// Good reports whether the part has no defect.
func (l Label) Good() bool { return l.Defect == None }

// ErrNoCgo is returned by RenderPart and Generate in a build without cgo.
var ErrNoCgo = errors.New("synth: built without cgo, rendering needs OpenCV")

// RenderPart renders part number index (1-based) with the given defect, or a good part for
// None. The same options, index and defect always give the same pixels; the good part and a
// defective part with the same index differ only inside the returned Label.Box. The frame is
// BGR and owns its Pix; its CameraID is "synth", its Seq the index, and its Time is zero
// (a rendered part has no capture time).
func RenderPart(opts RenderOptions, index int, defect Defect) (camera.Frame, Label, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return camera.Frame{}, Label{}, err
	}
	if index < 1 {
		return camera.Frame{}, Label{}, fmt.Errorf("synth: part index %d, want >= 1", index)
	}
	if defect != None && !defect.valid() {
		return camera.Frame{}, Label{}, errUnknownDefect(defect)
	}
	sc := newScene(opts, index, defect)
	pix, err := render(sc)
	if err != nil {
		return camera.Frame{}, Label{}, err
	}
	f := camera.Frame{
		CameraID: "synth",
		Seq:      uint64(index),
		Width:    opts.Width,
		Height:   opts.Height,
		Channels: 3,
		Pix:      pix,
		Origin:   fmt.Sprintf("synth seed=%d part=%d defect=%s", opts.Seed, index, defectName(defect)),
	}
	return f, Label{Seq: index, Defect: defect, Box: sc.defectBox()}, nil
}

func defectName(d Defect) string {
	if d == None {
		return "none"
	}
	return string(d)
}

// Options configure Generate. Only Out is required.
type Options struct {
	Out       string   // output folder, created if missing
	Seed      int64    // same seed, same bytes
	Good      int      // number of good parts
	Defective int      // number of defective parts, one defect each
	Defects   []Defect // kinds to use, in turn; nil means AllDefects
	Width     int      // pixels; 0 means DefaultWidth
	Height    int      // pixels; 0 means DefaultHeight
	Layout    Layout   // "" means LayoutClasses
	Video     bool     // also write line.avi (MJPG); LayoutLine only
	VideoFPS  float64  // frame rate written in line.avi; 0 means DefaultVideoFPS
	// FirstSeq numbers the first part (default 1). With the same Seed the fixture is the
	// same, so a production run from FirstSeq 1001 shows new parts on the station a
	// training set from 1 came from.
	FirstSeq int
}

// Summary is what Generate wrote.
type Summary struct {
	Labels      []Label // one per part in line order, as in labels.csv
	LabelsFile  string  // path of labels.csv
	Video       string  // path of line.avi; empty without Options.Video
	VideoFrames int     // frames read back from line.avi
}

func (o Options) withDefaults() Options {
	if o.Layout == "" {
		o.Layout = LayoutClasses
	}
	if o.Defects == nil {
		o.Defects = AllDefects()
	}
	if o.VideoFPS == 0 {
		o.VideoFPS = DefaultVideoFPS
	}
	if o.FirstSeq == 0 {
		o.FirstSeq = 1
	}
	ro := o.render()
	o.Width, o.Height = ro.Width, ro.Height
	return o
}

func (o Options) render() RenderOptions {
	return RenderOptions{Seed: o.Seed, Width: o.Width, Height: o.Height}.withDefaults()
}

// Validate reports the first problem with the options, after defaults are applied.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case o.Out == "":
		return errors.New("synth: out folder is required")
	case o.FirstSeq < 1 || o.FirstSeq+o.Good+o.Defective > 99999:
		return fmt.Errorf("synth: first part number %d: want 1..%d for %d parts", o.FirstSeq, 99999-o.Good-o.Defective, o.Good+o.Defective)
	case o.Good < 0:
		return fmt.Errorf("synth: good count %d is negative", o.Good)
	case o.Defective < 0:
		return fmt.Errorf("synth: defective count %d is negative", o.Defective)
	case o.Good == 0 && o.Defective == 0:
		return errors.New("synth: nothing to generate, good and defective counts are both 0")
	case o.Layout != LayoutClasses && o.Layout != LayoutLine:
		return fmt.Errorf("synth: unknown layout %q (want classes or line)", string(o.Layout))
	case o.Video && o.Layout != LayoutLine:
		return fmt.Errorf("synth: video needs layout line, not %q", string(o.Layout))
	case o.VideoFPS < 0 || o.VideoFPS > 1000:
		return fmt.Errorf("synth: video fps %g out of range (0, 1000]", o.VideoFPS)
	case len(o.Defects) == 0 && o.Defective > 0:
		return errors.New("synth: defective parts requested but the defect list is empty")
	}
	seen := map[Defect]bool{}
	for _, d := range o.Defects {
		if !d.valid() {
			return errUnknownDefect(d)
		}
		if seen[d] {
			return fmt.Errorf("synth: defect kind %q listed twice", string(d))
		}
		seen[d] = true
	}
	return o.render().validate()
}

// plan returns the parts of a run in line order, with their files. Which positions are
// defective is a seeded shuffle; kinds are used in turn along the line, so every kind appears
// once Defective >= len(Defects).
func (o Options) plan() []Label {
	n := o.Good + o.Defective
	rng := rand.New(rand.NewPCG(mix(uint64(o.Seed), streamPlan, 0), streamPlan))
	defective := make([]bool, n)
	for _, i := range rng.Perm(n)[:o.Defective] {
		defective[i] = true
	}
	labels := make([]Label, n)
	perClass := map[Defect]int{}
	k := 0
	for i := range labels {
		l := Label{Seq: o.FirstSeq + i}
		if defective[i] {
			l.Defect = o.Defects[k%len(o.Defects)]
			k++
		}
		perClass[l.Defect]++
		if o.Layout == LayoutLine {
			l.File = fmt.Sprintf("line/%05d.png", l.Seq)
		} else {
			l.File = fmt.Sprintf("%s/part-%05d.png", classDir(l.Defect), perClass[l.Defect])
		}
		labels[i] = l
	}
	return labels
}

func classDir(d Defect) string {
	if d == None {
		return "good"
	}
	return string(d)
}

// Generate renders Good+Defective parts into opts.Out in the chosen layout and writes
// labels.csv. Every file is written to a temporary name and renamed, so readers never see a
// partial file. Rerunning over an existing folder is safe: files are replaced, and files
// that Generate names (good/part-NNNNN.png, <defect>/part-NNNNN.png, line/NNNNN.png,
// line.avi, leftover temporary files) but did not write in this run are removed, so the
// folder always matches labels.csv. Other files are left alone.
func Generate(opts Options) (Summary, error) {
	if err := opts.Validate(); err != nil {
		return Summary{}, err
	}
	if !haveCgo {
		return Summary{}, ErrNoCgo
	}
	o := opts.withDefaults()
	labels := o.plan()
	dirs := map[string]bool{}
	for _, l := range labels {
		dirs[path.Dir(l.File)] = true
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(o.Out, filepath.FromSlash(d)), 0o755); err != nil {
			return Summary{}, fmt.Errorf("synth: %w", err)
		}
	}

	sum := Summary{Labels: labels, LabelsFile: filepath.Join(o.Out, "labels.csv")}
	var vid videoSink
	var vidTmp string
	if o.Video {
		var err error
		vidTmp, err = tempName(o.Out, ".avi")
		if err != nil {
			return Summary{}, err
		}
		vid, err = openVideo(vidTmp, o.Width, o.Height, o.VideoFPS)
		if err != nil {
			os.Remove(vidTmp)
			return Summary{}, err
		}
		defer func() {
			if vid != nil {
				vid.Close()
			}
			os.Remove(vidTmp) // no-op after the rename
		}()
	}

	ro := o.render()
	for i, l := range labels {
		f, got, err := RenderPart(ro, l.Seq, l.Defect)
		if err != nil {
			return Summary{}, err
		}
		labels[i].Box = got.Box
		b, err := encodePNG(f)
		if err != nil {
			return Summary{}, fmt.Errorf("synth: part %d: %w", l.Seq, err)
		}
		if err := writeFileAtomic(filepath.Join(o.Out, filepath.FromSlash(l.File)), b); err != nil {
			return Summary{}, err
		}
		if vid != nil {
			if err := vid.Add(f); err != nil {
				return Summary{}, err
			}
		}
	}

	if vid != nil {
		err := vid.Close()
		vid = nil
		if err != nil {
			return Summary{}, err
		}
		n, size, err := probeVideo(vidTmp)
		if err != nil {
			return Summary{}, err
		}
		if n != len(labels) || size != (image.Point{o.Width, o.Height}) {
			return Summary{}, fmt.Errorf("synth: video reads back as %d frames of %dx%d, want %d of %dx%d",
				n, size.X, size.Y, len(labels), o.Width, o.Height)
		}
		sum.Video = filepath.Join(o.Out, "line.avi")
		sum.VideoFrames = n
		if err := os.Chmod(vidTmp, 0o644); err != nil {
			return Summary{}, fmt.Errorf("synth: %w", err)
		}
		if err := os.Rename(vidTmp, sum.Video); err != nil {
			return Summary{}, fmt.Errorf("synth: %w", err)
		}
	}

	var buf bytes.Buffer
	if err := WriteLabels(&buf, labels); err != nil {
		return Summary{}, err
	}
	if err := writeFileAtomic(sum.LabelsFile, buf.Bytes()); err != nil {
		return Summary{}, err
	}
	if err := removeStale(o.Out, labels, o.Video); err != nil {
		return Summary{}, err
	}
	return sum, nil
}

// videoSink appends frames to a video file; Close flushes it.
type videoSink interface {
	Add(camera.Frame) error
	Close() error
}

// maxCoord bounds the numbers ReadLabels accepts.
const maxCoord = 1 << 30

var labelsHeader = []string{"seq", "file", "label", "defect", "x", "y", "w", "h"}

// WriteLabels writes labels as CSV with the header seq,file,label,defect,x,y,w,h. label is
// good or defective; a good part has an empty defect and a zero box.
func WriteLabels(w io.Writer, labels []Label) error {
	cw := csv.NewWriter(w)
	cw.Write(labelsHeader)
	for _, l := range labels {
		kind := "defective"
		if l.Good() {
			kind = "good"
		}
		b := l.Box.Canon()
		cw.Write([]string{strconv.Itoa(l.Seq), l.File, kind, string(l.Defect),
			strconv.Itoa(b.Min.X), strconv.Itoa(b.Min.Y), strconv.Itoa(b.Dx()), strconv.Itoa(b.Dy())})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("synth: write labels: %w", err)
	}
	return nil
}

// ReadLabels parses what WriteLabels wrote.
func ReadLabels(r io.Reader) ([]Label, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = len(labelsHeader)
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("synth: read labels header: %w", err)
	}
	if strings.Join(head, ",") != strings.Join(labelsHeader, ",") {
		return nil, fmt.Errorf("synth: labels header is %q, want %q", strings.Join(head, ","), strings.Join(labelsHeader, ","))
	}
	var out []Label
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("synth: read labels: %w", err)
		}
		line, _ := cr.FieldPos(0)
		var n [5]int
		for i, s := range []string{rec[0], rec[4], rec[5], rec[6], rec[7]} {
			if n[i], err = strconv.Atoi(s); err != nil {
				return nil, fmt.Errorf("synth: labels line %d: %w", line, err)
			}
		}
		for _, v := range n {
			if v < 0 || v > maxCoord {
				return nil, fmt.Errorf("synth: labels line %d: number %d out of range [0, %d]", line, v, maxCoord)
			}
		}
		l := Label{Seq: n[0], File: rec[1], Defect: Defect(rec[3]),
			Box: image.Rect(n[1], n[2], n[1]+n[3], n[2]+n[4])}
		switch {
		case rec[2] == "good" && l.Defect == None:
		case rec[2] == "defective" && l.Defect.valid():
		default:
			return nil, fmt.Errorf("synth: labels line %d: label %q with defect %q", line, rec[2], rec[3])
		}
		out = append(out, l)
	}
}

func encodePNG(f camera.Frame) ([]byte, error) {
	if f.Channels != 3 || len(f.Pix) != f.Width*f.Height*3 {
		return nil, fmt.Errorf("encode png: want a BGR frame, got %d channels, %d bytes for %dx%d",
			f.Channels, len(f.Pix), f.Width, f.Height)
	}
	img := image.NewNRGBA(image.Rect(0, 0, f.Width, f.Height))
	for i, j := 0, 0; i < len(f.Pix); i, j = i+3, j+4 {
		img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = f.Pix[i+2], f.Pix[i+1], f.Pix[i], 255
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const tempPrefix = ".synth-"

func tempName(dir, suffix string) (string, error) {
	f, err := os.CreateTemp(dir, tempPrefix+"*.tmp"+suffix)
	if err != nil {
		return "", fmt.Errorf("synth: %w", err)
	}
	name := f.Name()
	f.Close()
	return name, nil
}

// writeFileAtomic writes data to a temporary file in name's folder and renames it over name.
func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), tempPrefix+"*.tmp")
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	merr := os.Chmod(f.Name(), 0o644) // CreateTemp makes 0600; data sets are for sharing
	if err := errors.Join(werr, cerr, merr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("synth: write %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

var (
	classFileRE = regexp.MustCompile(`^part-[0-9]{5,}\.png$`)
	lineFileRE  = regexp.MustCompile(`^[0-9]{5,}\.png$`)
)

// removeStale deletes files that Generate names but did not write in this run, and removes
// folders of Generate's that end up empty.
func removeStale(out string, labels []Label, video bool) error {
	keep := map[string]bool{}
	for _, l := range labels {
		keep[l.File] = true
	}
	var errs []error
	rm := func(name string) {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	dirs := []string{"line"}
	for _, d := range append([]Defect{None}, AllDefects()...) {
		dirs = append(dirs, classDir(d))
	}
	for _, d := range append([]string{"."}, dirs...) {
		ents, err := os.ReadDir(filepath.Join(out, d))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			n := e.Name()
			rel := path.Join(d, n)
			switch {
			case e.IsDir():
			case strings.HasPrefix(n, tempPrefix) && strings.Contains(n, ".tmp"):
				rm(filepath.Join(out, d, n))
			case d == "." && n == "line.avi" && !video:
				rm(filepath.Join(out, n))
			case d == "line" && lineFileRE.MatchString(n) && !keep[rel],
				d != "line" && d != "." && classFileRE.MatchString(n) && !keep[rel]:
				rm(filepath.Join(out, d, n))
			}
		}
		if d != "." {
			os.Remove(filepath.Join(out, d)) // only succeeds if empty
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("synth: remove stale files: %w", err)
	}
	return nil
}

// MarkingRegion is where the printed marking (part number, 2D code, serial number) can
// appear in a frame, pose jitter included. The code and serial differ on every part, so a
// model trained on a few parts should not judge this region.
func MarkingRegion(opts RenderOptions) image.Rectangle {
	o := opts.withDefaults()
	sc := newScene(o, 1, None)
	const poseMargin = 10 // ±4 px shift and ±1.5° at the marking's distance from the center
	s := sc.s
	return image.Rect(
		int(sc.c.X+sc.marking.Min.X-poseMargin*s), int(sc.c.Y+sc.marking.Min.Y-poseMargin*s),
		int(sc.c.X+sc.marking.Max.X+poseMargin*s), int(sc.c.Y+sc.marking.Max.Y+poseMargin*s))
}
