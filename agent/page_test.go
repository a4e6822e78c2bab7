package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/takt-edge/takt/models/bundle"
)

// screenshotDir holds the page tests' screenshots (git-ignored); look at them.
const screenshotDir = "testout/screenshots"

// browser starts a real headless Chromium (Debian's chromium; packaging/install-deps.sh
// installs it) with a fresh profile and returns a chromedp context for one tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no chromium on PATH: run packaging/install-deps.sh")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first Run starts the browser, which lives as long as ctx: no timeout on it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx
}

func screenshot(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(screenshotDir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(png))
	return p
}

// The operator page in a real browser: it renders, live parts arrive over SSE, and a label
// click reaches the store.
func TestOperatorPageInChromium(t *testing.T) {
	cfg := httpConfig(t)
	cfg.Camera.FPS = 4
	r := startAgent(t, cfg)
	ctx := browser(t)

	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	// The station's 1280x800 touch panel.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800, chromedp.EmulateTouch),
		chromedp.Navigate(r.base+"/"), chromedp.WaitVisible(chromedp.CSS("#cur-verdict"))); err != nil {
		t.Fatalf("open page: %v", err)
	}
	waitFor(t, "a part on the page", 20*time.Second, func() bool {
		v := text("#cur-verdict")
		return v == "PASS" || v == "FAIL" || v == "NO DECISION"
	})
	first := text("#cur-serial")
	waitFor(t, "a live update (a new serial)", 20*time.Second, func() bool { return text("#cur-serial") != first })
	waitFor(t, "the status header", 10*time.Second, func() bool {
		return strings.Contains(text("#model"), "fixture-part 0.1.0") && text("#camera") == "camera connected" && text("#health") == "ready"
	})
	for sel, want := range map[string]string{"#plc": "PLC off", "#mqtt": "MQTT not configured", "#sync": "sync not configured"} {
		if got := text(sel); got != want {
			t.Errorf("%s: got %q, want %q", sel, got, want)
		}
	}
	rows := evalInt(t, ctx, `document.querySelectorAll("#yield tbody tr").length`)
	if rows != 10 {
		t.Errorf("yield table: got %d rows, want 10 (shift, 8 hours, all time)", rows)
	}

	// Pin a FAIL part from the strip (its heatmap shows) and label it a false reject.
	waitFor(t, "a FAIL part with its heatmap in the strip", 30*time.Second, func() bool {
		return evalInt(t, ctx, `document.querySelectorAll("#strip .thumb.FAIL").length`) > 0
	})
	// The strip is rebuilt on every update: find and click the button in one step.
	idStr, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => { const b = document.querySelector("#strip .thumb.FAIL"); b.click(); return b.dataset.id })()`))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := strconv.ParseUint(idStr, 10, 64)
	waitFor(t, "the heatmap of the pinned part", 10*time.Second, func() bool {
		src, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("cur-img").getAttribute("src") || ""`))
		return src == fmt.Sprintf("/verdicts/%d/heatmap", id)
	})
	waitFor(t, "the heatmap image to load", 10*time.Second, func() bool {
		ok, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const i = document.getElementById("cur-img"); return i.complete && i.naturalWidth > 0 })()`))
		return ok
	})
	if text("#cur-verdict") != "FAIL" {
		t.Fatalf("pinned part shows %q, want FAIL", text("#cur-verdict"))
	}
	screenshot(t, ctx, "operator-page.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#btn-fr"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the label confirmation", 10*time.Second, func() bool { return strings.Contains(text("#msg"), "labelled false_reject") })
	st := r.a.live.Load().st
	if v, err := st.Get(id); err != nil || v.Label != LabelFalseReject {
		t.Fatalf("store: verdict %d label %q (%v), want %s after the click", id, v.Label, err, LabelFalseReject)
	}
	if got := text("#cur-label"); got != LabelFalseReject {
		t.Errorf("page label: got %q, want %s", got, LabelFalseReject)
	}

	// The part detail view.
	if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s/parts/%d", r.base, id)), chromedp.WaitVisible(chromedp.CSS(".fields"))); err != nil {
		t.Fatal(err)
	}
	v, _ := st.Get(id)
	page := text("main")
	for _, want := range []string{v.Serial, "FAIL", "false_reject", "fixture-part 0.1.0 on cpu", "heatmap"} {
		if !strings.Contains(page, want) {
			t.Errorf("detail page lacks %q:\n%s", want, page)
		}
	}
	screenshot(t, ctx, "part-detail.png")
	// Undo from the detail page.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#btn-fr"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the label to clear", 10*time.Second, func() bool {
		v, _ := st.Get(id)
		return v.Label == ""
	})
}

func evalInt(t *testing.T, ctx context.Context, js string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return n
}

// The operator page shows the serving model's operating point (rule, budget, expected
// false-reject and escape rates) beside what the station saw: the FAIL share since the
// model started serving and the parts operators labelled.
func TestOperatorPageShowsModelRates(t *testing.T) {
	line := newSigner(t, t.TempDir(), "line")
	path := filepath.Join(t.TempDir(), "rated.tar")
	// Threshold 0.001 on the mean gray level: every part FAILs.
	if err := bundle.WriteBundleFile(path, ratedManifest("0.3.0", 0.001), meanGraph(t, 1), nil, line.priv); err != nil {
		t.Fatal(err)
	}
	cfg := httpConfig(t)
	cfg.Model = ModelConfig{Bundle: path, TrustedKeys: []string{line.pub}}
	r := startAgent(t, cfg)
	waitFor(t, "a FAIL part", 30*time.Second, func() bool {
		vs := verdictsAfter(t, r, 0)
		return len(vs) > 0 && vs[0].Decision == "FAIL"
	})
	if err := r.a.Label(context.Background(), verdictsAfter(t, r, 0)[0].ID, LabelFalseReject); err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800, chromedp.EmulateTouch),
		chromedp.Navigate(r.base+"/"), chromedp.WaitVisible(chromedp.CSS("#rates"))); err != nil {
		t.Fatalf("open page: %v", err)
	}
	waitFor(t, "the operating point", 20*time.Second, func() bool { return text("#op-rule") == "rule false-reject · budget 1.00%" })
	row := func(i int) []string {
		cells, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(
			`[...document.querySelectorAll("#rates tbody tr")[%d].cells].map((c) => c.textContent)`, i)))
		if err != nil {
			t.Fatalf("rates row %d: %v", i, err)
		}
		return cells
	}
	waitFor(t, "the FAIL share of parts seen", 20*time.Second, func() bool {
		c := row(0)
		return c[1] == "1.00%" && strings.HasPrefix(c[2], "100.0% of ")
	})
	if c := row(1); c[0] != "false rejects (labelled)" || c[1] != "1.00%" || !strings.HasPrefix(c[2], "1 · ") {
		t.Errorf("labelled false rejects row %q: want 1.00%% expected and the one label", c)
	}
	if c := row(2); c[0] != "escapes (labelled)" || c[1] != "8.00%" || c[2] != "0 · —" {
		t.Errorf("escapes row %q: want 8.00%% expected and none labelled", c)
	}
	screenshot(t, ctx, "operator-page-rates.png")
}
