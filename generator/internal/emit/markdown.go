package emit

import (
	"bytes"
	"fmt"
	"io/fs"
	"strings"
	"text/template"

	"github.com/eventgen/eventgen/generator/internal/model"
)

// eventsMarkdown renders EVENTS.md from events.md.tmpl.
func eventsMarkdown(p *model.Package, templates fs.FS) ([]byte, error) {
	t, err := template.New("events.md.tmpl").Option("missingkey=error").Funcs(template.FuncMap{
		"code": mdCode,
		"cell": mdCell,
		"text": mdText,
	}).ParseFS(templates, "events.md.tmpl")
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	var buf bytes.Buffer
	data := struct {
		Header   string
		SpecFile string
		Package  *model.Package
	}{MarkdownHeader, p.SpecFile, p}
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("execute template: %w", err)
	}
	return tidyMarkdown(buf.Bytes()), nil
}

// tidyMarkdown collapses runs of blank lines that template conditionals
// leave behind, and ends the document with exactly one newline.
func tidyMarkdown(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	var out []string
	for _, l := range lines {
		l = strings.TrimRight(l, " ")
		if l == "" && (len(out) == 0 || out[len(out)-1] == "") {
			continue
		}
		out = append(out, l)
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// mdCode renders s as an inline code span that is safe inside a table: the
// fence is longer than any run of backticks in s, and pipes are escaped
// (GitHub unescapes \| inside code spans in tables).
func mdCode(s string) string {
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return fence + strings.ReplaceAll(s, "|", `\|`) + fence
}

// mdCell renders text in one table cell: lines joined by spaces, pipes
// escaped, and HTML markup disarmed.
func mdCell(t model.Text) string {
	var words []string
	for _, l := range t.Lines() {
		if l = strings.TrimSpace(l); l != "" {
			words = append(words, l)
		}
	}
	s := strings.Join(words, " ")
	return strings.ReplaceAll(escapeHTML(s), "|", `\|`)
}

// mdText renders text as a Markdown paragraph with HTML markup disarmed.
// Other Markdown in descriptions is kept, so authors can use it.
func mdText(t model.Text) string {
	return escapeHTML(string(t))
}

func escapeHTML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
