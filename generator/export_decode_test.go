package generator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"

	shopevents "github.com/eventgen/eventgen/examples/generated"
	"github.com/eventgen/eventgen/generator"
	anchors "github.com/eventgen/eventgen/generator/testdata/ok_anchors/out"
	hostile "github.com/eventgen/eventgen/generator/testdata/ok_hostile_text/out"
	keys "github.com/eventgen/eventgen/generator/testdata/ok_keys/out"
	minimal "github.com/eventgen/eventgen/generator/testdata/ok_minimal/out"
	naming "github.com/eventgen/eventgen/generator/testdata/ok_naming/out"
	typesevents "github.com/eventgen/eventgen/generator/testdata/ok_types/out"
	warnings "github.com/eventgen/eventgen/generator/testdata/ok_warnings/out"
)

// goEvent is a generated event type, seen as the consumer sees it.
type goEvent struct {
	name string
	// decode does what eventgen.Handle does with a payload before the
	// handler runs: json.Unmarshal into the struct, then Validate.
	decode func([]byte) error
	// sample returns a value with every field set, pointers included.
	sample func() any
}

func eventOf[E interface {
	Validate() error
	EventName() string
}]() goEvent {
	var zero E
	return goEvent{
		name: zero.EventName(),
		decode: func(b []byte) error {
			var e E
			if err := json.Unmarshal(b, &e); err != nil {
				return err
			}
			return e.Validate()
		},
		sample: func() any {
			var e E
			fill(reflect.ValueOf(&e).Elem(), 0)
			return e
		},
	}
}

// enumValues holds a valid value of each enum of the packages under test,
// by Go type name.
var enumValues = map[string]string{
	"OrderStatus": "paid", "PaymentMethod": "wallet", "Color": "green",
	"Mode": "in progress", "Region": "eu", "RequestKind": "get", "Child": "a",
}

// fill sets every field of v to a value that validates: lists of two
// elements and maps of one entry, down to a depth of 2 for recursive types.
func fill(v reflect.Value, depth int) {
	switch v.Type() {
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2026, 12, 3, 9, 0, 0, 123456789, time.UTC)))
		return
	case reflect.TypeFor[uuid.UUID]():
		v.Set(reflect.ValueOf(uuid.MustParse("f47ac10b-58cc-4372-a567-0e02b2c3d479")))
		return
	case reflect.TypeFor[json.RawMessage]():
		v.Set(reflect.ValueOf(json.RawMessage(`{"a":[1,"x",null]}`)))
		return
	case reflect.TypeFor[[]byte]():
		v.SetBytes([]byte("hello"))
		return
	}
	if value, ok := enumValues[v.Type().Name()]; ok {
		v.SetString(value)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), depth)
		}
	case reflect.Pointer:
		if depth < 2 {
			v.Set(reflect.New(v.Type().Elem()))
			fill(v.Elem(), depth+1)
		}
	case reflect.Slice:
		if depth < 2 {
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
			fill(v.Index(0), depth+1)
			fill(v.Index(1), depth+1)
		}
	case reflect.Map:
		if depth < 2 {
			v.Set(reflect.MakeMap(v.Type()))
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e, depth+1)
			v.SetMapIndex(reflect.ValueOf("k1"), e)
		}
	case reflect.String:
		v.SetString("text")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	default:
		panic("fill: unexpected kind " + v.Kind().String())
	}
}

