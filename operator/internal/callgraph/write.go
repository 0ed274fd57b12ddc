package callgraph

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText writes the findings for people, most severe first, each with its path, message, fields and
// fix, then a summary line; with paths, the table of every path's worst case first.
func WriteText(w io.Writer, r *Report, paths bool) error {
	var b strings.Builder
	if paths {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PATH\tCALL\tPOLICY\tATTEMPTS\tREACHING\tWAIT")
		for i, p := range r.Paths {
			for _, h := range p.Hops {
				call := h.From.String() + " → " + h.To.String()
				if h.Method != "" {
					call += " (" + h.Method + ")"
				}
				policy := h.Policy
				if policy == "" {
					policy = "(platform default)"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", i+1, call, policy, h.Attempts, count(h.Reaching), h.Wait)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		b.WriteString("\n")
	}
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%-8s %s", strings.ToUpper(f.Severity.String()), f.Kind)
		if len(f.Path) > 0 {
			b.WriteString("  " + joinServices(f.Path))
		}
		b.WriteString("\n  " + f.Message + "\n")
		if len(f.Fields) > 0 {
			fields := make([]string, len(f.Fields))
			for i, fl := range f.Fields {
				fields[i] = fl.String()
			}
			b.WriteString("  fields: " + strings.Join(fields, "; ") + "\n")
		}
		if f.Fix != "" {
			b.WriteString("  fix: " + f.Fix + "\n")
		}
	}
	b.WriteString(r.Summary() + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary is one line: the size of the graph and the findings by severity.
func (r *Report) Summary() string {
	calls := fmt.Sprintf("%d calls", len(r.Calls))
	if len(r.Calls) == 1 {
		calls = "1 call"
	}
	bySource := map[string]int{}
	for _, c := range r.Calls {
		for _, s := range c.Sources {
			bySource[s]++
		}
	}
	var sources []string
	for _, s := range []string{SourceAllow, SourceFile, SourceIstiod} {
		if n := bySource[s]; n > 0 {
			sources = append(sources, fmt.Sprintf("%s %d", s, n))
		}
	}
	if len(sources) > 0 {
		calls += " (" + strings.Join(sources, ", ") + ")"
	}
	paths := fmt.Sprintf("%d paths", len(r.Paths))
	if len(r.Paths) == 1 {
		paths = "1 path"
	}
	if len(r.Findings) == 0 {
		return fmt.Sprintf("call graph: %s, %s; no findings", calls, paths)
	}
	var counts []string
	for _, s := range []Severity{Error, Warning, Info} {
		n := 0
		for _, f := range r.Findings {
			if f.Severity == s {
				n++
			}
		}
		switch {
		case n == 1 || (n > 0 && s == Info):
			counts = append(counts, fmt.Sprintf("%d %s", n, s))
		case n > 1:
			counts = append(counts, fmt.Sprintf("%d %ss", n, s))
		}
	}
	return fmt.Sprintf("call graph: %s, %s; findings: %s", calls, paths, strings.Join(counts, ", "))
}

// WriteJSON writes the report as one JSON document: calls, paths, findings and the limit applied.
func WriteJSON(w io.Writer, r *Report) error {
	out := *r
	// Empty lists as [], so consumers need not tell null from none.
	if out.Calls == nil {
		out.Calls = []Call{}
	}
	if out.Paths == nil {
		out.Paths = []Path{}
	}
	if out.Findings == nil {
		out.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
