package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/models/tfjs"
)

// cmdModelImportTFJS converts a TensorFlow.js graph model folder (model.json and its
// weight shards) to an ONNX file that `takt model train --backbone` takes.
func cmdModelImportTFJS(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model import-tfjs", stderr)
	out := fs.String("out", "", "ONNX file to write (required)")
	width := fs.Int("width", 0, "fix the image input's width (with --height), e.g. to cut a 224 px backbone at 128 px; default: the model's")
	height := fs.Int("height", 0, "fix the image input's height (with --width)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: takt model import-tfjs DIR --out FILE.onnx [--width W --height H]")
		fmt.Fprintln(stderr, "DIR holds model.json (tensorflowjs_converter --output_format=tfjs_graph_model) and its weight shards.")
		fs.PrintDefaults()
	}
	// DIR may come before the flags (flag stops at the first argument).
	var dir string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dir, args = args[0], args[1:]
	}
	want := 1
	if dir != "" {
		want = 0
	}
	if err := parseFlags(fs, args, want); err != nil {
		return err
	}
	if dir == "" {
		dir = fs.Arg(0)
	}
	if *out == "" {
		fs.Usage()
		return cli.Usagef("model import-tfjs: --out is required")
	}
	data, err := tfjs.ConvertDir(dir, tfjs.Options{Width: *width, Height: *height})
	if err != nil {
		return fmt.Errorf("model import-tfjs: %w", err)
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return fmt.Errorf("model import-tfjs: %w", err)
	}
	fmt.Fprintf(stdout, "import-tfjs: wrote %s (%d bytes, ONNX opset %d, NCHW input; layers keep their TensorFlow names)\n", *out, len(data), tfjs.Opset)
	return nil
}
