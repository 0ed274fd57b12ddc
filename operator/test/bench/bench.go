// Every figure of this command becomes a Row, printed as one JSON line, which bench/cmd/bench gathers into
// the table. Absolute times on a shared 2-core machine say little; the ratios to the floors (the least a
// bare client needs for the same writes) are the figures to compare across runs.

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Row is one line of the table: a figure, its floor, their ratio and the target. Its JSON is the
// contract with bench/cmd/bench, which prints the table.
type Row struct {
	Section string `json:"section"`
	Figure  string `json:"figure"`
	Value   string `json:"value"`
	Floor   string `json:"floor,omitempty"`
	Ratio   string `json:"ratio,omitempty"`
	Target  string `json:"target,omitempty"`
	// Met is "yes", "no" or empty when the figure has no target.
	Met string `json:"met,omitempty"`
}

// Emitter writes rows as JSON lines.
type Emitter struct{ w io.Writer }

// NewEmitter returns an Emitter writing to w.
func NewEmitter(w io.Writer) *Emitter { return &Emitter{w: w} }

// Emit writes one row.
func (e *Emitter) Emit(r Row) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.w, "%s\n", b)
	return err
}

// seconds formats a duration in seconds with three significant digits.
func seconds(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.0f ms", s*1000)
}

// millis formats a latency in milliseconds.
func millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms >= 100 {
		return fmt.Sprintf("%.0f ms", ms)
	}
	if ms >= 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.2f ms", ms)
}

// ratio formats value/floor.
func ratio(value, floor time.Duration) string {
	if floor <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", float64(value)/float64(floor))
}

// met renders whether a target was met.
func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
