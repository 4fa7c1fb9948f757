package wire

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	want := Envelope{
		ID:      "0193b7c2-7d4e-7000-8000-000000000001",
		Name:    "inventory.stock-reserved",
		Version: 3,
		Source:  "shop",
		Key:     "sku-1",
		Time:    time.Date(2026, 11, 23, 18, 30, 0, 123456000, time.UTC),
		Payload: []byte(`{"sku":"sku-1"}`),
		Headers: map[string]string{"traceparent": "00-abc-def-01"},
	}
	m := Encode(want)
	if m.UUID != want.ID {
		t.Errorf("message UUID = %q, want the event id %q", m.UUID, want.ID)
	}
	for k, v := range map[string]string{
		HeaderID: want.ID, HeaderType: want.Name, HeaderSource: "shop", HeaderSpecVersion: "1.0",
		HeaderTime: "2026-11-23T18:30:00.123456Z", HeaderEventVersion: "3", HeaderKey: "sku-1",
		HeaderContentType: "application/json", "traceparent": "00-abc-def-01",
	} {
		if got := m.Metadata.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	got, err := Decode(m, math.MaxInt)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.ID != want.ID || got.Name != want.Name || got.Version != want.Version || got.Source != want.Source ||
		got.Key != want.Key || !got.Time.Equal(want.Time) || string(got.Payload) != string(want.Payload) ||
		len(got.Headers) != 1 || got.Headers["traceparent"] != "00-abc-def-01" {
		t.Errorf("Decode(Encode(e)) = %+v, want %+v", got, want)
	}
}

func TestEncodeOmitsEmptyKey(t *testing.T) {
	m := Encode(Envelope{ID: "id", Name: "A", Version: 1})
	if _, ok := m.Metadata[HeaderKey]; ok {
		t.Errorf("an event without a key got a %s header", HeaderKey)
	}
}

func TestEncodeReservedHeadersWin(t *testing.T) {
	m := Encode(Envelope{ID: "id", Name: "A", Version: 1, Headers: map[string]string{HeaderType: "Forged"}})
	if got := m.Metadata.Get(HeaderType); got != "A" {
		t.Errorf("%s = %q: an extra header overrode the event name", HeaderType, got)
	}
}

func TestDecodeDefaults(t *testing.T) {
	m := message.NewMessage("uuid-1", []byte(`{}`))
	m.Metadata.Set(HeaderType, "A")
	m.Metadata.Set("_watermill_internal", "x")
	e, err := Decode(m, math.MaxInt)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if e.ID != "uuid-1" {
		t.Errorf("ID = %q, want the message UUID when ce_id is absent", e.ID)
	}
	if e.Version != 1 {
		t.Errorf("Version = %d, want 1 when ce_eventversion is absent", e.Version)
	}
	if len(e.Headers) != 0 {
		t.Errorf("Headers = %v, want broker-internal _ headers dropped", e.Headers)
	}
}

func TestDecodeMalformed(t *testing.T) {
	long := strings.Repeat("x", MaxHeaderValue+1)
	tests := []struct {
		name    string
		uuid    string
		headers map[string]string
		want    []string // substrings of the error, in order
	}{
		{"missing type", "u", nil, []string{"ce_type is missing"}},
		{"no id at all", "", map[string]string{HeaderType: "A"}, []string{"no message id"}},
		{"bad version", "u", map[string]string{HeaderType: "A", HeaderEventVersion: "two"}, []string{`ce_eventversion: "two" is not a positive integer`}},
		{"zero version", "u", map[string]string{HeaderType: "A", HeaderEventVersion: "0"}, []string{"not a positive integer"}},
		{"bad time", "u", map[string]string{HeaderType: "A", HeaderTime: "yesterday"}, []string{`ce_time: "yesterday" is not an RFC 3339 time`}},
		{"oversized header", "u", map[string]string{HeaderType: "A", "x-big": long}, []string{`header "x-big" is 4097 bytes`}},
		{"several, in a stable order", "u", map[string]string{HeaderEventVersion: "x", HeaderTime: "y"}, []string{"ce_eventversion", "ce_time", "ce_type is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message.NewMessage(tt.uuid, []byte(`{}`))
			for k, v := range tt.headers {
				m.Metadata.Set(k, v)
			}
			_, err := Decode(m, math.MaxInt)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode error = %v, want ErrMalformed", err)
			}
			msg, at := err.Error(), 0
			for _, w := range tt.want {
				i := strings.Index(msg[at:], w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (after offset %d)", msg, w, at)
				}
				at += i + len(w)
			}
		})
	}
}