// replacements are the JSON values put in place of every value of a
// sample payload, to compare what the Go consumer and the schemas reject:
// each kind of JSON value, numbers at the limits of every Go number type,
// every spelling of UUIDs and times, base64 and enum values.
var replacements = []string{
	`null`, `""`, `"x"`, `true`, `{}`, `[]`, `[null]`, `["x"]`, `[1,2]`, `[256]`, `{"k":null}`, `{"k":"x"}`,
	`0`, `1`, `-1`, `1.5`, `255`,
	`2147483647`, `2147483648`, `-2147483648`, `-2147483649`,
	`4294967295`, `4294967296`,
	`9223372036854775807`, `9223372036854775808`, `-9223372036854775808`, `-9223372036854775809`,
	`18446744073709551615`, `18446744073709551616`,
	`3.4028234663852886e38`, `340282356779733661637539395458142568447`, `340282356779733661637539395458142568448`, `-3.5e38`,
	`"f47ac10b-58cc-4372-a567-0e02b2c3d479"`, `"F47AC10B-58CC-4372-A567-0E02B2C3D479"`, `"urn:UUID:f47ac10b-58cc-4372-a567-0e02b2c3d479"`,
	`"{f47ac10b-58cc-4372-a567-0e02b2c3d479}"`, `"f47ac10b58cc4372a5670e02b2c3d479"`, `"f47ac10b-58cc-4372-a567-0e02b2c3d47"`, `"g47ac10b-58cc-4372-a567-0e02b2c3d479"`,
	`"00000000-0000-0000-0000-000000000000"`, `"{00000000-0000-0000-0000-000000000000}"`,
	`"2026-12-03T09:00:00Z"`, `"2026-12-03T09:00:00.123456789+01:00"`, `"2026-12-03T09:00:00,5Z"`, `"2026-12-03t09:00:00z"`,
	`"2026-12-03T9:00:00Z"`, `"2026-12-03T09:00:00+24:00"`, `"2026-12-03T09:00:00-23:60"`, `"2026-12-03T09:00:00+25:00"`,
	`"2026-12-03T24:00:00Z"`, `"2026-12-03T09:00:60Z"`, `"2026-12-03T09:00Z"`, `"2026-12-03 09:00:00Z"`, `"0001-01-01T00:00:00Z"`, `"0001-01-01T00:00:00.000+00:00"`,
	`"aGVsbG8="`, `"aGVsbG8"`, `"aGVs\nbG8="`, `"aGVsbG8=="`, `"a===="`,
	`"paid"`, `"wallet"`, `"green"`, `"in progress"`, `"eu"`, `"get"`, `"a"`, `"PAID"`,
	// Go rejects these and the schemas cannot say so; see knownLenient.
	`"2026-02-30T00:00:00Z"`, `1e400`, `1.0`,
}

// knownLenient are the replacements that the Go consumer rejects and the
// schemas accept, as docs/export.md says: a day past the end of its month,
// a number beyond float64, and an integer written with a fraction.
var knownLenient = []string{`"2026-02-30T00:00:00Z"`, `1e400`, `1.0`}

// formatStricter are the replacements that the Go consumer accepts and a
// validator that asserts format: uuid and format: date-time rejects, as
// draft-07 validators of AsyncAPI payloads do: UUIDs in braces, as a URN or
// without hyphens; times with a one-digit hour, a comma before the
// fraction, or an offset past 23:59. eventgen's producers never send them.
var formatStricter = []string{
	`"urn:UUID:f47ac10b-58cc-4372-a567-0e02b2c3d479"`, `"{f47ac10b-58cc-4372-a567-0e02b2c3d479}"`, `"f47ac10b58cc4372a5670e02b2c3d479"`,
	`"{00000000-0000-0000-0000-000000000000}"`, `"2026-12-03T9:00:00Z"`, `"2026-12-03T09:00:00,5Z"`, `"2026-12-03T09:00:00+24:00"`, `"2026-12-03T09:00:00-23:60"`,
}

