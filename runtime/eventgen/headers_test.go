package eventgen

import (
	"encoding/json"
	"maps"
	"testing"
)

// FuzzDecodeHeaders checks decodeHeaders against encoding/json: for any
// text, both fail, or both return the same headers; and headers written
// by json.Marshal read back unchanged.
func FuzzDecodeHeaders(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `{"a":"b"}`,
		`{"ce_traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","ce_tracestate":"rojo=00f067aa0ba902b7","baggage":"user=alice"}`,
		`{"a":"b","a":"c"}`, `{"a":"\u003cb\u003e"}`, `{"a":"x\"y"}`, `{"a":"b",}`, `{"a":"b" }`, `{ "a":"b"}`,
		`{"a":1}`, `{"a":"\xff"}`, `{"a":"tab	"}`, `{"a":"b"}x`, `{"a"`, `{"a":`, `{"a":"b"`, `{,}`, `{"":""}`, `{"é":"ü"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := decodeHeaders(s)
		var want map[string]string
		werr := json.Unmarshal([]byte(s), &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("decodeHeaders(%q) error %v, encoding/json's %v", s, err, werr)
		}
		if err == nil && (!maps.Equal(got, want) || (got == nil) != (want == nil)) {
			t.Fatalf("decodeHeaders(%q) = %q, encoding/json reads %q", s, got, want)
		}
		// s as the keys and values of headers, written as Publish writes them.
		h := map[string]string{s: s, "k": s, s + "!": "v"}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeHeaders(string(b))
		if err != nil {
			t.Fatalf("decodeHeaders(%s): %v", b, err)
		}
		var viaJSON map[string]string
		if err := json.Unmarshal(b, &viaJSON); err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(back, viaJSON) {
			t.Fatalf("decodeHeaders(%s) = %q, want %q", b, back, viaJSON)
		}
	})
}

// TestDecodeHeadersReadsPlainTextDirectly checks that the relay's common
// case, stored trace context, takes the direct path.
func TestDecodeHeadersReadsPlainTextDirectly(t *testing.T) {
	s := `{"baggage":"user=alice","ce_traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`
	h, ok := decodePlainHeaders(s)
	want := map[string]string{"baggage": "user=alice", "ce_traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if !ok || !maps.Equal(h, want) {
		t.Fatalf("decodePlainHeaders = %q, %v; want %q", h, ok, want)
	}
	for _, s := range []string{`{"a":"\u003c"}`, `{"a":"b" }`, `{"a":"\xff"}`} {
		if _, ok := decodePlainHeaders(s); ok {
			t.Errorf("decodePlainHeaders(%q) read text it must leave to encoding/json", s)
		}
	}
}
