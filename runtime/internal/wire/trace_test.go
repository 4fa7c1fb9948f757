package wire

import "testing"

// TestTraceContextPerBinding checks that the distributed-tracing
// extension's attributes travel under each binding's names, and that
// Decode keeps them in Headers for the consumer to read.
func TestTraceContextPerBinding(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, tt := range []struct {
		name          string
		b             Binding
		parent, state string
	}{
		{"nats", NATS, "ce-traceparent", "ce-tracestate"},
		{"amqp", AMQP, "cloudEvents_traceparent", "cloudEvents_tracestate"},
	} {
		for _, h := range []struct{ k, want string }{{HeaderTraceParent, tt.parent}, {HeaderTraceState, tt.state}} {
			name, _ := tt.b.Header(h.k, "v")
			if name != h.want {
				t.Errorf("%s: %s travels as %q, want %q", tt.name, h.k, name, h.want)
			}
			if k, _ := tt.b.Metadata(name, "v"); k != h.k {
				t.Errorf("%s: %q reads as %q, want %q", tt.name, name, k, h.k)
			}
		}
	}
	m := Encode(Envelope{ID: "id", Name: "E", Version: 1, Headers: map[string]string{HeaderTraceParent: tp, "baggage": "a=1"}})
	e, err := Decode(m, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if e.Headers[HeaderTraceParent] != tp || e.Headers["baggage"] != "a=1" {
		t.Errorf("decoded headers %v, want the trace context and baggage", e.Headers)
	}
}
