package bench

import (
	"context"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/eventgen/eventgen/generator"
)

// generatorPhase times parsing, validating and generating a spec of
// cfg.SpecEvents events, in memory: the best of three runs (one with
// -quick).
func (e *env) generatorPhase(ctx context.Context, p *Phase) error {
	spec, err := benchSpec(e.cfg.SpecEvents)
	if err != nil {
		return err
	}
	runs := 3
	if e.cfg.Quick {
		runs = 1
	}
	best := time.Duration(0)
	files := 0
	for range runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		s, err := generator.Parse("bench.yaml", spec)
		if err != nil {
			return fmt.Errorf("parse the generated spec: %w", err)
		}
		out, err := generator.Generate(s)
		if err != nil {
			return fmt.Errorf("generate: %w", err)
		}
		if d := time.Since(t); best == 0 || d < best {
			best = d
		}
		for _, b := range out {
			files += len(b)
		}
	}
	p.add(&Figure{Name: "generator.spec", Label: fmt.Sprintf("parse, validate and generate a %d-event spec (%d KiB of YAML), best of %d", e.cfg.SpecEvents, len(spec)>>10, runs),
		Value: best.Seconds(), Unit: "s"}).below(1, "s")
	p.note("generated %d KiB of output per run", files/runs>>10)
	return nil
}

// benchSpec builds a spec of n events over 20 topics, each event with a
// key, nested and repeated types, an enum, optional fields and a map, and
// one consumer that handles all of them.
func benchSpec(n int) ([]byte, error) {
	type field = map[string]any
	topics := map[string]any{}
	for i := range 20 {
		topics[fmt.Sprintf("area%02d", i)] = map[string]any{"name": fmt.Sprintf("bench.area%02d", i), "description": "Events of area " + fmt.Sprint(i) + "."}
	}
	events := map[string]any{}
	var handles []string
	for i := range n {
		name := fmt.Sprintf("Entity%04dChanged", i)
		handles = append(handles, name)
		events[name] = map[string]any{
			"topic":       fmt.Sprintf("area%02d", i%20),
			"version":     1 + i%2,
			"description": fmt.Sprintf("Entity %d changed.", i),
			"key":         "entity_id",
			"fields": map[string]any{
				"entity_id":  "uuid",
				"state":      "State",
				"amount":     "Money",
				"items":      "[]Item",
				"comment":    field{"type": "string", "optional": true, "description": "Free text."},
				"attributes": "map[string]string",
				"changed_at": "time",
				"revision":   "int64",
			},
		}
	}
	doc := map[string]any{
		"package": "benchevents",
		"source":  "bench",
		"topics":  topics,
		"types": map[string]any{
			"Money": map[string]any{"fields": map[string]any{"amount": "int64", "currency": "string"}},
			"Item":  map[string]any{"fields": map[string]any{"sku": "string", "quantity": "int32", "price": "Money"}},
			"State": map[string]any{"enum": []string{"draft", "active", "archived"}},
		},
		"events":    events,
		"consumers": map[string]any{"indexer": map[string]any{"handles": handles}},
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	return b, nil
}