// FuzzDecode feeds arbitrary metadata to Decode: it must never panic, must
// classify every failure as ErrMalformed, and what it accepts must survive
// an Encode/Decode round trip.
func FuzzDecode(f *testing.F) {
	f.Add("uuid", "OrderPlaced", "1", "2026-11-23T18:30:00Z", "k", "extra", "v")
	f.Add("", "", "", "", "", "", "")
	f.Add("u", "A", "-1", "not a time", "", "ce_type", "B")
	f.Add("u", "A", "99999999999999999999", "2026-11-23T18:30:00.999999999+14:00", "\x00", "_x", "\u2028")
	f.Fuzz(func(t *testing.T, id, typ, version, ts, key, hk, hv string) {
		m := message.NewMessage(id, []byte(`{}`))
		for k, v := range map[string]string{HeaderType: typ, HeaderEventVersion: version, HeaderTime: ts, HeaderKey: key, hk: hv} {
			if v != "" {
				m.Metadata.Set(k, v)
			}
		}
		e, err := Decode(m, math.MaxInt)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode error %v is not ErrMalformed", err)
			}
			return
		}
		if e.Name == "" || e.ID == "" || e.Version < 1 {
			t.Fatalf("Decode accepted an envelope without name, id or version: %+v", e)
		}
		again, err := Decode(Encode(e), math.MaxInt)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", e, err)
		}
		if again.ID != e.ID || again.Name != e.Name || again.Version != e.Version || again.Key != e.Key || again.Source != e.Source {
			t.Fatalf("round trip changed the envelope: %+v -> %+v", e, again)
		}
	})
}

// FuzzCheckedValuesRoundTrip checks that every value CheckValue and
// CheckName accept is one that no broker changes: no control characters,
// valid UTF-8, and it comes back from Encode, each broker binding's header
// mapping, and Decode as it went in.
func FuzzCheckedValuesRoundTrip(f *testing.F) {
	for _, seed := range [][3]string{
		{"order-1", "x-tenant", "acme"},
		{"a\nb", "h", "v"},
		{" k", "h", "v "},
		{"k\x00", "h:", "v\r\n"},
		{"\xff", "h h", "%0A%00"},
		{"Grüße 東京", "x-trace", "100%"},
		{"k\u2028", "ce_id", "\u0085"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, key, name, value string) {
		for _, v := range []string{key, value} {
			if CheckValue(v) != nil {
				continue
			}
			if !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n\x00\t") || len(v) > MaxHeaderValue {
				t.Fatalf("CheckValue accepted %q", v)
			}
		}
		if CheckName(name) == nil && strings.ContainsAny(name, " :\r\n\x00\t") {
			t.Fatalf("CheckName accepted %q", name)
		}
		if CheckValue(key) != nil || CheckValue(value) != nil || CheckName(name) != nil || IsAttributeName(name) || strings.HasPrefix(name, "_") {
			return
		}
		in := Envelope{ID: "id", Name: "E", Version: 1, Source: key, Key: key, Payload: []byte(`{}`), Headers: map[string]string{name: value}}
		for _, b := range []struct {
			name string
			Binding
		}{{"metadata", Plain}, {"NATS", NATS}, {"AMQP", AMQP}} {
			m := Encode(in)
			onBroker := map[string]string{}
			for k, v := range m.Metadata {
				hk, hv := b.Header(k, v)
				if b.PercentEncode && strings.ContainsFunc(hv, func(r rune) bool { return r <= ' ' || r > '~' }) {
					t.Fatalf("%s: header value %q is not printable ASCII", b.name, hv)
				}
				onBroker[hk] = hv
			}
			m.Metadata = message.Metadata{}
			for hk, hv := range onBroker {
				k, v := b.Metadata(hk, hv)
				m.Metadata[k] = v
			}
			out, err := Decode(m, math.MaxInt)
			if err != nil {
				t.Fatalf("%s: Decode: %v", b.name, err)
			}
			if out.Key != key || out.Source != key || out.Headers[name] != value || len(out.Headers) != 1 {
				t.Fatalf("%s: round trip changed key %q -> %q, source -> %q, or header %q=%q -> %v", b.name, key, out.Key, out.Source, name, value, out.Headers)
			}
		}
	})
}

