package gencli

import (
	"encoding/json"
	"io"

	"github.com/eventgen/eventgen/generator"
)

// changesJSON is what check --against -json writes. Its field names are
// part of the command's interface, documented in docs/compatibility.md:
// add fields, never rename or remove one.
type changesJSON struct {
	Spec    string `json:"spec"`    // the new spec, as given with -f
	Against string `json:"against"` // the old spec, as given with --against
	// Breaking counts the changes whose severity is breaking; the exit
	// status is 1 when it is not 0.
	Breaking int          `json:"breaking"`
	Changes  []changeJSON `json:"changes"`
	// UnusedAllows lists the --allow ids that matched no breaking change.
	UnusedAllows []string `json:"unused_allows"`
}

type changeJSON struct {
	ID       string `json:"id"`       // RULE:SUBJECT, what --allow takes
	Rule     string `json:"rule"`     // like FIELD_REMOVED
	Subject  string `json:"subject"`  // like OrderPlaced.note
	Severity string `json:"severity"` // breaking, warning or compatible
	// Allowed says why a breaking change is a warning: "version" (bumped
	// with it) or "allow" (named by --allow); absent otherwise.
	Allowed string       `json:"allowed,omitempty"`
	Message string       `json:"message"`
	New     positionJSON `json:"new"` // line and column are absent for a removal
	// Old is null for an addition, which has no place in the old spec.
	Old *positionJSON `json:"old"`
}

type positionJSON struct {
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
}

// writeChangesJSON writes the changes as one indented JSON object.
func writeChangesJSON(w io.Writer, spec, against string, breaking int, changes []generator.Change, unused []string) error {
	doc := changesJSON{Spec: spec, Against: against, Breaking: breaking, Changes: []changeJSON{}, UnusedAllows: []string{}}
	doc.UnusedAllows = append(doc.UnusedAllows, unused...)
	for _, c := range changes {
		cj := changeJSON{
			ID: c.ID(), Rule: c.Rule, Subject: c.Subject, Severity: severity(c.Level), Allowed: c.Allowed,
			Message: c.At.Msg,
			New:     positionJSON{File: c.At.File, Line: c.At.Pos.Line, Column: c.At.Pos.Column},
		}
		if c.Old.Pos.IsValid() {
			cj.Old = &positionJSON{File: c.Old.File, Line: c.Old.Pos.Line, Column: c.Old.Pos.Column}
		}
		doc.Changes = append(doc.Changes, cj)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(doc)
}

func severity(l generator.ChangeLevel) string {
	switch l {
	case generator.Breaking:
		return "breaking"
	case generator.Warning:
		return "warning"
	}
	return "compatible"
}
