package natsjs

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// fakeMsg is a JetStream message with headers and data only.
type fakeMsg struct {
	jetstream.Msg
	h    nats.Header
	data []byte
}

func (m fakeMsg) Headers() nats.Header { return m.h }
func (m fakeMsg) Data() []byte         { return m.data }

// TestUnmarshalContentModes checks how unmarshal tells structured mode,
// which the NATS binding writes with no header at all, from binary mode
// and from messages that are not CloudEvents.
func TestUnmarshalContentModes(t *testing.T) {
	event := []byte(` {"specversion":"1.0","id":"1","type":"OrderPlaced","source":"s","data":{}}`)
	for _, tt := range []struct {
		name        string
		h           nats.Header
		data        []byte
		contentType string // "" for none
	}{
		{"structured, no header", nats.Header{}, event, wire.StructuredContentType},
		{"structured, only the Watermill UUID", nats.Header{"_watermill_message_uuid": {"u"}}, event, wire.StructuredContentType},
		{"structured, its content type given", nats.Header{"content-type": {"application/cloudevents+json; charset=utf-8"}}, event, "application/cloudevents+json; charset=utf-8"},
		{"binary", nats.Header{"ce-specversion": {"1.0"}, "ce-type": {"OrderPlaced"}, "ce-id": {"1"}}, []byte(`{"order_id":"1"}`), ""},
		{"binary, content type given", nats.Header{"ce-type": {"OrderPlaced"}, "ce-datacontenttype": {"application/json"}}, []byte(`{}`), "application/json"},
		{"eventgen before the binding", nats.Header{"ce_specversion": {"1.0"}, "ce_type": {"OrderPlaced"}}, []byte(`{}`), ""},
		{"not a CloudEvent, not JSON", nats.Header{}, []byte("plain bytes"), ""},
		{"not a CloudEvent, a JSON array", nats.Header{}, []byte(`[1]`), ""},
		{"empty", nats.Header{}, nil, ""},
	} {
		m, err := unmarshal(fakeMsg{h: tt.h, data: tt.data})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := m.Metadata.Get(wire.HeaderContentType); got != tt.contentType {
			t.Errorf("%s: content type %q, want %q", tt.name, got, tt.contentType)
		}
	}
}
