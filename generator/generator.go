// Package generator turns an eventgen spec into a Go package of typed
// events, publishers and handler interfaces, plus EVENTS.md.
//
// Data flows one way: [Load] or [Parse] reads the YAML spec and validates it,
// reporting every problem with its position; [Generate] renders the files in
// memory; [Write] puts them into a directory and [Check] compares them with
// one. The eventgen command is a thin layer over these four functions.
//
//	spec, err := generator.Load("events.yaml")
//	if err != nil {
//		return err // an ErrorList: one "file:line:col: message" per problem
//	}
//	files, err := generator.Generate(spec)
//	if err != nil {
//		return err
//	}
//	return generator.Write(spec.Package(), files)
package generator

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/eventgen/eventgen/generator/internal/diag"
	"github.com/eventgen/eventgen/generator/internal/emit"
	"github.com/eventgen/eventgen/generator/internal/model"
	"github.com/eventgen/eventgen/generator/internal/spec"
	"github.com/eventgen/eventgen/templates"
)

// MaxSpecSize is the largest spec file accepted, in bytes: 1 MiB.
const MaxSpecSize = spec.MaxFileSize

// RuntimeAPIVersion is the version of the runtime API that generated code
// requires, currently 1: it refers to eventgen.SupportPackageIsVersionN of
// github.com/eventgen/eventgen/runtime/eventgen, and fails to compile
// against a runtime without that constant.
const RuntimeAPIVersion = emit.RuntimeAPIVersion

// Error is one problem in a spec, with the file and position it concerns.
// Its Error method formats it as "file:line:column: message".
type Error = diag.Error

// Pos is a position in a spec file. Column is 0 when only the line is known
// (YAML syntax errors), and both are 0 for problems with the whole file.
type Pos = diag.Pos

// ErrorList is every problem found in a spec, sorted by position. Load and
// Parse return one when the spec is invalid; use errors.As to get it.
type ErrorList = diag.List

// Spec is a loaded and validated spec.
type Spec struct {
	file     string
	pkg      *model.Package
	warnings []*Error
}

// Package returns the Go package name the spec declares, which is also the
// default output directory.
func (s *Spec) Package() string { return s.pkg.Name }

// Warnings returns problems that do not stop generation, such as a type
// that no event uses, sorted by position.
func (s *Spec) Warnings() []*Error { return slices.Clone(s.warnings) }

// Load reads and validates the spec file at path. Files larger than
// [MaxSpecSize] are refused without being read in full. An invalid spec is
// reported as an [ErrorList] naming path in every message.
func Load(path string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	return Parse(path, data)
}

// Parse validates the spec in data. name is the file name used in error
// messages; its base name also appears in the header of generated files.
// An invalid spec is reported as an [ErrorList] holding every problem found.
func Parse(name string, data []byte) (*Spec, error) {
	errs, warns := diag.NewCollector(name), diag.NewCollector(name)
	f := spec.Parse(errs, data)
	if f == nil {
		return nil, errs.Err()
	}
	pkg := model.Build(errs, warns, f, name)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &Spec{file: name, pkg: pkg, warnings: warns.List()}, nil
}

// Generate renders every file of the spec's package: the Go files and
// EVENTS.md, keyed by file name. The result depends only on the spec, never
// on time, the machine or map order. An error means a bug in eventgen.
func Generate(s *Spec) (map[string][]byte, error) {
	if s == nil || s.pkg == nil {
		return nil, errors.New("generate: nil Spec")
	}
	files, err := emit.Files(s.pkg, templates.FS)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return files, nil
}
