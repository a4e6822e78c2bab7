package web

import (
	"strings"
	"testing"

	"github.com/takt-edge/takt/agent/store"
)

// The part page lists a classifier's class and a detector's boxes.
func TestPartPageShowsClassAndBoxes(t *testing.T) {
	v := VerdictJSON{ImageURL: "/verdicts/7/image", Verdict: store.Verdict{ID: 7, Decision: store.Fail, Class: "dent", Confidence: 0.9987,
		Boxes: []store.Box{{Class: "dent", Confidence: 0.9987, X0: 35.9, Y0: 32.9, X1: 49.8, Y1: 48.6}}}}
	var b strings.Builder
	if err := pageTmpl.ExecuteTemplate(&b, "part.html", pageData{Station: "st", Part: &v, Score: "0.9987"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<th>class</th><td>dent (0.999)</td>", "dent 0.999 at x 36–50, y 33–49",
		`<rect x="35.9" y="32.9" width="13.9" height="15.7">`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("part page lacks %q", want)
		}
	}
	b.Reset()
	v.Class, v.Boxes = "", nil
	if err := pageTmpl.ExecuteTemplate(&b, "part.html", pageData{Station: "st", Part: &v, Score: "1"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "<th>boxes</th>") || strings.Contains(b.String(), "<th>class</th>") || strings.Contains(b.String(), "<svg") {
		t.Errorf("an anomaly model's part page shows class or boxes rows")
	}
}