// TestJSONSchemaMatchesGoDecoder checks the exported JSON Schemas, and the
// AsyncAPI payload schemas, against the generated Go code: a generated
// value with every field set, marshalled, must validate; then every value
// in it, at every depth, is deleted or replaced by each of replacements,
// and each schema must accept every payload that the Go consumer accepts
// and reject every payload it rejects, except for knownLenient.
func TestJSONSchemaMatchesGoDecoder(t *testing.T) {
	golden := func(name string) string { return filepath.Join("testdata", name, "events.yaml") }
	pkgs := []struct {
		spec   string
		events []goEvent
	}{
		{filepath.Join("..", "examples", "events.yaml"), []goEvent{
			eventOf[shopevents.OrderPlaced](), eventOf[shopevents.OrderCancelled](), eventOf[shopevents.PaymentCaptured](),
			eventOf[shopevents.InventoryStockReserved](), eventOf[shopevents.OrderShipped](), eventOf[shopevents.LegacyOrderUpdated](),
		}},
		{golden("ok_anchors"), []goEvent{eventOf[anchors.OrderOpened](), eventOf[anchors.OrderClosed]()}},
		{golden("ok_hostile_text"), []goEvent{eventOf[hostile.Evil]()}},
		{golden("ok_keys"), []goEvent{
			eventOf[keys.ByString](), eventOf[keys.ByInt](), eventOf[keys.ByInt32](), eventOf[keys.ByInt64](), eventOf[keys.ByUint32](),
			eventOf[keys.ByUint64](), eventOf[keys.ByUUID](), eventOf[keys.ByEnum](), eventOf[keys.ByRenamed](),
		}},
		{golden("ok_minimal"), []goEvent{eventOf[minimal.Ping]()}},
		{golden("ok_naming"), []goEvent{eventOf[naming.UserSignedUp](), eventOf[naming.UserDeletedV2](), eventOf[naming.APICalled]()}},
		{golden("ok_types"), []goEvent{eventOf[typesevents.EverythingHappened]()}},
		{golden("ok_warnings"), []goEvent{eventOf[warnings.E]()}},
	}
	// Every valid golden spec is here, so a new one must be added.
	var specs []string
	for _, p := range pkgs {
		specs = append(specs, p.spec)
	}
	if want := exportSpecs(t); !slices.Equal(specs, want) {
		t.Fatalf("the test covers %q, want every valid spec %q", specs, want)
	}
	for _, pkg := range pkgs {
		schemas := jsonSchemas(t, pkg.spec)
		payloads := asyncAPIPayloads(t, pkg.spec)
		if len(schemas) != len(pkg.events) {
			t.Fatalf("%s: %d schemas for %d events", pkg.spec, len(schemas), len(pkg.events))
		}
		for _, ev := range pkg.events {
			t.Run(ev.name, func(t *testing.T) {
				sample, err := json.Marshal(ev.sample())
				if err != nil {
					t.Fatal(err)
				}
				if err := ev.decode(sample); err != nil {
					t.Fatalf("the Go consumer rejects the sample %s: %v", sample, err)
				}
				var accepted, rejected, lenient, stricter int
				for _, p := range mutations(t, sample) {
					goErr := ev.decode(p.payload)
					inst := unmarshal(t, p.payload)
					for _, sch := range []struct {
						what string
						s    *jsonschema.Schema
					}{{"JSON Schema", schemas[ev.name]}, {"AsyncAPI payload", payloads[ev.name]}} {
						schemaErr := sch.s.Validate(inst)
						switch {
						case goErr == nil && schemaErr != nil && sch.what == "AsyncAPI payload" && slices.Contains(formatStricter, p.value):
							stricter++
						case goErr == nil && schemaErr != nil:
							t.Errorf("%s: the Go consumer accepts %s and the %s rejects it: %v", p.what, p.payload, sch.what, schemaErr)
						case goErr != nil && schemaErr == nil && !slices.Contains(knownLenient, p.value):
							t.Errorf("%s: the Go consumer rejects %s (%v) and the %s accepts it", p.what, p.payload, goErr, sch.what)
						}
					}
					switch {
					case goErr == nil:
						accepted++
					case slices.Contains(knownLenient, p.value):
						lenient++
					default:
						rejected++
					}
				}
				t.Logf("%d payloads: %d accepted by Go and the schemas, %d rejected by all, %d rejected by Go only (known); %d accepted by Go and rejected by AsyncAPI's format assertions (known)",
					accepted+rejected+lenient, accepted, rejected, lenient, stricter)
			})
		}
	}
}

// asyncAPIMessages exports the spec's AsyncAPI document and returns a
// function that compiles part ("payload" or "headers") of a message as
// JSON Schema draft-07, on which AsyncAPI's Schema Object is built, and the
// document's messages with their header names.
func asyncAPIMessages(t *testing.T, path string) (compile func(message, part string) *jsonschema.Schema, headers map[string][]string) {
	t.Helper()
	doc := exportAsyncAPI(t, path, generator.AsyncAPIOptions{JSON: true})
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	if err := c.AddResource("mem:///asyncapi.json", unmarshal(t, doc)); err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Components struct {
			Messages map[string]struct {
				Headers struct{ Properties map[string]any }
			}
		}
	}
	if err := json.Unmarshal(doc, &parsed); err != nil {
		t.Fatal(err)
	}
	headers = make(map[string][]string)
	for name, m := range parsed.Components.Messages {
		headers[name] = slices.Sorted(maps.Keys(m.Headers.Properties))
	}
	return func(message, part string) *jsonschema.Schema {
		t.Helper()
		sch, err := c.Compile("mem:///asyncapi.json#/components/messages/" + message + "/" + part)
		if err != nil {
			t.Fatalf("%s of %s: %v", part, message, err)
		}
		return sch
	}, headers
}

// asyncAPIPayloads compiles the payload schema of every message of the
// spec's AsyncAPI document, keyed by event wire name.
func asyncAPIPayloads(t *testing.T, path string) map[string]*jsonschema.Schema {
	t.Helper()
	compile, messages := asyncAPIMessages(t, path)
	out := make(map[string]*jsonschema.Schema)
	for name := range messages {
		out[name] = compile(name, "payload")
	}
	return out
}

type mutation struct {
	what    string // where and what changed
	value   string // the replacement, or "" for a deletion
	payload []byte
}

