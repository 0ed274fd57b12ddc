package scenario

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
)

// WriteTable prints a scenario's outcomes as a before/after table: per step the calls, success rate,
// codes, latency, which instances served, what was predicted and whether it held.
func WriteTable(w io.Writer, s Scenario, outcomes []Outcome, instances []Instance) error {
	if _, err := fmt.Fprintf(w, "%s — %s\n", s.Name, s.Field); err != nil {
		return err
	}
	// Scenarios that set who calls show the caller and its identity; MEASURED then holds what the
	// servers saw.
	byCaller := slices.ContainsFunc(s.Steps, func(st Step) bool { return st.Caller != "" })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "STEP\tCALLS\tOK\tCODES\tP50\tMAX\tSERVED\tMEASURED\tPREDICTED\tHELD"
	if byCaller {
		head = "STEP\tCALLER (IDENTITY)\tCALLS\tOK\tCODES\tP50\tMAX\tSERVED\tMEASURED\tPREDICTED\tHELD"
	}
	fmt.Fprintln(tw, head)
	for _, o := range outcomes {
		held := "yes"
		if o.Err != nil {
			held = "NO: " + o.Err.Error()
		}
		step := o.Step
		if byCaller {
			step += "\t" + callerText(o.Caller, o.CallerIdentity)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", step, o.Calls, 100*o.SuccessRate(), codeCounts(o.Codes),
			round(o.Quantile(0.5)), round(o.Quantile(1)), served(o.Served, instances), cmp.Or(o.Measured, "-"), o.Expected, held)
	}
	return tw.Flush()
}

func callerText(name, identity string) string {
	name = cmp.Or(name, "mesh caller")
	if identity == "" {
		return name + " (no certificate)"
	}
	return name + " (" + identity + ")"
}

func codeCounts(m map[codes.Code]int) string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", c, m[c]))
	}
	return strings.Join(parts, " ")
}

func served(m map[string]int, instances []Instance) string {
	var parts []string
	for _, i := range instances {
		parts = append(parts, fmt.Sprintf("%s=%d", i.Name, m[i.Name]))
	}
	return strings.Join(parts, " ")
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