// FuzzPercentEncoding checks the NATS binding's value encoding: the encoded
// form is printable ASCII without space, double quote or a stray percent,
// and decodes to the value; decoding never fails or panics on what a
// foreign producer may send.
func FuzzPercentEncoding(f *testing.F) {
	for _, seed := range []string{"", "plain", " lead", "trail ", "50%", "%41", `"quoted"`, "Grüße", "a\nb", "\xff", `"a\"b"`, "%", "%4", "%zz"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		_ = PercentDecode(v) // anything a broker delivers
		if !utf8.ValidString(v) {
			return
		}
		enc := PercentEncode(v)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c <= ' ' || c > '~' || c == '"' {
				t.Fatalf("PercentEncode(%q) = %q holds %q", v, enc, c)
			}
		}
		if got := PercentDecode(enc); got != v {
			t.Fatalf("PercentDecode(PercentEncode(%q)) = %q", v, got)
		}
	})
}

func TestBindingNames(t *testing.T) {
	for _, tc := range []struct {
		b                  Binding
		header, value      string
		wantKey, wantValue string
	}{
		{NATS, "ce-id", "1", HeaderID, "1"},
		{NATS, "CE-PartitionKey", "%20k%C3%BC", HeaderKey, " kü"},
		{NATS, "ce-source", `"a b\"c"`, HeaderSource, `a b"c`},
		{NATS, "ce_type", "Old", HeaderType, "Old"}, // eventgen before the binding
		{NATS, "content-type", "application/json", HeaderContentType, "application/json"},
		{NATS, "Content-Type", "application/json", HeaderContentType, "application/json"},
		{NATS, "ce-datacontenttype", "application/json", HeaderContentType, "application/json"},
		{AMQP, "cloudEvents_datacontenttype", "text/plain", HeaderContentType, "text/plain"},
		{Plain, "ce_partitionkey", "%41", HeaderKey, "%41"}, // eventgen before the bindings: not encoded
		{Plain, "x-tenant", "%41", "x-tenant", "%41"},
		{NATS, "x-tenant", "100%", "x-tenant", "100%"}, // not an escape: kept
		{AMQP, "cloudEvents_id", "1", HeaderID, "1"},
		{AMQP, "cloudEvents:type", "T", HeaderType, "T"},
		{AMQP, "ce_time", "t", HeaderTime, "t"},
		{AMQP, "cloudEvents_partitionkey", "%20", HeaderKey, "%20"}, // AMQP values are not encoded
		{AMQP, "x-tenant", "a", "x-tenant", "a"},
	} {
		k, v := tc.b.Metadata(tc.header, tc.value)
		if k != tc.wantKey || v != tc.wantValue {
			t.Errorf("%s Metadata(%q, %q) = %q, %q; want %q, %q", tc.b.Prefix, tc.header, tc.value, k, v, tc.wantKey, tc.wantValue)
		}
	}
	if k, v := NATS.Header(HeaderKey, "a b"); k != "ce-partitionkey" || v != "a%20b" {
		t.Errorf("NATS.Header = %q, %q", k, v)
	}
	if k, _ := NATS.Header(HeaderContentType, ContentType); k != "ce-datacontenttype" {
		t.Errorf("NATS.Header(content type) = %q, want the binding's ce-datacontenttype", k)
	}
	if k, v := AMQP.Header(HeaderSpecVersion, "1.0"); k != "cloudEvents_specversion" || v != "1.0" {
		t.Errorf("AMQP.Header = %q, %q", k, v)
	}
	for name, want := range map[string]bool{"ce_x": true, "CE-x": true, "cloudevents_id": true, "Content-Type": true, "cex": false, "x-ce_": false, "traceparent": false} {
		if IsAttributeName(name) != want {
			t.Errorf("IsAttributeName(%q) = %v", name, !want)
		}
	}
}

