package wire

import (
	"strings"
	"unicode/utf8"
)

// A Binding names and encodes the CloudEvents attributes on one broker's
// headers, as that broker's CloudEvents protocol binding says.
//
// Inside eventgen, a Watermill message carries its attributes as metadata
// named with the ce_ prefix (HeaderID and the others), as the Kafka binding
// names them; the Redis Streams, SQL and in-process transports write them so.
// The NATS and AMQP transports translate at the edge with their Binding.
type Binding struct {
	// Prefix precedes each attribute's name on the broker.
	Prefix string
	// Accept holds further prefixes read as attributes: the binding's
	// alternatives, and eventgen's own ce_ of earlier releases, so that
	// messages published before an upgrade are still read.
	Accept []string
	// PercentEncode encodes values as the NATS binding requires: space,
	// double quote, percent and every byte outside printable ASCII as %XX.
	PercentEncode bool
	// ContentType is the header that holds the content type, or "" where
	// the transport puts it in a property of the message instead.
	ContentType string
}

// The bindings of the brokers that have one.
var (
	// NATS is the NATS protocol binding: ce- headers, the content type
	// among them as ce-datacontenttype, with percent-encoded values.
	// Header names are case-insensitive.
	NATS = Binding{Prefix: "ce-", Accept: []string{attributePrefix}, PercentEncode: true, ContentType: "ce-datacontenttype"}
	// AMQP is the AMQP protocol binding: cloudEvents_ application
	// properties (cloudEvents: is read too), and the content type in the
	// message's content-type property, which the transport sets.
	AMQP = Binding{Prefix: "cloudEvents_", Accept: []string{"cloudEvents:", attributePrefix}}
	// Plain is Watermill metadata as it is: ce_ names, values as they are,
	// the content type under HeaderContentType. Redis Streams and the SQL
	// broker carry it so, and eventgen wrote every broker so before the
	// bindings.
	Plain = Binding{Prefix: attributePrefix, ContentType: HeaderContentType}
)

// attributePrefix names attributes in Watermill metadata.
const attributePrefix = "ce_"

// IsAttributeName reports whether name, in any case, is one that some
// broker binding uses for a CloudEvents attribute, and so not free for an
// application's own header.
func IsAttributeName(name string) bool {
	if strings.EqualFold(name, HeaderContentType) {
		return true
	}
	for _, p := range []string{attributePrefix, NATS.Prefix, AMQP.Prefix, "cloudEvents:"} {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			return true
		}
	}
	return false
}

// Header returns the broker's header name and value for the metadata entry
// k, v.
func (b Binding) Header(k, v string) (name, value string) {
	if attr, ok := strings.CutPrefix(k, attributePrefix); ok {
		k = b.Prefix + attr
	} else if k == HeaderContentType && b.ContentType != "" {
		k = b.ContentType
	}
	if b.PercentEncode {
		v = PercentEncode(v)
	}
	return k, v
}

// Metadata returns the metadata entry for the broker's header name, value:
// an attribute under any accepted prefix, in any case, becomes ce_ and its
// name in lower case (CloudEvents attribute names are lower case), and the
// content type, as a content-type header (any case) or a datacontenttype
// attribute, becomes HeaderContentType. Values are decoded where the
// binding encodes them; a message that eventgen wrote before the bindings
// is read with Plain (see natsjs).
func (b Binding) Metadata(name, value string) (k, v string) {
	k = name
	for _, p := range append([]string{b.Prefix}, b.Accept...) {
		if len(name) > len(p) && strings.EqualFold(name[:len(p)], p) {
			k = attributePrefix + strings.ToLower(name[len(p):])
			break
		}
	}
	if k == attributePrefix+"datacontenttype" || strings.EqualFold(k, HeaderContentType) {
		k = HeaderContentType
	}
	if b.PercentEncode {
		value = PercentDecode(value)
	}
	return k, value
}

// PercentEncode encodes v as the NATS binding (and the HTTP binding) encode
// a header value: every byte of space, double quote, percent, or outside
// printable ASCII becomes %XX. A value of other characters is unchanged.
func PercentEncode(v string) string {
	n := 0
	for i := 0; i < len(v); i++ {
		if mustEncode(v[i]) {
			n++
		}
	}
	if n == 0 {
		return v
	}
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(v) + 2*n)
	for i := 0; i < len(v); i++ {
		if c := v[i]; mustEncode(c) {
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&15])
		} else {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

func mustEncode(c byte) bool {
	return c <= ' ' || c == '"' || c == '%' || c > '~'
}

// PercentDecode reads a header value as the binding says a receiver must:
// a double-quoted string is unquoted first, then %XX sequences are decoded
// once. A value that does not decode (a stray %, or bytes that are not
// UTF-8) is returned as it came, so that nothing a foreign producer sent is
// lost.
func PercentDecode(v string) string {
	s := v
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		u, ok := unquote(s[1 : len(s)-1])
		if !ok {
			return v
		}
		s = u
	}
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return v
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return v
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	if !utf8.Valid(b) {
		return v
	}
	return string(b)
}

// unquote reads the inside of an RFC 7230 quoted-string: a backslash
// escapes the next character, and an unescaped double quote cannot occur.
func unquote(s string) (string, bool) {
	if !strings.ContainsAny(s, `\"`) {
		return s, true
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 == len(s) {
				return "", false
			}
			i++
		case '"':
			return "", false
		}
		sb.WriteByte(s[i])
	}
	return sb.String(), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
