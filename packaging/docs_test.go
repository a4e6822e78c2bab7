package packaging_test

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestReadmeLinks checks every relative link in the repository's README.md files: the
// file or folder must exist and a #fragment must name a heading of the target, as GitHub
// slugs it.
func TestReadmeLinks(t *testing.T) {
	files := readmeFiles(t)
	if len(files) == 0 {
		t.Fatal("no README.md found")
	}
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		a := headingAnchors(string(b))
		anchors[path] = a
		return a
	}
	for _, rel := range files {
		path := filepath.Join(repoRoot, rel)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range markdownLinks(string(b)) {
			if err := checkLink(path, target, anchorsOf); err != "" {
				t.Errorf("%s: link %q: %s", rel, target, err)
			}
		}
	}
}

// readmeFiles lists README.md files relative to the repository root: those git tracks
// (and new ones it does not ignore), or, outside a git checkout, those in the tree.
func readmeFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", repoRoot, "ls-files", "--cached", "--others", "--exclude-standard").Output()
	var files []string
	if err == nil {
		for _, f := range strings.Split(string(out), "\n") {
			if filepath.Base(f) == "README.md" {
				if _, err := os.Stat(filepath.Join(repoRoot, f)); err == nil {
					files = append(files, f)
				}
			}
		}
		return files
	}
	err = filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != repoRoot && (strings.HasPrefix(d.Name(), ".") || d.Name() == "demo" || d.Name() == "dist" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "README.md" {
			rel, _ := filepath.Rel(repoRoot, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// checkLink returns why target, a link in the Markdown file from, does not resolve, or "".
func checkLink(from, target string, anchorsOf func(string) map[string]bool) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	pathPart, fragment, _ := strings.Cut(target, "#")
	p, err := url.PathUnescape(pathPart)
	if err != nil {
		return err.Error()
	}
	dest := from
	switch {
	case p == "":
	case strings.HasPrefix(p, "/"):
		dest = filepath.Join(repoRoot, p)
	default:
		dest = filepath.Join(filepath.Dir(from), p)
	}
	fi, err := os.Stat(dest)
	if err != nil {
		return "no such file or folder"
	}
	if fragment == "" {
		return ""
	}
	if fi.IsDir() || !strings.HasSuffix(dest, ".md") {
		return "a #fragment on something that is not a Markdown file"
	}
	if !anchorsOf(dest)[fragment] {
		return "no heading with anchor #" + fragment
	}
	return ""
}

var (
	fenceRe      = regexp.MustCompile("^\\s*(```|~~~)")
	headingRe    = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	codeSpanRe   = regexp.MustCompile("`[^`\n]*`")
	linkRe       = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	inlineLinkRe = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// prose returns the Markdown's lines outside fenced code blocks.
func prose(md string) []string {
	var lines []string
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if fenceRe.MatchString(line) {
			inFence = !inFence
			continue
		}
		if !inFence {
			lines = append(lines, line)
		}
	}
	return lines
}

// markdownLinks returns the targets of the inline links and images of md, leaving out
// code blocks and code spans.
func markdownLinks(md string) []string {
	text := codeSpanRe.ReplaceAllString(strings.Join(prose(md), "\n"), "")
	var targets []string
	for _, m := range linkRe.FindAllStringSubmatch(text, -1) {
		targets = append(targets, m[1])
	}
	return targets
}

// headingAnchors returns the anchors GitHub gives md's headings: the heading's text
// lowercased, without punctuation, spaces as hyphens, "-1", "-2"... on repeats.
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range prose(md) {
		m := headingRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := slugify(inlineLinkRe.ReplaceAllString(m[1], "$1"))
		if n := seen[slug]; n > 0 {
			anchors[slug+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

func slugify(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestSlugify(t *testing.T) {
	for _, c := range []struct{ heading, want string }{
		{"Few-shot trainer (`takt model train`, `models.Train`)", "few-shot-trainer-takt-model-train-modelstrain"},
		{"Operator page, API, metrics and PLC", "operator-page-api-metrics-and-plc"},
		{"Image sizes: a slim OpenCV instead of Debian's packages", "image-sizes-a-slim-opencv-instead-of-debians-packages"},
		{"Configuration (`cloud.yaml`)", "configuration-cloudyaml"},
	} {
		if got := slugify(c.heading); got != c.want {
			t.Errorf("slugify(%q) = %q, want %q", c.heading, got, c.want)
		}
	}
}
