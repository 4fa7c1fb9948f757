package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a run's result, as printed and as written with -json.
type Report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Database string    `json:"database"` // redacted
	Dialect  string    `json:"dialect"`
	Broker   string    `json:"broker"` // redacted
	Settings Settings  `json:"settings"`
	Machine  Machine   `json:"machine"`
	Phases   []*Phase  `json:"phases"`
}

// Settings are the knobs that shape the numbers.
type Settings struct {
	PayloadBytes int     `json:"payload_bytes"`
	Duration     string  `json:"duration"`
	Warmup       string  `json:"warmup"`
	Clients      []int   `json:"clients"`
	Rate         int     `json:"rate"`
	Rows         int     `json:"rows"`
	RelayRows    int     `json:"relay_rows"`
	Messages     int     `json:"messages"`
	SpecEvents   int     `json:"spec_events"`
	Quick        bool    `json:"quick"`
	Load         float64 `json:"load_average_at_start,omitempty"`

	// Oversized and OversizedBytes are set when the oversize phase runs.
	Oversized      int `json:"oversized,omitempty"`
	OversizedBytes int `json:"oversized_bytes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
}

// Phase is one of the six measurements.
type Phase struct {
	Name    string    `json:"name"`
	Figures []*Figure `json:"figures"`
	Notes   []string  `json:"notes,omitempty"`
	Error   string    `json:"error,omitempty"`
	Seconds float64   `json:"seconds"`
}

// Figure is one measured number, with its reference and target when it has
// them.
type Figure struct {
	Name  string  `json:"name"` // stable id, such as publish.c4.publishx
	Label string  `json:"label"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	P50Ms float64 `json:"p50_ms,omitempty"`
	P99Ms float64 `json:"p99_ms,omitempty"`
	// Reference names the figure this one is compared with; Ratio is
	// Value / the reference's value.
	Reference string  `json:"reference,omitempty"`
	RefValue  float64 `json:"reference_value,omitempty"`
	Ratio     float64 `json:"ratio,omitempty"`
	// Target is the goal, such as ">= 0.95" (of Ratio) or
	// "< 1 s" (of Value); Met is nil when there is no target.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

func (p *Phase) add(f *Figure) *Figure {
	p.Figures = append(p.Figures, f)
	return f
}

func (p *Phase) note(format string, args ...any) {
	p.Notes = append(p.Notes, fmt.Sprintf(format, args...))
}

// compare sets f's reference and ratio.
func (f *Figure) compare(ref *Figure) *Figure {
	if ref == nil || ref.Value == 0 {
		return f
	}
	f.Reference, f.RefValue, f.Ratio = ref.Name, ref.Value, f.Value/ref.Value
	return f
}

// atLeast sets a target on the ratio.
func (f *Figure) atLeast(min float64) *Figure {
	met := f.Ratio >= min
	f.Target, f.Met = fmt.Sprintf("ratio >= %.2f", min), &met
	return f
}

// below sets a target on the value.
func (f *Figure) below(max float64, unit string) *Figure {
	met := f.Value < max
	f.Target, f.Met = fmt.Sprintf("< %s %s", trimFloat(max), unit), &met
	return f
}

// Find returns the figure named name, or nil.
func (r *Report) Find(name string) *Figure {
	for _, p := range r.Phases {
		for _, f := range p.Figures {
			if f.Name == name {
				return f
			}
		}
	}
	return nil
}

// WriteTable prints the report as a table, one line per figure.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "eventbench  %s  database %s  broker %s  payload %d B  %s/%s %d CPUs  %s\n",
		r.Started.Format(time.RFC3339), r.Database, r.Broker, r.Settings.PayloadBytes, r.Machine.OS, r.Machine.Arch, r.Machine.CPUs, r.Machine.GoVersion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tp50/p99 ms\treference\tratio\ttarget\tmet?")
	for _, p := range r.Phases {
		fmt.Fprintf(tw, "[%s]\t\t\t\t\t\t(%.0f s)\n", p.Name, p.Seconds)
		for _, f := range p.Figures {
			lat := ""
			if f.P50Ms > 0 || f.P99Ms > 0 {
				lat = fmt.Sprintf("%s/%s", trimFloat(round(f.P50Ms, 2)), trimFloat(round(f.P99Ms, 2)))
			}
			ref, ratio := "", ""
			if f.Reference != "" {
				ref = fmt.Sprintf("%s %s", f.Reference, human(f.RefValue))
				ratio = fmt.Sprintf("%.2f", f.Ratio)
			}
			met := ""
			if f.Met != nil {
				met = map[bool]string{true: "yes", false: "NO"}[*f.Met]
			}
			fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\t%s\n", f.Name, human(f.Value), f.Unit, lat, ref, ratio, f.Target, met)
		}
		if p.Error != "" {
			fmt.Fprintf(tw, "  error: %s\t\t\t\t\t\t\n", oneLine(p.Error))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range r.Phases {
		for _, n := range p.Notes {
			fmt.Fprintf(w, "note [%s]: %s\n", p.Name, n)
		}
	}
	met, missed := 0, 0
	for _, p := range r.Phases {
		for _, f := range p.Figures {
			if f.Met != nil {
				if *f.Met {
					met++
				} else {
					missed++
				}
			}
		}
	}
	_, err := fmt.Fprintf(w, "targets: %d met, %d missed; %.0f s in all\n", met, missed, r.Seconds)
	return err
}

// WriteJSON writes the report to path, indented.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// human prints a value with three significant digits or as an integer.
func human(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return trimFloat(round(v, 3))
	}
}
