package main

import (
	"fmt"
	"io"

	"github.com/takt-edge/takt/camera/synth"
)

func cmdSynth(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("synth", stderr)
	out := fs.String("out", "", "output folder (required)")
	layout := fs.String("layout", "classes", "classes (good/ and one folder per defect) or line (a production run)")
	good := fs.Int("good", 20, "number of good parts")
	defective := fs.Int("defective", 0, "number of defective parts")
	defects := fs.String("defects", "", "defect kinds to use, comma-separated (default scratch,missing_hole,spot,crack)")
	seed := fs.Int64("seed", 1, "random seed; the same seed gives the same images")
	width := fs.Int("width", synth.DefaultWidth, "image width")
	height := fs.Int("height", synth.DefaultHeight, "image height")
	first := fs.Int("first", 1, "number of the first part; with the same seed (same fixture), a run from 1001 shows new parts")
	video := fs.Bool("video", false, "also write line.avi (layout line)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	kinds, err := synth.ParseDefects(*defects)
	if err != nil {
		return err
	}
	sum, err := synth.Generate(synth.Options{
		Out: *out, Seed: *seed, Good: *good, Defective: *defective, Defects: kinds,
		Width: *width, Height: *height, Layout: synth.Layout(*layout), Video: *video, FirstSeq: *first,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "synth: %d parts (%d good, %d defective) in %s, labels %s", len(sum.Labels), *good, *defective, *out, sum.LabelsFile)
	if sum.Video != "" {
		fmt.Fprintf(stdout, ", video %s (%d frames)", sum.Video, sum.VideoFrames)
	}
	m := synth.MarkingRegion(synth.RenderOptions{Seed: *seed, Width: *width, Height: *height})
	fmt.Fprintf(stdout, "\nsynth: serial numbers and codes change per part inside %d,%d,%d,%d (takt model train --ignore %d,%d,%d,%d)\n",
		m.Min.X, m.Min.Y, m.Max.X, m.Max.Y, m.Min.X, m.Min.Y, m.Max.X, m.Max.Y)
	return nil
}
