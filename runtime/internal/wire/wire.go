// Package wire maps events to Watermill messages and back.
//
// Metadata follows CloudEvents 1.0 in binary mode: the payload is the event's
// JSON and each attribute is a header, named as the broker's protocol binding
// says (see Binding), so a consumer in any language can read them. Extension
// attributes carry what CloudEvents has no core attribute for:
// eventversion, partitionkey (the partitioning extension's name for the
// ordering key), sequence (the sequence extension: the event's position
// among the events of its source, topic and partitionkey), and, when
// tracing is on, traceparent and tracestate (the distributed-tracing
// extension).
package wire

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Header names.
const (
	HeaderID           = "ce_id"
	HeaderType         = "ce_type"
	HeaderSource       = "ce_source"
	HeaderSpecVersion  = "ce_specversion"
	HeaderTime         = "ce_time"
	HeaderEventVersion = "ce_eventversion"
	HeaderKey          = "ce_partitionkey"
	HeaderSequence     = "ce_sequence"
	HeaderContentType  = "content-type"
)

// The CloudEvents distributed-tracing extension: the W3C trace context of
// the event's producer, which the outbox stores with the row and the relay
// replaces with its own span's. Like the other attributes, each broker
// binding names them its own way: ce-traceparent on NATS,
// cloudEvents_traceparent on AMQP.
const (
	HeaderTraceParent = "ce_traceparent"
	HeaderTraceState  = "ce_tracestate"
)

// SpecVersion is the CloudEvents version written to ce_specversion.
const SpecVersion = "1.0"

// ContentType is the payload's media type.
const ContentType = "application/json"

// MaxHeaderValue bounds a single header value accepted from the broker.
const MaxHeaderValue = 4096

// Envelope is an event with its CloudEvents attributes.
type Envelope struct {
	ID      string
	Name    string
	Version int
	Source  string
	Key     string
	// Sequence is the event's position among the events of its Source,
	// topic and Key, from 1 in commit order with no gaps; 0 for an event
	// without a key, or from a producer that does not order.
	Sequence int64
	Time     time.Time
	Payload  []byte
	// Headers holds extra headers: the application's own, and extension
	// attributes under their ce_ names (HeaderTraceParent,
	// HeaderTraceState). Encode writes the attributes above after them,
	// so an entry named like one of those is overwritten.
	Headers map[string]string
}

// Encode builds the Watermill message for e. The message UUID is e.ID, so a
// message keeps its id across every retry.
func Encode(e Envelope) *message.Message {
	m := message.NewMessage(e.ID, e.Payload)
	for k, v := range e.Headers {
		m.Metadata.Set(k, v)
	}
	m.Metadata.Set(HeaderID, e.ID)
	m.Metadata.Set(HeaderType, e.Name)
	m.Metadata.Set(HeaderSource, e.Source)
	m.Metadata.Set(HeaderSpecVersion, SpecVersion)
	m.Metadata.Set(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(HeaderEventVersion, strconv.Itoa(e.Version))
	m.Metadata.Set(HeaderContentType, ContentType)
	if e.Key != "" {
		m.Metadata.Set(HeaderKey, e.Key)
	}
	if e.Sequence > 0 {
		m.Metadata.Set(HeaderSequence, FormatSequence(e.Sequence))
	}
	return m
}

// ErrMalformed marks a message whose metadata cannot be decoded. Such a
// message is never retried: it can only fail again.
var ErrMalformed = errors.New("malformed message")

// Decode reads the envelope of a received message in binary mode, or in
// structured mode (content type application/cloudevents+json, as some
// CloudEvents producers send) if its payload is at most maxPayload bytes.
// The id falls back to the Watermill UUID when ce_id is absent; a missing or
// invalid ce_type, a bad ce_eventversion or ce_time, or an oversized header
// is an error wrapping ErrMalformed. Decode never fails on unknown headers:
// they are kept in Headers.
func Decode(m *message.Message, maxPayload int) (Envelope, error) {
	md := m.Metadata
	e := Envelope{Payload: m.Payload}
	var errs []error
	if isStructured(md) {
		var err error
		if md, e.Payload, err = structured(md, m.Payload, maxPayload); err != nil {
			errs = append(errs, err)
		}
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys) // errors in a stable order
	for _, k := range keys {
		v := md[k]
		if len(v) > MaxHeaderValue {
			errs = append(errs, fmt.Errorf("header %q is %d bytes, over the limit of %d", k, len(v), MaxHeaderValue))
			continue
		}
		switch k {
		case HeaderID:
			e.ID = v
		case HeaderType:
			e.Name = v
		case HeaderSource:
			e.Source = v
		case HeaderKey:
			e.Key = v
		case HeaderSequence:
			n, err := ParseSequence(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("header %s: %w", HeaderSequence, err))
			}
			e.Sequence = n
		case HeaderEventVersion:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("header %s: %q is not a positive integer", HeaderEventVersion, v))
			}
			e.Version = n
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				errs = append(errs, fmt.Errorf("header %s: %q is not an RFC 3339 time", HeaderTime, v))
			}
			e.Time = t
		case HeaderSpecVersion, HeaderContentType:
		default:
			if strings.HasPrefix(k, "_") {
				continue // broker-internal metadata, such as Watermill's own
			}
			if e.Headers == nil {
				e.Headers = make(map[string]string)
			}
			e.Headers[k] = v
		}
	}
	if e.ID == "" {
		e.ID = m.UUID
	}
	if e.ID == "" {
		errs = append(errs, errors.New("no message id: both ce_id and the message UUID are empty"))
	}
	if e.Name == "" {
		errs = append(errs, fmt.Errorf("header %s is missing", HeaderType))
	}
	if e.Sequence > 0 && e.Key == "" {
		errs = append(errs, fmt.Errorf("header %s without %s: a sequence orders the events of one key", HeaderSequence, HeaderKey))
	}
	if e.Version == 0 && len(errs) == 0 {
		e.Version = 1 // producers that do not send the extension publish version 1
	}
	if len(errs) > 0 {
		return e, fmt.Errorf("%w: %w", ErrMalformed, errors.Join(errs...))
	}
	return e, nil
}