func TestDecodeStructuredMode(t *testing.T) {
	structuredMsg := func(body string, md ...string) *message.Message {
		m := message.NewMessage("", []byte(body))
		m.Metadata.Set(HeaderContentType, "application/cloudevents+json; charset=utf-8")
		for i := 0; i+1 < len(md); i += 2 {
			m.Metadata.Set(md[i], md[i+1])
		}
		return m
	}
	t.Run("JSON data", func(t *testing.T) {
		m := structuredMsg(`{"specversion":"1.0","id":"e-1","type":"OrderPlaced","source":"/billing","time":"2026-12-03T10:00:00Z",
			"datacontenttype":"application/json","partitionkey":"order-7","eventversion":2,"traceparent":"00-abc-def-01","data":{"order_id":"7"}}`, "x-tenant", "acme")
		e, err := Decode(m, math.MaxInt)
		if err != nil {
			t.Fatal(err)
		}
		want := Envelope{ID: "e-1", Name: "OrderPlaced", Version: 2, Source: "/billing", Key: "order-7",
			Time: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC), Payload: []byte(`{"order_id":"7"}`),
			Headers: map[string]string{"x-tenant": "acme", "ce_traceparent": "00-abc-def-01"}}
		if e.ID != want.ID || e.Name != want.Name || e.Version != want.Version || e.Source != want.Source || e.Key != want.Key ||
			!e.Time.Equal(want.Time) || string(e.Payload) != string(want.Payload) || fmt.Sprint(e.Headers) != fmt.Sprint(want.Headers) {
			t.Errorf("Decode = %+v\nwant     %+v", e, want)
		}
	})
	t.Run("base64 data", func(t *testing.T) {
		e, err := Decode(structuredMsg(`{"specversion":"1.0","id":"e-2","type":"T","source":"s","data_base64":"eyJhIjoxfQ=="}`), math.MaxInt)
		if err != nil || string(e.Payload) != `{"a":1}` || e.Version != 1 {
			t.Errorf("Decode = %+v, %v", e, err)
		}
	})
	t.Run("text data", func(t *testing.T) {
		e, err := Decode(structuredMsg(`{"specversion":"1.0","id":"e-3","type":"T","source":"s","datacontenttype":"text/plain","data":"hi"}`), math.MaxInt)
		if err != nil || string(e.Payload) != "hi" {
			t.Errorf("Decode = %+v, %v", e, err)
		}
	})
	t.Run("binary mode wins", func(t *testing.T) {
		// A binary-mode message whose data is itself a structured event
		// keeps its own attributes and payload.
		body := `{"specversion":"1.0","id":"inner","type":"Inner","source":"s"}`
		e, err := Decode(structuredMsg(body, HeaderType, "Outer", HeaderID, "outer"), math.MaxInt)
		if err != nil || e.Name != "Outer" || e.ID != "outer" || string(e.Payload) != body {
			t.Errorf("Decode = %+v, %v", e, err)
		}
	})
	for _, tc := range []struct{ name, body, want string }{
		{"not an object", `[1]`, "not a JSON object"},
		{"no type", `{"specversion":"1.0","id":"x","source":"s"}`, "ce_type is missing"},
		{"bad base64", `{"id":"x","type":"T","data_base64":"%%"}`, "data_base64"},
		{"object attribute", `{"id":"x","type":"T","color":{"r":1}}`, `attribute "color"`},
		{"bad time", `{"id":"x","type":"T","time":"noon"}`, "not an RFC 3339 time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(structuredMsg(tc.body), math.MaxInt)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode error = %v, want ErrMalformed mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("over the limit", func(t *testing.T) {
		body := `{"id":"x","type":"T","data":"` + strings.Repeat("a", 100) + `"}`
		e, err := Decode(structuredMsg(body), 50)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "over the limit of 50; not parsed") || string(e.Payload) != body {
			t.Errorf("Decode = %+v, %v", e, err)
		}
	})
}

