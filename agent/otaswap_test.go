package agent

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
	"github.com/takt-edge/takt/models"
)

// swapCommits records every committed part: its camera sequence and when it was committed.
type swapCommits struct {
	mu    sync.Mutex
	seqs  []uint64
	times []time.Time
	lat   []float64 // capture to decision, ms
}

func (c *swapCommits) add(v store.Verdict, f camera.Frame) {
	c.mu.Lock()
	c.seqs = append(c.seqs, f.Seq)
	c.times = append(c.times, time.Now())
	c.lat = append(c.lat, v.Latency.DecideMs)
	c.mu.Unlock()
}

func (c *swapCommits) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seqs)
}

// startSwapAgent runs the fixture template model on a looping camera at full speed with
// model updates on, and records every commit.
func startSwapAgent(t *testing.T) (*running, *swapCommits) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Camera.Loop = true
	cfg.Images.Keep = KeepNone
	cfg.ModelUpdate.Enabled = true
	cfg.ModelUpdate.TrustedKeys = []string{newSigner(t, t.TempDir(), "line").pub}
	a, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	if err != nil {
		t.Fatal(err)
	}
	log := &swapCommits{}
	a.onCommit = log.add
	r := startAgentWith(t, a)
	waitFor(t, "first parts", 30*time.Second, func() bool { return log.len() >= 3 })
	return r, log
}

// swapLoop replaces the serving model n times with a freshly loaded copy of the fixture
// model, at the pace of the parts, and returns when each swap happened and the models it
// replaced.
func swapLoop(t *testing.T, r *running, n int, each func(i int)) ([]time.Time, []*stationModel) {
	t.Helper()
	l := r.a.live.Load()
	name := l.models.snapshot()[0].name
	var at []time.Time
	var replaced []*stationModel
	for i := range n {
		rt, err := models.LoadRuntime(fixture.model, models.RuntimeOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		replaced = append(replaced, l.models.snapshot()[0])
		if err := l.models.SwapIn(name, "swap-"+strconv.Itoa(i), rt, 0, nil); err != nil {
			t.Fatalf("swap %d: %v", i, err)
		}
		at = append(at, time.Now())
		if each != nil {
			each(i)
		}
	}
	return at, replaced
}

// checkReleased: every replaced model was released by the active set and by every part
// that used it, and its runtime is closed.
func checkReleased(t *testing.T, replaced []*stationModel) {
	t.Helper()
	f := camera.Frame{Width: 8, Height: 8, Channels: 1, Pix: make([]byte, 64)}
	for i, m := range replaced {
		if n := m.refs.Load(); n != 0 {
			t.Fatalf("model replaced by swap %d still has %d references", i, n)
		}
		if _, err := m.rt.Infer(context.Background(), f); err == nil {
			t.Fatalf("model replaced by swap %d: its runtime still runs, want it closed", i)
		}
	}
}

// rssMB is the process's resident memory after a GC.
func rssMB(t *testing.T) float64 {
	runtime.GC()
	debug.FreeOSMemory()
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data))
	pages, _ := strconv.Atoi(f[1])
	return float64(pages*os.Getpagesize()) / (1 << 20)
}

// checkNoPartLost: the camera's sequence numbers of the committed parts are contiguous, each
// once.
func checkNoPartLost(t *testing.T, log *swapCommits) {
	t.Helper()
	log.mu.Lock()
	defer log.mu.Unlock()
	for i := 1; i < len(log.seqs); i++ {
		if log.seqs[i] != log.seqs[i-1]+1 {
			t.Fatalf("part %d: camera sequence %d after %d: a part was dropped or answered twice", i, log.seqs[i], log.seqs[i-1])
		}
	}
}

// TestModelSwapsUnderLoad swaps the serving model 100 times (10 under -race) while the
// camera runs at full speed: no part is dropped or answered twice, every replaced runtime
// is closed once its last part released it, and (without -race, whose shadow memory
// swamps the figure) memory returns to its warm level: the lowest and highest RSS sampled in
// the last half of the swaps stay within 24 and 32 MB of the first half's (a leaked session
// would add a whole session a swap; glibc keeping the freed sessions' pages, before
// trimHeapSoon, added about a tenth of that; a loaded machine moves the floor a little
// without a leak).
func TestModelSwapsUnderLoad(t *testing.T) {
	swaps := 100
	if raceEnabled {
		swaps = 10
	}
	r, log := startSwapAgent(t)
	warm := min(5, swaps/2)
	var rss []float64 // after every 5th swap from warm on
	_, replaced := swapLoop(t, r, swaps, func(i int) {
		if i >= warm-1 && (i-warm+1)%5 == 0 && !raceEnabled {
			rss = append(rss, settledRSS(t))
		}
	})
	parts := log.len()
	waitFor(t, "parts after the last swap", 30*time.Second, func() bool { return log.len() >= parts+3 })
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkNoPartLost(t, log)
	checkReleased(t, replaced)
	if log.len() < swaps/4 {
		t.Fatalf("only %d parts during %d swaps: the line stalled", log.len(), swaps)
	}
	if raceEnabled {
		t.Logf("%d swaps over %d parts (RSS not judged under -race)", swaps, log.len())
		return
	}
	end := settledRSS(t)
	// A sample lands with one session alive or two (the next model loads while the old one
	// serves), a session's size apart, so a fitted slope is mostly noise. Compare the halves' floors
	// (one session) and peaks (two) instead: a leak lifts both.
	half := len(rss) / 2
	floorGrow := slices.Min(rss[half:]) - slices.Min(rss[:half])
	peakGrow := slices.Max(rss[half:]) - slices.Max(rss[:half])
	perSwap := floorGrow / float64(5*half)
	t.Logf("RSS every 5 swaps: %.1f", rss)
	t.Logf("%d swaps over %d parts; RSS %.1f MB after %d swaps, %.1f MB after the last, %.1f MB stopped; floor %+.1f MB, peak %+.1f MB from the first half to the second (%+.3f MB a swap)",
		swaps, log.len(), rss[0], warm, rss[len(rss)-1], end, floorGrow, peakGrow, perSwap)
	if floorGrow > 24 || peakGrow > 32 {
		t.Errorf("RSS floor %+.1f MB (want < 24), peak %+.1f MB (want < 32) from the first %d swaps to the last: memory does not return to its warm level",
			floorGrow, peakGrow, 5*half)
	}
}

