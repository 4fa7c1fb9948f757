package diff

import (
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestUnified(t *testing.T) {
	old := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n"
	new := "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\nl\n"
	want := `--- old
+++ new
@@ -1,7 +1,7 @@
 a
 b
 c
-d
+D
 e
 f
 g
@@ -9,3 +9,4 @@
 i
 j
 k
+l
`
	if got := string(Unified("old", "new", []byte(old), []byte(new))); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if d := Unified("a", "b", []byte(old), []byte(old)); d != nil {
		t.Errorf("equal inputs gave a diff:\n%s", d)
	}
}

func TestUnifiedNewAndDeletedFiles(t *testing.T) {
	got := string(Unified("/dev/null", "b/x", nil, []byte("one\ntwo")))
	want := "--- /dev/null\n+++ b/x\n@@ -0,0 +1,2 @@\n+one\n+two\n\\ No newline at end of file\n"
	if got != want {
		t.Errorf("got:\n%q\nwant:\n%q", got, want)
	}
	got = string(Unified("a/x", "/dev/null", []byte("one\n"), nil))
	want = "--- a/x\n+++ /dev/null\n@@ -1 +0,0 @@\n-one\n"
	if got != want {
		t.Errorf("got:\n%q\nwant:\n%q", got, want)
	}
}

// TestUnifiedApplies applies random diffs back to the old text: the result
// must be the new text, including when the diff falls back to replacing
// the changed middle as a whole.
func TestUnifiedApplies(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		n := r.IntN(60)
		if i%50 == 0 {
			n = 3000
		}
		var a []string
		for range n {
			a = append(a, strconv.Itoa(r.IntN(8)))
		}
		b := append([]string(nil), a...)
		for range r.IntN(10) + (n / 2 * (i % 50 / 49)) {
			switch j := r.IntN(len(b) + 1); r.IntN(3) {
			case 0:
				b = append(b[:j], append([]string{"new" + strconv.Itoa(r.IntN(5))}, b[j:]...)...)
			case 1:
				if j < len(b) {
					b = append(b[:j], b[j+1:]...)
				}
			case 2:
				if j < len(b) {
					b[j] = "changed"
				}
			}
		}
		old, new := join(a), join(b)
		d := Unified("a", "b", []byte(old), []byte(new))
		if got := apply(t, old, string(d)); got != new {
			t.Fatalf("case %d: applying the diff gave\n%q\nwant\n%q\ndiff:\n%s", i, got, new, d)
		}
	}
}

func join(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

var hunkHeader = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@`)

// apply applies a unified diff made by Unified to old.
func apply(t *testing.T, old, d string) string {
	t.Helper()
	if d == "" {
		return old
	}
	src := splitLines([]byte(old))
	var out []string
	next := 0 // next line of src to copy
	lines := strings.SplitAfter(d, "\n")
	for i := 2; i < len(lines) && lines[i] != ""; i++ {
		l := lines[i]
		if m := hunkHeader.FindStringSubmatch(l); m != nil {
			start, _ := strconv.Atoi(m[1])
			if m[2] != "0" {
				start-- // the hunk starts at this line, not after it
			}
			out = append(out, src[next:start]...)
			next = start
			continue
		}
		switch l[0] {
		case ' ':
			out = append(out, src[next])
			next++
		case '-':
			next++
		case '+':
			out = append(out, l[1:])
		case '\\':
			out[len(out)-1] = strings.TrimSuffix(out[len(out)-1], "\n")
		}
	}
	out = append(out, src[next:]...)
	return strings.Join(out, "")
}