// FuzzDecodeStructured feeds arbitrary bodies to Decode as structured-mode
// messages: it must never panic and must classify every failure as
// ErrMalformed.
func FuzzDecodeStructured(f *testing.F) {
	for _, seed := range []string{
		`{"specversion":"1.0","id":"1","type":"T","source":"s","data":{"a":1}}`,
		`{"id":"1","type":"T","data_base64":"AA=="}`,
		`{"id":1,"type":true,"eventversion":"x","time":null}`,
		`{"data":"x","datacontenttype":"text/plain","partitionkey":" k "}`,
		`null`, `[]`, `{`, `{"datacontenttype":5}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		m := message.NewMessage("", []byte(body))
		m.Metadata.Set(HeaderContentType, StructuredContentType)
		e, err := Decode(m, 1<<20)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode error %v is not ErrMalformed", err)
		}
		if err == nil && (e.Name == "" || e.ID == "" || e.Version < 1) {
			t.Fatalf("Decode accepted %q as %+v", body, e)
		}
	})
}

func TestSequenceRoundTrip(t *testing.T) {
	for _, n := range []int64{1, 9, 10, 123456789, math.MaxInt64} {
		e := Envelope{ID: "id", Name: "E", Version: 1, Source: "s", Key: "k", Sequence: n, Payload: []byte(`{}`)}
		m := Encode(e)
		v := m.Metadata.Get(HeaderSequence)
		if len(v) != sequenceDigits {
			t.Errorf("sequence %d written as %q, want %d digits", n, v, sequenceDigits)
		}
		got, err := Decode(m, 1<<20)
		if err != nil || got.Sequence != n {
			t.Errorf("sequence %d decoded as %d, %v", n, got.Sequence, err)
		}
	}
	// String order is numeric order, as the sequence extension compares.
	if a, b := FormatSequence(9), FormatSequence(10); a >= b {
		t.Errorf("FormatSequence(9) = %q sorts after FormatSequence(10) = %q", a, b)
	}
	if m := Encode(Envelope{ID: "id", Name: "E", Version: 1, Source: "s", Key: "k", Payload: []byte(`{}`)}); m.Metadata.Get(HeaderSequence) != "" {
		t.Errorf("an event without a sequence got %s", HeaderSequence)
	}
}

func TestSequenceRejected(t *testing.T) {
	for _, v := range []string{"", "0", "000", "-1", "1e3", " 1", "abc", "9223372036854775808", strings.Repeat("1", 40)} {
		m := message.NewMessage("id", []byte(`{}`))
		m.Metadata.Set(HeaderType, "E")
		m.Metadata.Set(HeaderKey, "k")
		m.Metadata.Set(HeaderSequence, v)
		if _, err := Decode(m, 1<<20); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), HeaderSequence) {
			t.Errorf("sequence %q: Decode error %v, want a malformed %s", v, err, HeaderSequence)
		}
	}
	// Plain digits from another producer are read.
	if n, err := ParseSequence("42"); n != 42 || err != nil {
		t.Errorf("ParseSequence(42) = %d, %v", n, err)
	}
	m := message.NewMessage("id", []byte(`{}`))
	m.Metadata.Set(HeaderType, "E")
	m.Metadata.Set(HeaderSequence, "1")
	if _, err := Decode(m, 1<<20); !errors.Is(err, ErrMalformed) {
		t.Errorf("a sequence without a key decoded without error: %v", err)
	}
}