// settledRSS is rssMB once the heap trims asked for by closed runtimes ran.
func settledRSS(t *testing.T) float64 {
	t.Helper()
	waitFor(t, "heap trims", 10*time.Second, func() bool { return heapTrims.Load() == 0 })
	return rssMB(t)
}

// TestFiguresModelUpdate prints the model update figures:
//
//	swap_pause_ms          longest gap between two verdicts that has a swap in it, under a
//	                       camera at full speed (100 swaps)
//	swap_gap_baseline_ms   longest gap between two verdicts without a swap, same run
//	shadow_overhead_ratio  active-path latency (capture to decision, p50) with a shadow run
//	                       paced at shadow.max_busy on / off, same run
//	shadow_overhead_ratio_unpaced  the same with a shadow worker that never rests
func TestFiguresModelUpdate(t *testing.T) {
	if os.Getenv("TAKT_FIGURES") != "1" {
		t.Skip("figures run with TAKT_FIGURES=1 (make bench)")
	}
	r, log := startSwapAgent(t)
	defer r.stop()
	at, replaced := swapLoop(t, r, 100, func(int) { time.Sleep(30 * time.Millisecond) })
	time.Sleep(200 * time.Millisecond)
	log.mu.Lock()
	times := slices.Clone(log.times)
	log.mu.Unlock()
	pause, base := 0.0, 0.0
	for i := 1; i < len(times); i++ {
		gap := float64(times[i].Sub(times[i-1]).Microseconds()) / 1000
		swapped := false
		for _, s := range at {
			if s.After(times[i-1]) && !s.After(times[i]) {
				swapped = true
			}
		}
		if swapped {
			pause = max(pause, gap)
		} else if times[i].After(at[0]) && times[i].Before(at[len(at)-1]) {
			base = max(base, gap)
		}
	}
	checkNoPartLost(t, log)
	checkReleased(t, replaced)
	fmt.Printf("BENCH swap_pause_ms=%.1f\n", pause)
	fmt.Printf("BENCH swap_gap_baseline_ms=%.1f\n", base)

	// Shadow overhead: windows of the same number of parts without a shadow run, with one
	// paced at shadow.max_busy (the default) and with one that never rests (max_busy 1),
	// interleaved over rounds so that a change in the machine's load hits all three alike,
	// the order rotating every round so that each mode runs first, second and last once;
	// each ratio is the median over the rounds of the window's p50 over the round's own p50
	// without shadow. A shadow run that compared no part measured nothing and fails.
	u := r.a.ota
	const n, rounds = 50, 3
	p50 := func(from int) float64 {
		waitFor(t, "parts", 180*time.Second, func() bool { return log.len() >= from+n })
		log.mu.Lock()
		defer log.mu.Unlock()
		return quantile(log.lat[from:from+n], 0.5)
	}
	cand, err := models.LoadRuntime(fixture.model, models.RuntimeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cand.Close()
	shadowed := func(maxBusy float64) (float64, ota.ShadowFigures) {
		ctx, cancel := context.WithCancel(context.Background())
		figures, wait := u.MeasureShadow(ctx, r.a.live.Load().models.snapshot()[0].name, cand, cand.Info().Threshold, maxBusy)
		on := p50(log.len())
		s := figures()
		cancel()
		wait()
		return on, s
	}
	busy := defaultModelUpdateConfig().Shadow.MaxBusy
	var pacedR, unpacedR []float64
	for i := range rounds {
		var off, paced, unpaced float64
		var ps, us ota.ShadowFigures
		modes := []func(){
			func() { off = p50(log.len()) },
			func() { paced, ps = shadowed(busy) },
			func() { unpaced, us = shadowed(1) },
		}
		for k := range modes {
			modes[(i+k)%len(modes)]()
		}
		if ps.Compared == 0 || us.Compared == 0 {
			t.Fatalf("round %d: the shadow runs compared %d (max_busy %.2f) and %d (max_busy 1) parts, want some", i, ps.Compared, busy, us.Compared)
		}
		pacedR, unpacedR = append(pacedR, paced/off), append(unpacedR, unpaced/off)
		t.Logf("round %d: active p50 %.1f ms without shadow; %.1f ms with max_busy %.2f (compared %d, dropped %d); %.1f ms with max_busy 1 (compared %d, dropped %d)",
			i, off, paced, busy, ps.Compared, ps.Dropped, unpaced, us.Compared, us.Dropped)
	}
	fmt.Printf("BENCH shadow_overhead_ratio=%.2f\n", quantile(pacedR, 0.5))
	fmt.Printf("BENCH shadow_overhead_ratio_unpaced=%.2f\n", quantile(unpacedR, 0.5))
}

// quantile is the q-quantile of xs (nearest rank); 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(q*float64(len(s))))-1)]
}
