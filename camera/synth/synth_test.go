package synth

import (
	"bytes"
	"fmt"
	"image"
	"reflect"
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{Out: "x", Good: 1, Defective: 1}
	tests := []struct {
		name string
		edit func(*Options)
		want string // substring of the error; "" means valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"line with video", func(o *Options) { o.Layout, o.Video = LayoutLine, true }, ""},
		{"good only, no kinds", func(o *Options) { o.Defective, o.Defects = 0, []Defect{} }, ""},
		{"no out", func(o *Options) { o.Out = "" }, "out folder is required"},
		{"negative good", func(o *Options) { o.Good = -1 }, "good count -1 is negative"},
		{"negative defective", func(o *Options) { o.Defective = -2 }, "defective count -2 is negative"},
		{"nothing", func(o *Options) { o.Good, o.Defective = 0, 0 }, "nothing to generate"},
		{"unknown defect", func(o *Options) { o.Defects = []Defect{Scratch, "dent"} }, `unknown defect kind "dent"`},
		{"none as defect", func(o *Options) { o.Defects = []Defect{None} }, `unknown defect kind ""`},
		{"duplicate defect", func(o *Options) { o.Defects = []Defect{Spot, Spot} }, `"spot" listed twice`},
		{"empty kinds", func(o *Options) { o.Defects = []Defect{} }, "defect list is empty"},
		{"unknown layout", func(o *Options) { o.Layout = "grid" }, `unknown layout "grid" (want classes or line)`},
		{"video in classes", func(o *Options) { o.Video = true }, "video needs layout line"},
		{"negative fps", func(o *Options) { o.Layout, o.Video, o.VideoFPS = LayoutLine, true, -1 }, "video fps"},
		{"too narrow", func(o *Options) { o.Width = 100 }, "width 100 out of range"},
		{"too tall", func(o *Options) { o.Height = 5000 }, "height 5000 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.edit(&o)
			err := o.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if tt.want != "" {
				if _, gerr := Generate(o); gerr == nil || gerr.Error() != err.Error() {
					t.Fatalf("Generate() = %v, want the Validate error %v", gerr, err)
				}
			}
		})
	}
}

func TestRenderPartValidates(t *testing.T) {
	tests := []struct {
		opts   RenderOptions
		index  int
		defect Defect
		want   string
	}{
		{RenderOptions{}, 0, None, "part index 0"},
		{RenderOptions{}, 1, "dent", `unknown defect kind "dent"`},
		{RenderOptions{Width: 64, Height: 48}, 1, None, "width 64 out of range"},
	}
	for _, tt := range tests {
		_, _, err := RenderPart(tt.opts, tt.index, tt.defect)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("RenderPart(%+v, %d, %q) = %v, want an error containing %q", tt.opts, tt.index, tt.defect, err, tt.want)
		}
	}
}

func TestParseDefects(t *testing.T) {
	got, err := ParseDefects(" scratch, crack ")
	if want := []Defect{Scratch, Crack}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ParseDefects = %v, %v; want %v", got, err, want)
	}
	if got, err := ParseDefects(""); err != nil || !reflect.DeepEqual(got, AllDefects()) {
		t.Errorf(`ParseDefects("") = %v, %v; want all`, got, err)
	}
	if _, err := ParseDefects("scratch,dent"); err == nil || !strings.Contains(err.Error(), `"dent"`) {
		t.Errorf("ParseDefects(dent) = %v, want unknown kind", err)
	}
}

func TestPlan(t *testing.T) {
	o := Options{Out: "x", Seed: 3, Good: 7, Defective: 9, Layout: LayoutLine}.withDefaults()
	a, b := o.plan(), o.plan()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("plan is not deterministic")
	}
	count := map[Defect]int{}
	for i, l := range a {
		if l.Seq != i+1 {
			t.Errorf("label %d has seq %d", i, l.Seq)
		}
		count[l.Defect]++
	}
	if want := map[Defect]int{None: 7, Scratch: 3, MissingHole: 2, Spot: 2, Crack: 2}; !reflect.DeepEqual(count, want) {
		t.Errorf("kinds = %v, want %v", count, want)
	}
	if a[0].File != "line/00001.png" {
		t.Errorf("first file %q, want line/00001.png", a[0].File)
	}
	// The line is interleaved: good and defective parts alternate more than once or twice.
	changes := 0
	for i := 1; i < len(a); i++ {
		if a[i].Good() != a[i-1].Good() {
			changes++
		}
	}
	if changes < 4 {
		t.Errorf("good and defective parts change %d times along the line, want >= 4: %v", changes, a)
	}

	o.Layout = LayoutClasses
	next := map[Defect]int{}
	for _, l := range o.plan() {
		next[l.Defect]++
		want := fmt.Sprintf("%s/part-%05d.png", classDir(l.Defect), next[l.Defect])
		if l.File != want {
			t.Errorf("seq %d: file %q, want %q", l.Seq, l.File, want)
		}
	}
}

func TestLabelsRoundTrip(t *testing.T) {
	in := []Label{
		{Seq: 1, File: "line/00001.png"},
		{Seq: 2, File: "line/00002.png", Defect: Crack, Box: image.Rect(10, 20, 40, 35)},
	}
	var buf bytes.Buffer
	if err := WriteLabels(&buf, in); err != nil {
		t.Fatal(err)
	}
	want := "seq,file,label,defect,x,y,w,h\n1,line/00001.png,good,,0,0,0,0\n2,line/00002.png,defective,crack,10,20,30,15\n"
	if buf.String() != want {
		t.Fatalf("labels.csv =\n%s\nwant\n%s", buf.String(), want)
	}
	out, err := ReadLabels(&buf)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("ReadLabels = %v, %v; want %v", out, err, in)
	}
	for _, bad := range []string{
		"",
		"seq,file\n",
		"seq,file,label,defect,x,y,w,h\n1,a.png,good,crack,0,0,0,0\n",
		"seq,file,label,defect,x,y,w,h\n1,a.png,defective,,0,0,0,0\n",
		"seq,file,label,defect,x,y,w,h\nx,a.png,good,,0,0,0,0\n",
		"seq,file,label,defect,x,y,w,h\n1,a.png,defective,spot,0,0,-1,0\n",
		"seq,file,label,defect,x,y,w,h\n1,a.png,defective,spot,0,0,99999999999,0\n",
	} {
		if _, err := ReadLabels(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadLabels(%q) = nil error, want one", bad)
		}
	}
}

func FuzzReadLabels(f *testing.F) {
	f.Add("seq,file,label,defect,x,y,w,h\n1,line/00001.png,good,,0,0,0,0\n2,b.png,defective,spot,1,2,3,4\n")
	f.Add("seq,file,label,defect,x,y,w,h\n\"1\",\"a\"\"b\",good,,0,0,0,0\n")
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := ReadLabels(strings.NewReader(s))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteLabels(&buf, ls); err != nil {
			t.Fatal(err)
		}
		again, err := ReadLabels(&buf)
		if err != nil || !reflect.DeepEqual(again, ls) {
			t.Fatalf("round trip: %v, %v; want %v", again, err, ls)
		}
	})
}

func TestMarkingRegion(t *testing.T) {
	got := MarkingRegion(RenderOptions{})
	want := image.Rect(274, 106, 520, 202)
	if got != want {
		t.Fatalf("MarkingRegion 640x480: got %v, want %v", got, want)
	}
	half := MarkingRegion(RenderOptions{Width: 320, Height: 240})
	if half.Min.X != 137 || half.Max.Y != 101 {
		t.Fatalf("MarkingRegion 320x240: got %v, want half of %v", half, want)
	}
}