// mutations returns the sample and its variants: every value at every
// path deleted (object members) or replaced by each of replacements. In a
// list, only the first element is walked into: fill makes the others
// alike.
func mutations(t *testing.T, sample []byte) []mutation {
	t.Helper()
	root := decodeJSON(t, sample)
	out := []mutation{{what: "the sample", payload: sample}}
	var walk func(path []any)
	walk = func(path []any) {
		v := at(root, path)
		if len(path) > 0 {
			if _, ok := path[len(path)-1].(string); ok {
				out = append(out, mutation{what: fmt.Sprintf("%v deleted", path), payload: encode(t, with(root, path, nil, true))})
			}
		}
		for _, r := range replacements {
			out = append(out, mutation{what: fmt.Sprintf("%v = %s", path, r), value: r, payload: encode(t, with(root, path, json.RawMessage(r), false))})
		}
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				walk(append(slices.Clone(path), k))
			}
		case []any:
			if len(v) > 0 { // the other elements are filled alike
				walk(append(slices.Clone(path), 0))
			}
		}
	}
	walk(nil)
	return out
}

func decodeJSON(t *testing.T, data []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func at(v any, path []any) any {
	for _, p := range path {
		switch p := p.(type) {
		case string:
			v = v.(map[string]any)[p]
		case int:
			v = v.([]any)[p]
		}
	}
	return v
}

// with returns a copy of v with the value at path replaced by r, or
// deleted.
func with(v any, path []any, r any, del bool) any {
	if len(path) == 0 {
		return r
	}
	switch c := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(c))
		for k, e := range c {
			m[k] = e
		}
		k := path[0].(string)
		if del && len(path) == 1 {
			delete(m, k)
		} else {
			m[k] = with(c[k], path[1:], r, del)
		}
		return m
	case []any:
		s := slices.Clone(c)
		i := path[0].(int)
		s[i] = with(c[i], path[1:], r, del)
		return s
	}
	panic("with: path " + strconv.Quote(fmt.Sprint(path)) + " goes through a scalar")
}

// TestJSONSchemaInvalidPayloads checks hand-written payloads that the Go
// consumer rejects against the schema of OrderPlaced.
func TestJSONSchemaInvalidPayloads(t *testing.T) {
	sch := jsonSchemas(t, filepath.Join("..", "examples", "events.yaml"))["OrderPlaced"]
	valid := `{"order_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479","customer_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479",` +
		`"status":"paid","lines":[{"sku":"A","quantity":2,"unit_price":{"amount":1050,"currency":"EUR"}}],` +
		`"total":{"amount":2100,"currency":"EUR"},"shipping_address":{"name":"n","street":"s","city":"c","postal_code":"p","country_code":"FR"},` +
		`"labels":{"gift":"yes"},"placed_at":"2026-12-03T09:00:00Z"}`
	ev := eventOf[shopevents.OrderPlaced]()
	if err := ev.decode([]byte(valid)); err != nil {
		t.Fatalf("Go rejects the valid payload: %v", err)
	}
	if err := sch.Validate(unmarshal(t, []byte(valid))); err != nil {
		t.Fatalf("the schema rejects the valid payload: %v", err)
	}
	for _, tt := range []struct{ name, old, new string }{
		{"unknown enum value", `"status":"paid"`, `"status":"lost"`},
		{"missing required uuid", `"order_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479",`, ``},
		{"nil uuid", `"order_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479"`, `"order_id":"00000000-0000-0000-0000-000000000000"`},
		{"empty required string in a list", `"sku":"A"`, `"sku":""`},
		{"int32 overflow", `"quantity":2`, `"quantity":2147483648`},
		{"number as string", `"amount":1050`, `"amount":"1050"`},
		{"time without zone", `"2026-12-03T09:00:00Z"`, `"2026-12-03T09:00:00"`},
		{"null struct with required fields", `"total":{"amount":2100,"currency":"EUR"}`, `"total":null`},
		{"list of strings as a map", `"labels":{"gift":"yes"}`, `"labels":["gift"]`},
	} {
		p := []byte(replaceOnce(t, valid, tt.old, tt.new))
		if err := ev.decode(p); err == nil {
			t.Errorf("%s: Go accepts %s", tt.name, p)
		}
		if err := sch.Validate(unmarshal(t, p)); err == nil {
			t.Errorf("%s: the schema accepts %s", tt.name, p)
		}
	}
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	i := bytes.Index([]byte(s), []byte(old))
	if i < 0 {
		t.Fatalf("%q not in %s", old, s)
	}
	return s[:i] + new + s[i+len(old):]
}
