package callgraph_test

import (
	"fmt"
	"testing"

	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
)

// BenchmarkAnalyze: 300 services in 10 layers, each calling 3 of the next layer, every one with a
// retrying policy: more paths than the walk takes, so this is the cost of a truncated analysis, the
// worst the operator runs on a policy change.
func BenchmarkAnalyze(b *testing.B) {
	in := callgraph.Input{Defaults: desiredstate.PlatformDefaults()}
	name := func(layer, i int) string { return fmt.Sprintf("s%d-%d", layer, i) }
	for layer := range 10 {
		for i := range 30 {
			in.Policies = append(in.Policies, retrying(name(layer, i), 2, "unavailable"))
			if layer == 9 {
				continue
			}
			for k := range 3 {
				in.Graph.Calls = append(in.Graph.Calls, callgraph.Call{From: svc(name(layer, i)), To: svc(name(layer+1, (i+k*7)%30)), Sources: []string{callgraph.SourceAllow}})
			}
		}
	}
	in.Graph.NonIdempotent = []callgraph.Target{{Service: svc(name(9, 0))}}
	var r *callgraph.Report
	for b.Loop() {
		var err error
		if r, err = callgraph.Analyze(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(r.Findings)), "findings")
}
