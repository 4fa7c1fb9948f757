package model

import (
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/eventgen/eventgen/generator/internal/spec"
)

func (b *builder) text(s spec.String) Text { return CleanText(s.Value) }

// CleanText prepares free text from the spec for generated comments and
// documents. Every kind of line break (\r\n, \r, \v, \f, NEL, U+2028,
// U+2029) becomes \n; other control characters and format characters (bidi
// overrides and isolates, zero-width characters, byte order marks) are
// removed; invalid UTF-8 becomes U+FFFD; trailing spaces and blank lines at
// either end are trimmed, and runs of blank lines become one. What remains
// cannot end a comment line early or make a line display differently from
// how the compiler reads it.
func CleanText(s string) Text {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\r' || r == '\v' || r == '\f' || r == '\u0085' || r == '\u2028' || r == '\u2029':
			b.WriteByte('\n')
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			// dropped
		default:
			b.WriteRune(r)
		}
	}
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRightFunc(l, unicode.IsSpace)
	}
	lines = slices.CompactFunc(lines, func(a, b string) bool { return a == "" && b == "" })
	for len(lines) > 0 && lines[0] == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return Text(strings.Join(lines, "\n"))
}

// hasControl reports whether s holds invalid UTF-8 or a character that
// CleanText would change: a line break, control or format character.
func hasControl(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}

// checkWireName checks a name that goes on the wire or into the outbox
// table: non-empty, at most MaxWireName bytes, ASCII letters and digits and
// the punctuation in punct, starting with a letter or digit. It returns
// what is wrong, or "".
func checkWireName(s, punct string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > MaxWireName:
		return "is " + strconv.Itoa(len(s)) + " bytes, over the limit of " + strconv.Itoa(MaxWireName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune(punct, rune(c))) {
			p := make([]string, len(punct))
			for j := range punct {
				p[j] = punct[j : j+1]
			}
			return "must start with an ASCII letter or digit and hold only letters, digits and " + strings.Join(p, " ")
		}
	}
	return ""
}

// isTypeName reports whether s can name a shared type: a letter, then
// letters, digits and underscores.
func isTypeName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || c != '_' && (c < '0' || c > '9')) {
			return false
		}
	}
	return s != ""
}

// validJSONName reports whether encoding/json accepts s as a field name in a
// struct tag, excluding spaces (which go vet flags) and "-" (which means
// "skip this field").
func validJSONName(s string) bool {
	if s == "" || s == "-" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}
