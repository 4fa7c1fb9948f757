package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"strconv"
	"strings"
)

// StructuredContentType is the media type of a CloudEvent in structured
// mode with the JSON event format: the attributes and the data in one JSON
// object, as the message's body.
//
// eventgen publishes in binary mode only: every binding's readers take it,
// and the body stays the event's JSON, which Watermill subscribers and
// brokers' tools show as it is. It reads structured mode, so that producers
// that send it can take part.
const StructuredContentType = "application/cloudevents+json"

// isStructured reports whether metadata md is a structured-mode message's:
// its content type is StructuredContentType and it has no ce_type (a
// binary-mode message whose data is itself a CloudEvent keeps its own).
func isStructured(md map[string]string) bool {
	if _, binary := md[HeaderType]; binary {
		return false
	}
	mt, _, err := mime.ParseMediaType(md[HeaderContentType])
	return err == nil && mt == StructuredContentType
}

// structured reads a structured-mode message: it returns metadata as a
// binary-mode message of the same event would carry (attributes under ce_
// names; other headers kept) and the event's data as the payload. A body
// over maxPayload bytes is not parsed.
func structured(md map[string]string, body []byte, maxPayload int) (map[string]string, []byte, error) {
	if len(body) > maxPayload {
		return md, body, fmt.Errorf("structured-mode message of %d bytes is over the limit of %d; not parsed", len(body), maxPayload)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return md, body, fmt.Errorf("structured-mode body is not a JSON object: %w", err)
	}
	out := make(map[string]string, len(md)+len(obj))
	for k, v := range md {
		if k != HeaderContentType && !strings.HasPrefix(k, attributePrefix) {
			out[k] = v
		}
	}
	var data []byte
	dataContentType := ContentType
	if raw, ok := obj["datacontenttype"]; ok {
		if err := json.Unmarshal(raw, &dataContentType); err != nil {
			return md, body, fmt.Errorf("structured-mode datacontenttype: %w", err)
		}
	}
	for name, raw := range obj {
		switch name {
		case "data":
			data = raw
			if !isJSON(dataContentType) {
				var s string
				if err := json.Unmarshal(raw, &s); err == nil {
					data = []byte(s) // text data of another media type
				}
			}
		case "data_base64":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return md, body, fmt.Errorf("structured-mode data_base64 is not a string: %w", err)
			}
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return md, body, fmt.Errorf("structured-mode data_base64: %w", err)
			}
			data = b
		case "datacontenttype":
			out[HeaderContentType] = dataContentType
		default:
			if string(bytes.TrimSpace(raw)) == "null" {
				continue // an attribute without a value is absent
			}
			v, err := attributeString(raw)
			if err != nil {
				return md, body, fmt.Errorf("structured-mode attribute %q: %w", name, err)
			}
			out[attributePrefix+strings.ToLower(name)] = v
		}
	}
	return out, data, nil
}

// attributeString returns the canonical string of a JSON attribute value:
// a string as it is, a number or a boolean as written.
func attributeString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return "", fmt.Errorf("no value")
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case string(raw) == "true", string(raw) == "false":
		return string(raw), nil
	}
	if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
		return "", fmt.Errorf("%s is not a string, number or boolean", raw)
	}
	return string(raw), nil
}

// isJSON reports whether media type t is JSON, as the JSON event format
// decides whether data is held as JSON.
func isJSON(t string) bool {
	mt, _, err := mime.ParseMediaType(t)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}
