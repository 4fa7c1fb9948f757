package shopevents_test

import (
	"bytes"
	"encoding/json"
	"testing"

	shopevents "github.com/eventgen/eventgen/examples/generated"
)

// FuzzDecodeEvents feeds arbitrary payloads to the decoders of every
// generated event, as a consumer does with what arrives from a broker. A
// decoder must never panic; Validate must never panic on what it decoded;
// and an event that decodes and validates (what a handler receives) must
// re-encode to JSON that decodes and encodes to the same bytes again.
func FuzzDecodeEvents(f *testing.F) {
	valid, err := json.Marshal(validOrder())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"status":"teleported"}`))
	f.Add([]byte(`{"order_id":"not-a-uuid","lines":[{"unit_price":{"amount":"1"}}]}`))
	f.Add([]byte(`{"method":"card","amount":{"amount":9223372036854775807},"provider_data":{"x":[1,2,3]}}`))
	f.Add([]byte(`{"reservation_ttl":-1,"warehouse_quantities":{"":-9}}`))
	f.Add([]byte(`{"refund":null,"cancelled_at":"2026-13-45T99:99:99Z"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		decodeRoundTrip[shopevents.OrderPlaced](t, payload)
		decodeRoundTrip[shopevents.OrderCancelled](t, payload)
		decodeRoundTrip[shopevents.PaymentCaptured](t, payload)
		decodeRoundTrip[shopevents.InventoryStockReserved](t, payload)
		decodeRoundTrip[shopevents.OrderShipped](t, payload)
		decodeRoundTrip[shopevents.LegacyOrderUpdated](t, payload)
	})
}

func decodeRoundTrip[E shopevents.Event](t *testing.T, payload []byte) {
	var e E
	if json.Unmarshal(payload, &e) != nil {
		return
	}
	if e.Validate() != nil {
		return
	}
	first, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("%s: decoded %q but cannot encode it: %v", e.EventName(), payload, err)
	}
	var again E
	if err := json.Unmarshal(first, &again); err != nil {
		t.Fatalf("%s: cannot decode its own encoding %s: %v", e.EventName(), first, err)
	}
	second, err := json.Marshal(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatalf("%s: encoding not stable:\n%s\n%s", e.EventName(), first, second)
	}
}
