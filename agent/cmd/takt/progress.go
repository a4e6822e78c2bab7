package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress shows training steps on stderr: a bar redrawn in place on a terminal, plain
// lines otherwise (logs, CI), one per step change and at most one a second within a step.
type progress struct {
	w     io.Writer
	tty   bool
	cur   string
	last  time.Time
	start time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// step reports done of total units of step; it matches train.TrainOptions.Progress.
func (p *progress) step(step string, done, total int) {
	now := time.Now()
	if p.tty {
		const width = 30
		n := width * done / max(total, 1)
		fmt.Fprintf(p.w, "\r%-10s [%s%s] %d/%d %5.1fs", step, strings.Repeat("#", n), strings.Repeat(".", width-n), done, total,
			now.Sub(p.start).Seconds())
		if done == total {
			fmt.Fprintln(p.w)
		}
		return
	}
	if step != p.cur || done == total || now.Sub(p.last) >= time.Second {
		fmt.Fprintf(p.w, "train: %s %d/%d (%.1fs)\n", step, done, total, now.Sub(p.start).Seconds())
		p.cur, p.last = step, now
	}
}
