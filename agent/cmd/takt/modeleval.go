package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"html/template"
	"image"
	"image/color"
	_ "image/jpeg"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/models"
	"github.com/takt-edge/takt/models/bundle"
	"github.com/takt-edge/takt/models/eval"
)

// evalCase is one scored image of takt model eval.
type evalCase struct {
	frame  camera.Frame
	label  string // "good" or the defect folder
	score  float64
	amap   *models.AnomalyMap
	mask   []bool // at the map's size; nil without a mask
	masked bool
}

func cmdModelEval(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model eval", stderr)
	bundlePath := fs.String("bundle", "", "model to evaluate: a bundle (.tar) or a plain model (.onnx) (required)")
	data := fs.String("data", "", "folder with good/ and one or more defect folders; masks in <defect>/masks/ or masks/<defect>/ (required)")
	report := fs.String("report", "", "write an HTML report here (ROC curve, worst false accepts and rejects with heatmaps)")
	var keyFiles []string
	fs.Func("key", "trusted public key (KEYFILE.pub) to verify the bundle's signature with (repeatable; without it the signature is not checked)", func(v string) error {
		keyFiles = append(keyFiles, v)
		return nil
	})
	worst := fs.Int("worst", 6, "false accepts and false rejects shown in the report, each")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *bundlePath == "" || *data == "" {
		fs.Usage()
		return cli.Usagef("model eval: --bundle and --data are required")
	}
	if err := models.InitONNXRuntime(""); err != nil {
		return err
	}
	rt, err := openModel(*bundlePath, keyFiles)
	if err != nil {
		return err
	}
	defer rt.Close()
	info := rt.Info()
	if info.Task != bundle.TaskAnomaly && info.Task != "" {
		return fmt.Errorf("model eval: %s is a %s model: want an anomaly model", *bundlePath, info.Task)
	}
	if info.Threshold <= 0 {
		return fmt.Errorf("model eval: %s carries no threshold", *bundlePath)
	}
	cases, err := scoreEvalSet(rt, *data)
	if err != nil {
		return err
	}
	var good, bad []float64
	perClass := map[string][2]int{} // class -> caught, total
	var classes []string
	for _, c := range cases {
		if c.label == "good" {
			good = append(good, c.score)
			continue
		}
		bad = append(bad, c.score)
		pc, seen := perClass[c.label]
		if !seen {
			classes = append(classes, c.label)
		}
		pc[1]++
		if c.score > info.Threshold {
			pc[0]++
		}
		perClass[c.label] = pc
	}
	if len(good) == 0 || len(bad) == 0 {
		return fmt.Errorf("model eval: %s: %d good and %d defective images: need both (good/ and a defect folder)", *data, len(good), len(bad))
	}
	auroc := eval.EvaluateScores(good, bad)
	conf := eval.ConfusionAt(good, bad, info.Threshold)
	pix, masks := pixelAUROC(cases)
	fmt.Fprintf(stdout, "eval: model %s %s (threshold %.4g) on %s: %d good, %d defective\n", info.Model.Name, info.Model.Version,
		info.Threshold, *data, len(good), len(bad))
	fmt.Fprintf(stdout, "image AUROC:  %.4f\n", auroc)
	if masks > 0 {
		fmt.Fprintf(stdout, "pixel AUROC:  %.4f (%d masks)\n", pix, masks)
	}
	fmt.Fprintf(stdout, "at threshold %.4g: precision %.4f recall %.4f f1 %.4f\n", info.Threshold, conf.Precision(), conf.Recall(), conf.F1())
	fmt.Fprintf(stdout, "confusion matrix    predicted good  predicted defect\n")
	fmt.Fprintf(stdout, "  actual good       %14d  %16d\n", conf.TN, conf.FP)
	fmt.Fprintf(stdout, "  actual defect     %14d  %16d\n", conf.FN, conf.TP)
	for _, k := range classes {
		pc := perClass[k]
		fmt.Fprintf(stdout, "  %-16s  caught %d of %d\n", k, pc[0], pc[1])
	}
	falseReject, escape := float64(conf.FP)/float64(len(good)), float64(conf.FN)/float64(len(bad))
	fmt.Fprintf(stdout, "at the bundle's threshold: false rejects %.2f%% (%d of %d good), escapes %.2f%% (%d of %d defective)\n",
		100*falseReject, conf.FP, len(good), 100*escape, conf.FN, len(bad))
	fmt.Fprintf(stdout, "operating points on these images (a threshold per line; %d good images: steps of %.2g%%):\n", len(good), 100/float64(len(good)))
	for _, b := range []float64{0.005, 0.01, 0.05} {
		fmt.Fprintf(stdout, "  false rejects at most %4.1f%%: catches %5.1f%% of defects\n", 100*b, 100*eval.CatchAtFalseReject(good, bad, b))
	}
	for _, c := range []float64{0.9, 0.99} {
		fmt.Fprintf(stdout, "  to catch %2.0f%% of defects: rejects %5.1f%% of good parts\n", 100*c, 100*eval.FalseRejectToCatch(good, bad, c))
	}
	if *report != "" {
		if err := writeEvalReport(*report, *bundlePath, *data, info, cases, good, bad, auroc, pix, masks, conf, *worst); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "report: %s\n", *report)
	}
	fmt.Fprintf(stdout, "auroc=%.4f f1=%.4f false_reject=%.4f escape=%.4f\n", auroc, conf.F1(), falseReject, escape)
	return nil
}

