// Package templates holds the text/template files from which eventgen
// renders its non-Go outputs, such as EVENTS.md. Go code is built with
// jennifer instead, so that it is always syntactically valid.
//
// Templates read a validated model; they never derive names. Every piece of
// spec text they print passes through an escaping function (code, cell or
// text), so descriptions cannot inject markup.
package templates

import "embed"

// FS holds every *.tmpl file of this directory.
//
//go:embed *.tmpl
var FS embed.FS
