// Package naming converts spec names into Go identifiers. It is the only
// place that knows how a Go name is derived; the model calls it once for
// every name and records the result.
package naming

import (
	"go/token"
	"strings"
)

// GoName converts a spec name into an exported Go identifier: words are
// split on every character that is not an ASCII letter or digit and on case
// changes, each word's first letter is upper-cased, and common initialisms
// are written in capitals. Letters are only ever upper-cased, never
// lower-cased:
//
//	order_id                 OrderID
//	api_url                  APIURL
//	orderId                  OrderID
//	inventory.stock-reserved InventoryStockReserved
//	user_ids                 UserIDs
//
// ok is false when no identifier can be derived: when s contains a non-ASCII
// character, has no letter or digit, or would start with a digit.
func GoName(s string) (name string, ok bool) {
	name, ok = Camel(s)
	if !ok || !isUpper(name[0]) {
		return "", false
	}
	return name, true
}

// Camel converts s like [GoName] but allows the result to start with a
// digit, for use as the suffix of a longer identifier (an enum value "1"
// gives the constant PriorityLevel1).
func Camel(s string) (name string, ok bool) {
	var b strings.Builder
	for _, w := range Words(s) {
		if w == "" {
			continue
		}
		b.WriteString(word(w))
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "", false
		}
	}
	if b.Len() == 0 {
		return "", false
	}
	return b.String(), true
}

// Words splits s into words: at every byte that is not an ASCII letter or
// digit, before an upper-case letter that follows a lower-case letter or a
// digit, and before the last capital of a run of capitals that is followed
// by a lower-case letter (HTTPServer is HTTP and Server).
func Words(s string) []string {
	var words []string
	start := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) {
			if start >= 0 {
				words = append(words, s[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
			continue
		}
		prev := s[i-1]
		if isUpper(c) && (isLower(prev) || isDigit(prev)) ||
			isUpper(c) && isUpper(prev) && i+1 < len(s) && isLower(s[i+1]) {
			words = append(words, s[start:i])
			start = i
		}
	}
	if start >= 0 {
		words = append(words, s[start:])
	}
	return words
}

// word capitalises one word, writing initialisms and their plurals (IDs,
// URLs) in capitals.
func word(w string) string {
	lw := strings.ToLower(w)
	if isInitialism(lw) {
		return strings.ToUpper(w)
	}
	if n := len(lw); n > 2 && lw[n-1] == 's' && isInitialism(lw[:n-1]) {
		return strings.ToUpper(w[:n-1]) + "s"
	}
	if isLower(w[0]) {
		return string(w[0]-'a'+'A') + w[1:]
	}
	return w
}

// isInitialism reports whether the lower-case word w is one of the
// initialisms that Go style writes in capitals (the list of golint, which
// gopls and staticcheck share).
func isInitialism(w string) bool {
	switch w {
	case "acl", "api", "ascii", "cpu", "css", "dns", "eof", "guid", "html",
		"http", "https", "id", "ip", "json", "lhs", "qps", "ram", "rhs",
		"rpc", "sla", "smtp", "sql", "ssh", "tcp", "tls", "ttl", "udp", "ui",
		"uid", "uuid", "uri", "url", "utf8", "vm", "xml", "xmpp", "xsrf", "xss":
		return true
	}
	return false
}

// IsKeyword reports whether s is a Go keyword.
func IsKeyword(s string) bool { return token.IsKeyword(s) }

// IsPredeclared reports whether s is one of Go's predeclared identifiers:
// the built-in types, constants, zero value and functions.
func IsPredeclared(s string) bool {
	switch s {
	case "any", "bool", "byte", "comparable", "complex64", "complex128",
		"error", "float32", "float64", "int", "int8", "int16", "int32",
		"int64", "rune", "string", "uint", "uint8", "uint16", "uint32",
		"uint64", "uintptr",
		"true", "false", "iota", "nil",
		"append", "cap", "clear", "close", "complex", "copy", "delete",
		"imag", "len", "make", "max", "min", "new", "panic", "print",
		"println", "real", "recover":
		return true
	}
	return false
}

// IsExported reports whether s is an exported Go identifier made of ASCII
// letters and digits, which is what a go_name must be.
func IsExported(s string) bool {
	if s == "" || !isUpper(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '_' {
			return false
		}
	}
	return true
}

// IsPackageName reports whether s is a conventional Go package name: lower
// case ASCII letters and digits, starting with a letter, and not a keyword.
func IsPackageName(s string) bool {
	if s == "" || !isLower(s[0]) || token.IsKeyword(s) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isLower(s[i]) && !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isAlnum(c byte) bool { return isUpper(c) || isLower(c) || isDigit(c) }
