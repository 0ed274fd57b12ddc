package callgraph_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

// graphFrom turns fuzz bytes into an input: up to 8 services (some with a policy of any attempts,
// timeout and conditions, some without, some with invalid values), calls between them including
// cycles, self calls and unknown services, non-idempotent targets, and whether Services are known.
func graphFrom(data []byte) callgraph.Input {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "typo"}
	conditions := []v1alpha1.RetryCondition{"connect-failure", "5xx", "unavailable", "503", "reset-before-request", "gateway-error", "cancelled", "bogus"}
	in := callgraph.Input{Defaults: desiredstate.PlatformDefaults(), ServicesKnown: next()%2 == 0,
		Options: callgraph.Options{MaxAmplification: int64(next() % 30), MaxPaths: next() % 50}}
	for _, n := range names[:next()%9] {
		in.Services = append(in.Services, svc(n))
	}
	for range next() % 9 {
		name := names[next()%len(names)]
		var opts []pt.Option
		if t := next() % 5; t > 0 {
			opts = append(opts, pt.Timeout(fmt.Sprintf("%dms", t*400)))
		}
		if next()%3 > 0 {
			perTry := ""
			if p := next() % 4; p > 0 {
				perTry = fmt.Sprintf("%dms", p*300)
			}
			var on []v1alpha1.RetryCondition
			for range next() % 3 {
				on = append(on, conditions[next()%len(conditions)])
			}
			opts = append(opts, pt.Retries(int32(next()%13), perTry, on...))
		}
		in.Policies = append(in.Policies, pt.Policy(ns, name, opts...))
	}
	for range next() % 24 {
		c := callgraph.Call{From: svc(names[next()%len(names)]), To: svc(names[next()%len(names)]), Sources: []string{callgraph.SourceFile}}
		switch next() % 4 {
		case 0:
			c.Method = "Charge"
		case 1:
			c.Sources = []string{callgraph.SourceAllow}
		case 2:
			c.Idempotent = new(bool)
		}
		in.Graph.Calls = append(in.Graph.Calls, c)
	}
	for range next() % 3 {
		in.Graph.NonIdempotent = append(in.Graph.NonIdempotent, callgraph.Target{Service: svc(names[next()%len(names)]), Method: []string{"", "Charge"}[next()%2]})
	}
	for range next() % 3 {
		in.Graph.Services = append(in.Graph.Services, svc(names[next()%len(names)]))
	}
	return in
}

// FuzzAnalyze: whatever the graph (cycles, unknown services, invalid policies, dense diamonds), Analyze
// never panics, gives the same report twice, keeps within its path budget, and each hop's attempts
// reaching its service are its own times those of the calls before it whose retries carry.
func FuzzAnalyze(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 10, 5, 8, 3, 1, 2, 1, 2, 0, 2, 0, 1, 2, 1, 2, 3, 20, 0, 1, 1, 2, 2, 0, 3, 3, 1, 2, 1})
	f.Add([]byte{1, 3, 7, 9, 2, 0, 1, 1, 3, 3, 0, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := graphFrom(data)
		r, err := callgraph.Analyze(in)
		if err != nil {
			t.Fatalf("Analyze: %v", err)
		}
		again, err := callgraph.Analyze(graphFrom(data))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r, again); diff != "" {
			t.Fatalf("not deterministic:\n%s", diff)
		}
		maxPaths := in.Options.MaxPaths
		if maxPaths <= 0 {
			maxPaths = callgraph.DefaultMaxPaths
		}
		if len(r.Paths) > maxPaths {
			t.Fatalf("%d paths, budget %d", len(r.Paths), maxPaths)
		}
		for _, p := range r.Paths {
			carried := int64(1)
			for _, h := range p.Hops {
				if want := carried * h.Attempts; h.Reaching != want {
					t.Fatalf("path %s: hop to %s reaching %d, want %d", p, h.To, h.Reaching, want)
				}
				if h.Carries {
					carried *= h.Attempts
				}
			}
		}
		for _, f := range r.Findings {
			if f.Message == "" || f.Severity < callgraph.Info || f.Severity > callgraph.Error {
				t.Fatalf("malformed finding %+v", f)
			}
		}
	})
}
