package amqp

import (
	"encoding/base64"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rabbitmq/amqp091-go"

	"github.com/eventgen/eventgen/runtime/internal/wire"
)

// uuidHeader carries the Watermill UUID, as watermill-amqp sends it.
const uuidHeader = "_watermill_message_uuid"

// marshaler maps Watermill messages onto AMQP 0-9-1 messages by the AMQP
// binding of CloudEvents, as RabbitMQ maps AMQP 1.0 application properties
// onto headers: each attribute a cloudEvents_ header, the content type the
// content-type property, and other metadata under its own name. Messages are
// persistent and carry the Watermill UUID as watermill-amqp does, and as
// their message-id property.
type marshaler struct{}

func (marshaler) Marshal(m *message.Message) (amqp091.Publishing, error) {
	h := make(amqp091.Table, len(m.Metadata)+1)
	var contentType string
	for k, v := range m.Metadata {
		if k == wire.HeaderContentType {
			contentType = v
			continue
		}
		name, value := wire.AMQP.Header(k, v)
		h[name] = value
	}
	h[uuidHeader] = m.UUID
	return amqp091.Publishing{
		Headers:      h,
		ContentType:  contentType,
		MessageId:    m.UUID,
		DeliveryMode: amqp091.Persistent,
		Body:         m.Payload,
	}, nil
}

// Unmarshal reads a message that Marshal, watermill-amqp, an earlier
// eventgen (ce_ headers) or any producer of the AMQP binding wrote, with
// cloudEvents_ or cloudEvents: names. Values of AMQP types other than
// strings become their CloudEvents canonical strings, as the binding asks a
// receiver to accept; nested tables and arrays, which no attribute has, are
// left out. It never fails.
func (marshaler) Unmarshal(d amqp091.Delivery) (*message.Message, error) {
	id, _ := d.Headers[uuidHeader].(string)
	if id == "" {
		id = d.MessageId
	}
	m := message.NewMessage(id, d.Body)
	m.Metadata = make(message.Metadata, len(d.Headers)+1)
	for name, value := range d.Headers {
		if name == uuidHeader {
			continue
		}
		s, ok := canonical(value)
		if !ok {
			continue
		}
		k, v := wire.AMQP.Metadata(name, s)
		m.Metadata[k] = v
	}
	if d.ContentType != "" {
		m.Metadata[wire.HeaderContentType] = d.ContentType
	}
	return m, nil
}

// canonical returns the CloudEvents canonical string of an AMQP header
// value, or false for a value no attribute can have.
func canonical(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return base64.StdEncoding.EncodeToString(v), true
	case bool:
		return strconv.FormatBool(v), true
	case int8:
		return strconv.FormatInt(int64(v), 10), true
	case int16:
		return strconv.FormatInt(int64(v), 10), true
	case int32:
		return strconv.FormatInt(int64(v), 10), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case int:
		return strconv.Itoa(v), true
	case uint8:
		return strconv.FormatUint(uint64(v), 10), true
	case uint16:
		return strconv.FormatUint(uint64(v), 10), true
	case uint32:
		return strconv.FormatUint(uint64(v), 10), true
	case uint64:
		return strconv.FormatUint(v, 10), true
	case float32:
		return strconv.FormatFloat(float64(v), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), true
	}
	return "", false
}