// sequenceDigits is the width of a sequence on the wire: the sequence
// extension compares values as strings, so they are zero-padded to the
// digits of the largest int64.
const sequenceDigits = 19

// FormatSequence writes n (at least 1) as the sequence extension's value:
// decimal, zero-padded to 19 digits, so that string order is numeric order.
func FormatSequence(n int64) string {
	s := strconv.FormatInt(n, 10)
	if len(s) >= sequenceDigits {
		return s
	}
	return strings.Repeat("0", sequenceDigits-len(s)) + s
}

// ParseSequence reads a sequence written by FormatSequence, or by another
// producer as plain decimal digits: a positive integer that fits an int64.
func ParseSequence(v string) (int64, error) {
	if v == "" || len(v) > 2*sequenceDigits || strings.TrimLeft(v, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal sequence number", v)
	}
	n, err := strconv.ParseInt(strings.TrimLeft(v, "0"), 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a sequence number from 1 to %d", v, int64(math.MaxInt64))
	}
	return n, nil
}

// MaxHeaderName bounds a header name: AMQP 0-9-1 field names are short
// strings, and brokers and proxies cap names well below values.
const MaxHeaderName = 128

// CheckValue reports why v, a value that travels as a header or attribute
// (a key, a source, a header from WithHeader), is refused, or nil if every
// broker carries it unchanged. PostgreSQL refuses NUL and invalid UTF-8 in
// the outbox; control characters (line breaks among them) are refused
// because they end a header on some protocols and forge lines in logs and
// consoles. Spaces, quotes and percent signs are fine: the NATS binding
// percent-encodes them. Publish checks every value, so that a committed
// event is always deliverable.
func CheckValue(v string) error {
	switch {
	case len(v) > MaxHeaderValue:
		return fmt.Errorf("is %d bytes, over the limit of %d", len(v), MaxHeaderValue)
	case !utf8.ValidString(v):
		return errors.New("is not valid UTF-8")
	}
	for i, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("holds the control character %U at byte %d", r, i)
		}
	}
	return nil
}

// CheckName reports why name could not be a header name on every broker,
// or nil if it can: 1 to MaxHeaderName bytes of letters, digits and
// !#$%&'*+-.^_`|~ (an HTTP token, which NATS and AMQP both carry).
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxHeaderName:
		return fmt.Errorf("is %d bytes, over the limit of %d", len(name), MaxHeaderName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isTokenChar(c) {
			return fmt.Errorf("holds %q at byte %d: use letters, digits and !#$%%&'*+-.^_`|~", c, i)
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
