package generator

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/eventgen/eventgen/generator/internal/export"
)

// AsyncAPIOptions are the choices of [AsyncAPI].
type AsyncAPIOptions struct {
	// JSON writes the document as JSON instead of YAML.
	JSON bool
	// Version is the document's info.version, the version of the API it
	// describes; empty means "0.0.0".
	Version string
}

// AsyncAPI returns the AsyncAPI 3.0.0 document of the spec: a channel per
// topic, a message per event with its payload as JSON Schema and its
// CloudEvents headers, a send operation per topic for the producer and a
// receive operation per consumer group and topic. The output depends only
// on the spec and opts. docs/export.md describes it.
func AsyncAPI(s *Spec, opts AsyncAPIOptions) ([]byte, error) {
	if s == nil || s.pkg == nil {
		return nil, errors.New("asyncapi: nil Spec")
	}
	out, err := export.AsyncAPI(s.pkg, export.AsyncAPIOptions{JSON: opts.JSON, Version: opts.Version})
	if err != nil {
		return nil, fmt.Errorf("asyncapi: %s: %w", s.file, err)
	}
	return out, nil
}

// JSONSchemas returns a JSON Schema (draft 2020-12) of the payload of every
// event, keyed by file name: the event's wire name followed by
// ".schema.json". Each schema stands alone, with the shared types it uses
// in its $defs, and accepts what the generated Go consumer accepts
// (docs/export.md). Write them with [WriteJSONSchemas].
func JSONSchemas(s *Spec) (map[string][]byte, error) {
	if s == nil || s.pkg == nil {
		return nil, errors.New("jsonschema: nil Spec")
	}
	files, err := export.JSONSchemas(s.pkg)
	if err != nil {
		return nil, fmt.Errorf("jsonschema: %s: %w", s.file, err)
	}
	return files, nil
}

// WriteJSONSchemas makes dir hold exactly the JSON Schemas in files, as
// [Write] does for the generated package: schema files that eventgen
// exported before and the spec no longer has are removed, and any other
// file, including a generated Go package in the same directory, is left
// alone.
func WriteJSONSchemas(dir string, files map[string][]byte) error {
	return write(dir, files, isJSONSchema)
}

// WriteAsyncAPI writes an AsyncAPI document to the file at path, atomically.
// It refuses to overwrite a file that is not an AsyncAPI document exported
// by eventgen, so that a mistyped path cannot replace the spec.
func WriteAsyncAPI(path string, doc []byte) error {
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("write %s: %w", path, err)
	case !bytes.HasPrefix(old, []byte(export.YAMLHeader)) && !bytes.HasPrefix(old, []byte(export.JSONHeader)):
		return fmt.Errorf("refusing to overwrite %s: it exists and is not an AsyncAPI document exported by eventgen", path)
	case bytes.Equal(old, doc):
		return nil
	}
	t, err := writeTemp(filepath.Dir(path), doc)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(t, path); err != nil {
		os.Remove(t)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
