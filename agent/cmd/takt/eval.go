package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera/synth"
)

// confusion counts verdicts against ground truth; a defective part that PASSed is an escape.
type confusion struct {
	parts, unlabeled                 int
	goodPass, goodFail, goodNoDec    int
	defectFail, defectPass, defNoDec int
}

func cmdEval(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", stderr)
	dir := fs.String("data-dir", "/var/lib/takt", "the agent's data_dir")
	labelsPath := fs.String("labels", "", "labels.csv written by takt synth (required)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	fh, err := os.Open(*labelsPath)
	if err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	labels, err := synth.ReadLabels(fh)
	fh.Close()
	if err != nil {
		return fmt.Errorf("labels %s: %w", *labelsPath, err)
	}
	truth := make(map[string]synth.Label, len(labels))
	for _, l := range labels {
		truth[strings.TrimSuffix(path.Base(l.File), path.Ext(l.File))] = l
	}
	st, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer st.Close()
	var c confusion
	for after := uint64(0); ; {
		vs, err := st.List(after, 1000)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			break
		}
		for _, v := range vs {
			c.add(v, truth)
			after = v.ID
		}
	}
	fmt.Fprintln(stdout, c.String())
	return nil
}

func (c *confusion) add(v store.Verdict, truth map[string]synth.Label) {
	c.parts++
	l, ok := truth[v.Serial]
	switch {
	case !ok:
		c.unlabeled++
	case l.Good() && v.Decision == store.Pass:
		c.goodPass++
	case l.Good() && v.Decision == store.Fail:
		c.goodFail++
	case l.Good():
		c.goodNoDec++
	case v.Decision == store.Fail:
		c.defectFail++
	case v.Decision == store.Pass:
		c.defectPass++
	default:
		c.defNoDec++
	}
}

func (c confusion) String() string {
	good := c.goodPass + c.goodFail + c.goodNoDec
	defective := c.defectFail + c.defectPass + c.defNoDec
	return fmt.Sprintf("eval: parts=%d good=%d defective=%d unlabeled=%d caught=%d escapes=%d (%s of defective) "+
		"false_rejects=%d (%s of good) no_decision=%d",
		c.parts, good, defective, c.unlabeled, c.defectFail, c.defectPass, pct(c.defectPass, defective),
		c.goodFail, pct(c.goodFail, good), c.goodNoDec+c.defNoDec)
}

func pct(n, of int) string {
	if of == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}
