// Package report gathers the benchmark's rows and prints them as one Markdown table, with the date, the
// machine and how loaded it was, so a table read later says under what conditions it was measured.
package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Row is one figure of the table beside its floor, their ratio and the target. Its JSON is the contract
// with operator/test/bench, which prints its rows as JSON lines.
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

// ReadRows reads JSON-line rows from r; other lines are an error naming the line.
func ReadRows(r io.Reader) ([]Row, error) {
	var rows []Row
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" {
			continue
		}
		var row Row
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			return rows, fmt.Errorf("row line %d %q: %w", n, line, err)
		}
		rows = append(rows, row)
	}
	return rows, s.Err()
}

// Machine describes where a table was measured.
type Machine struct {
	CPUs int
	// Load is /proc/loadavg's 1, 5 and 15 minute averages, at the start and at the end of the run.
	LoadStart, LoadEnd string
}

// ThisMachine returns the CPU count and the current load averages (LoadEnd is filled by the caller).
func ThisMachine() Machine {
	return Machine{CPUs: runtime.NumCPU(), LoadStart: LoadAverage()}
}

// LoadAverage returns the 1, 5 and 15 minute load averages, or "unknown".
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Markdown writes the table with a heading line naming the date, the machine and the run's duration.
func Markdown(w io.Writer, rows []Row, at time.Time, m Machine, took time.Duration) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on %d cores (load average %s at the start, %s at the end); `make bench` took %s.\n\n",
		at.UTC().Format("2006-01-02 15:04 MST"), m.CPUs, m.LoadStart, m.LoadEnd, took.Round(time.Second))
	b.WriteString("| Section | Figure | Value | Floor | Ratio | Target | Met |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		cells := []string{r.Section, r.Figure, r.Value, dash(r.Floor), dash(r.Ratio), dash(r.Target), dash(r.Met)}
		for i, c := range cells {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