// openModel loads a bundle (signature checked when keys are given) or a plain model, with
// anomaly maps returned.
func openModel(path string, keyFiles []string) (*models.Runtime, error) {
	opts := models.RuntimeOptions{ReturnMap: true, Warmup: -1}
	if !strings.HasSuffix(path, ".tar") {
		return models.LoadRuntime(path, opts)
	}
	var b *bundle.Bundle
	var err error
	if len(keyFiles) > 0 {
		keys, kerr := bundle.LoadTrustedKeys(keyFiles...)
		if kerr != nil {
			return nil, kerr
		}
		b, err = bundle.OpenBundle(path, keys)
	} else {
		b, err = bundle.InspectBundle(path)
	}
	if err != nil {
		return nil, err
	}
	return models.NewRuntime(context.Background(), b, opts)
}

// scoreEvalSet scores DIR/good and every defect folder of DIR.
func scoreEvalSet(rt *models.Runtime, dir string) ([]evalCase, error) {
	kinds, err := defectFolders(dir)
	if err != nil {
		return nil, err
	}
	var out []evalCase
	for _, k := range append([]string{"good"}, kinds...) {
		frames, err := readFolder(filepath.Join(dir, k), 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		for _, f := range frames {
			res, err := rt.Infer(context.Background(), f)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", k, f.Origin, err)
			}
			c := evalCase{frame: f, label: k, score: res.Score}
			if res.Map != nil {
				m := *res.Map
				m.Values = append([]float32(nil), m.Values...)
				c.amap = &m
				if k != "good" {
					if c.mask, err = findMask(dir, k, f.Origin, m.Width, m.Height); err != nil {
						return nil, err
					}
					c.masked = c.mask != nil
				}
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// findMask reads the mask of image origin of class k (white = defect) at w x h, from
// DIR/k/masks/, DIR/masks/k/ or DIR/masks/, as the image's base name with any image
// extension; nil when there is none.
func findMask(dir, k, origin string, w, h int) ([]bool, error) {
	base := strings.TrimSuffix(filepath.Base(origin), filepath.Ext(origin))
	for _, d := range []string{filepath.Join(dir, k, "masks"), filepath.Join(dir, "masks", k), filepath.Join(dir, "masks")} {
		for _, ext := range camera.ImageExtensions {
			p := filepath.Join(d, base+ext)
			fh, err := os.Open(p)
			if err != nil {
				continue
			}
			img, _, err := image.Decode(fh)
			fh.Close()
			if err != nil {
				return nil, fmt.Errorf("mask %s: %w", p, err)
			}
			b := img.Bounds()
			mask := make([]bool, w*h)
			for y := range h {
				for x := range w {
					sx := b.Min.X + (2*x+1)*b.Dx()/(2*w)
					sy := b.Min.Y + (2*y+1)*b.Dy()/(2*h)
					r, g, bb, _ := img.At(sx, sy).RGBA()
					mask[y*w+x] = (r+g+bb)/3 > 0x7fff
				}
			}
			return mask, nil
		}
	}
	return nil, nil
}

// pixelAUROC is the AUROC of map values against mask pixels, over the good images (all
// pixels good) and the defects with a mask, sampled to at most 64x64 per map.
func pixelAUROC(cases []evalCase) (float64, int) {
	var neg, pos []float64
	masks := 0
	for _, c := range cases {
		if c.amap == nil || (c.label != "good" && !c.masked) {
			continue
		}
		if c.masked {
			masks++
		}
		step := max(1, int(math.Ceil(math.Sqrt(float64(c.amap.Width*c.amap.Height)/4096))))
		for y := 0; y < c.amap.Height; y += step {
			for x := 0; x < c.amap.Width; x += step {
				i := y*c.amap.Width + x
				v := float64(c.amap.Values[i])
				if c.masked && c.mask[i] {
					pos = append(pos, v)
				} else {
					neg = append(neg, v)
				}
			}
		}
	}
	if masks == 0 {
		return math.NaN(), 0
	}
	return eval.EvaluateScores(neg, pos), masks
}

// rocPNG draws the ROC curve as a 320x320 PNG: axes, the chance diagonal, the curve, and
// the operating point at the threshold.
func rocPNG(pts [][2]float64, op [2]float64) ([]byte, error) {
	const size, pad = 320, 30
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	plot := float64(size - 2*pad)
	at := func(p [2]float64) (int, int) {
		return pad + int(math.Round(p[0]*plot)), size - pad - int(math.Round(p[1]*plot))
	}
	line := func(a, b [2]float64, c color.RGBA, thick int) {
		x0, y0 := at(a)
		x1, y1 := at(b)
		n := max(abs(x1-x0), abs(y1-y0), 1)
		for k := 0; k <= n; k++ {
			x := x0 + (x1-x0)*k/n
			y := y0 + (y1-y0)*k/n
			for dy := -thick / 2; dy <= thick/2; dy++ {
				for dx := -thick / 2; dx <= thick/2; dx++ {
					img.SetRGBA(x+dx, y+dy, c)
				}
			}
		}
	}
	grey, light := color.RGBA{90, 90, 90, 255}, color.RGBA{200, 200, 200, 255}
	line([2]float64{0, 0}, [2]float64{1, 0}, grey, 1)
	line([2]float64{0, 0}, [2]float64{0, 1}, grey, 1)
	line([2]float64{1, 0}, [2]float64{1, 1}, light, 1)
	line([2]float64{0, 1}, [2]float64{1, 1}, light, 1)
	line([2]float64{0, 0}, [2]float64{1, 1}, light, 1)
	for i := 1; i < len(pts); i++ {
		line(pts[i-1], pts[i], color.RGBA{20, 80, 200, 255}, 3)
	}
	x, y := at(op)
	for dy := -4; dy <= 4; dy++ {
		for dx := -4; dx <= 4; dx++ {
			if dx*dx+dy*dy <= 16 {
				img.SetRGBA(x+dx, y+dy, color.RGBA{220, 30, 30, 255})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dataSrc is an img src attribute holding png inline (base64 is safe in an attribute).
func dataSrc(png []byte) template.HTMLAttr {
	return template.HTMLAttr(`src="data:image/png;base64,` + base64.StdEncoding.EncodeToString(png) + `"`)
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// shrink scales f down (nearest pixel) so its width is at most w.
func shrink(f camera.Frame, w int) camera.Frame {
	if f.Width <= w {
		return f
	}
	h := max(1, f.Height*w/f.Width)
	out := camera.Frame{Width: w, Height: h, Channels: f.Channels, Pix: make([]byte, w*h*f.Channels)}
	for y := range h {
		sy := (2*y + 1) * f.Height / (2 * h)
		for x := range w {
			sx := (2*x + 1) * f.Width / (2 * w)
			copy(out.Pix[(y*w+x)*f.Channels:(y*w+x+1)*f.Channels], f.Pix[(sy*f.Width+sx)*f.Channels:(sy*f.Width+sx+1)*f.Channels])
		}
	}
	return out
}

type reportImage struct {
	Name, Label string
	Score       float64
	PNG         template.HTMLAttr // src="data:image/png;base64,..."
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Takt model evaluation: {{.Model}}</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
figure{display:inline-block;margin:6px;text-align:center}figcaption{font-size:12px}img.roc{border:1px solid #ddd}</style></head><body>
<h1>Model evaluation: {{.Model}}</h1>
<p>Bundle <code>{{.Bundle}}</code>, data <code>{{.Data}}</code>: {{.Good}} good and {{.Bad}} defective images. Threshold {{printf "%.4g" .Threshold}} (a score above it FAILs).</p>
<table><tr><th>image AUROC</th><td>{{printf "%.4f" .AUROC}}</td></tr>
{{if .Masks}}<tr><th>pixel AUROC ({{.Masks}} masks)</th><td>{{printf "%.4f" .PixelAUROC}}</td></tr>{{end}}
<tr><th>precision</th><td>{{printf "%.4f" .Precision}}</td></tr><tr><th>recall</th><td>{{printf "%.4f" .Recall}}</td></tr><tr><th>F1</th><td>{{printf "%.4f" .F1}}</td></tr></table>
<h2>Confusion matrix</h2>
<table><tr><th></th><th>predicted good</th><th>predicted defect</th></tr>
<tr><th>actual good</th><td>{{.TN}}</td><td>{{.FP}}</td></tr><tr><th>actual defect</th><td>{{.FN}}</td><td>{{.TP}}</td></tr></table>
<h2>ROC curve</h2><p>False positive rate (x) against true positive rate (y); the red dot is the bundle's threshold.</p>
<img class="roc" {{.ROC}} alt="ROC curve">
<h2>Worst false accepts (defects that PASS)</h2>{{if not .FalseAccepts}}<p>None.</p>{{end}}
{{range .FalseAccepts}}<figure><img {{.PNG}} alt="{{.Name}}"><figcaption>{{.Label}}/{{.Name}} score {{printf "%.4g" .Score}}</figcaption></figure>{{end}}
<h2>Worst false rejects (good parts that FAIL)</h2>{{if not .FalseRejects}}<p>None.</p>{{end}}
{{range .FalseRejects}}<figure><img {{.PNG}} alt="{{.Name}}"><figcaption>{{.Label}}/{{.Name}} score {{printf "%.4g" .Score}}</figcaption></figure>{{end}}
</body></html>
`))

func writeEvalReport(path, bundle, data string, info models.Info, cases []evalCase, good, bad []float64, auroc, pix float64, masks int,
	conf eval.Confusion, worst int) error {
	th := info.Threshold
	roc, err := rocPNG(eval.ROCCurve(good, bad), [2]float64{float64(conf.FP) / float64(len(good)), float64(conf.TP) / float64(len(bad))})
	if err != nil {
		return fmt.Errorf("report: roc: %w", err)
	}
	// One heat scale for every overlay: 0 .. the highest map value of the set.
	var hi float64
	for _, c := range cases {
		if c.amap != nil {
			for _, v := range c.amap.Values {
				hi = max(hi, float64(v))
			}
		}
	}
	var fa, fr []evalCase
	for _, c := range cases {
		switch {
		case c.label != "good" && c.score <= th:
			fa = append(fa, c)
		case c.label == "good" && c.score > th:
			fr = append(fr, c)
		}
	}
	sort.Slice(fa, func(i, j int) bool { return fa[i].score < fa[j].score })
	sort.Slice(fr, func(i, j int) bool { return fr[i].score > fr[j].score })
	images := func(cs []evalCase) ([]reportImage, error) {
		var out []reportImage
		for _, c := range cs[:min(worst, len(cs))] {
			f := c.frame
			if c.amap != nil {
				var err error
				if f, err = models.Heatmap(c.frame, c.amap, models.HeatmapOptions{Lo: 0, Hi: max(hi, 1e-6)}); err != nil {
					return nil, fmt.Errorf("report: heatmap of %s: %w", c.frame.Origin, err)
				}
			}
			data, err := camera.Encode(shrink(f, 256), "png", 0)
			if err != nil {
				return nil, fmt.Errorf("report: %s: %w", c.frame.Origin, err)
			}
			out = append(out, reportImage{Name: filepath.Base(c.frame.Origin), Label: c.label, Score: c.score,
				PNG: dataSrc(data)})
		}
		return out, nil
	}
	faImgs, err := images(fa)
	if err != nil {
		return err
	}
	frImgs, err := images(fr)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	err = reportTmpl.Execute(&buf, map[string]any{
		"Model": info.Model.Name + " " + info.Model.Version, "Bundle": bundle, "Data": data, "Good": len(good), "Bad": len(bad),
		"Threshold": th, "AUROC": auroc, "PixelAUROC": pix, "Masks": masks, "Precision": conf.Precision(), "Recall": conf.Recall(),
		"F1": conf.F1(), "TP": conf.TP, "FP": conf.FP, "TN": conf.TN, "FN": conf.FN,
		"ROC":          dataSrc(roc),
		"FalseAccepts": faImgs, "FalseRejects": frImgs,
	})
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}
