package callgraph_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

const ns = "shop"

func svc(name string) callgraph.Service { return callgraph.Service{Namespace: ns, Name: name} }

// calls builds file-sourced calls from "from>to" or "from>to#Method" strings.
func calls(edges ...string) []callgraph.Call {
	var out []callgraph.Call
	for _, e := range edges {
		from, to, _ := strings.Cut(e, ">")
		to, method, _ := strings.Cut(to, "#")
		out = append(out, callgraph.Call{From: svc(from), To: svc(to), Method: method, Sources: []string{callgraph.SourceFile}})
	}
	return out
}

func services(names ...string) []callgraph.Service {
	var out []callgraph.Service
	for _, n := range names {
		out = append(out, svc(n))
	}
	return out
}

// retrying is a policy with attempts retries on retryOn (default: unavailable) and no timeout.
func retrying(name string, attempts int32, retryOn ...v1alpha1.RetryCondition) *v1alpha1.TrafficPolicy {
	if len(retryOn) == 0 && attempts > 0 {
		retryOn = []v1alpha1.RetryCondition{"unavailable"}
	}
	return pt.Policy(ns, name, pt.Retries(attempts, "", retryOn...))
}

func analyze(t *testing.T, in callgraph.Input) *callgraph.Report {
	t.Helper()
	if in.Defaults.Retries.Attempts == nil {
		in.Defaults = desiredstate.PlatformDefaults()
	}
	r, err := callgraph.Analyze(in)
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	return r
}

// brief is a finding as a test compares it: severity, kind, path and the policies it names.
func brief(r *callgraph.Report) []string {
	var out []string
	for _, f := range r.Findings {
		var path []string
		for _, s := range f.Path {
			path = append(path, s.Name)
		}
		out = append(out, f.Severity.String()+" "+string(f.Kind)+" "+strings.Join(path, ">")+" "+strings.Join(f.Policies, ","))
	}
	return out
}

func TestFindings(t *testing.T) {
	tests := []struct {
		name string
		in   callgraph.Input
		want []string
	}{
		{
			name: "chain of three retrying layers amplifies 27 times",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("orders", 2, "reset"), retrying("catalog", 2, "reset"), retrying("payments", 2, "reset")},
				Graph:    callgraph.Graph{Calls: calls("gateway>orders", "orders>catalog", "catalog>payments"), Services: services("gateway")},
			},
			want: []string{"warning Amplification gateway>orders>catalog>payments shop/catalog,shop/orders,shop/payments"},
		},
		{
			name: "retries only on connection failures repeat nothing below",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("orders", 4, "connect-failure"), retrying("catalog", 4, "connect-failure", "refused-stream"), retrying("payments", 4, "reset-before-request")},
				Graph:    callgraph.Graph{Calls: calls("gateway>orders", "orders>catalog", "catalog>payments"), Services: services("gateway")},
			},
		},
		{
			name: "gRPC conditions never fire on a plain HTTP Service",
			in: callgraph.Input{
				Policies:  []*v1alpha1.TrafficPolicy{retrying("gateway", 4, "connect-failure", "unavailable"), retrying("orders", 4, "5xx")},
				PlainHTTP: services("gateway"),
				Graph:     callgraph.Graph{Calls: calls("loadgen>gateway", "gateway>orders"), Services: services("loadgen")},
				Options:   callgraph.Options{MaxAmplification: 5},
			},
		},
		{
			name: "two layers stay under the default limit",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("orders", 2, "reset"), retrying("payments", 2, "reset")},
				Graph:    callgraph.Graph{Calls: calls("gateway>orders", "orders>payments"), Services: services("gateway")},
			},
		},
		{
			name: "a lower limit reports them",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("orders", 2, "reset"), retrying("payments", 2, "reset")},
				Graph:    callgraph.Graph{Calls: calls("gateway>orders", "orders>payments"), Services: services("gateway")},
				Options:  callgraph.Options{MaxAmplification: 5},
			},
			want: []string{"warning Amplification gateway>orders>payments shop/orders,shop/payments"},
		},
		{
			name: "diamond: the worse branch counts",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("b", 3, "reset"), retrying("c", 1, "reset"), retrying("d", 2, "reset")},
				Graph:    callgraph.Graph{Calls: calls("a>b", "a>c", "b>d", "c>d"), Services: services("a")},
			},
			want: []string{"warning Amplification a>b>d shop/b,shop/d"},
		},
		{
			name: "cycle: reported once, analysis ends",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("a", 1, "reset"), retrying("b", 0)},
				Graph:    callgraph.Graph{Calls: calls("entry>a", "a>b", "b>a"), Services: services("entry")},
			},
			want: []string{"warning Cycle a>b>a shop/a"},
		},
		{
			name: "cycle nobody enters",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("a", 0), retrying("b", 0), retrying("c", 0)},
				Graph:    callgraph.Graph{Calls: calls("c>a", "a>b", "b>c")},
			},
			want: []string{"warning Cycle a>b>c>a "},
		},
		{
			name: "self call",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("a", 0)},
				Graph:    callgraph.Graph{Calls: calls("a>a")},
			},
			want: []string{"warning Cycle a>a "},
		},
		{
			name: "no policies: platform defaults at every hop, redundant but within the limit",
			in: callgraph.Input{
				Services: services("gateway", "orders", "catalog"), ServicesKnown: true,
				Graph: callgraph.Graph{Calls: calls("gateway>orders", "orders>catalog")},
			},
			want: []string{"info RedundantRetries gateway>orders>catalog "},
		},
		{
			name: "no policies, three layers of defaults",
			in: callgraph.Input{
				Services: services("gateway", "orders", "catalog", "payments"), ServicesKnown: true,
				Graph: callgraph.Graph{Calls: calls("gateway>orders", "orders>catalog", "catalog>payments")},
			},
			want: []string{
				"warning Amplification gateway>orders>catalog>payments ",
				"info RedundantRetries gateway>orders>catalog ",
				"info RedundantRetries orders>catalog>payments ",
			},
		},
		{
			name: "caller's per-try timeout below its callee's wait",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{
					pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure")),
					pt.Policy(ns, "payments", pt.Timeout("2s"), pt.Retries(0, "")),
				},
				Graph: callgraph.Graph{Calls: calls("gateway>orders", "orders>payments"), Services: services("gateway")},
			},
			want: []string{"warning TimeoutBelowCallee orders>payments shop/orders,shop/payments"},
		},
		{
			name: "callee without timeout behind a bounded caller",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(0, "")), retrying("payments", 0)},
				Graph:    callgraph.Graph{Calls: calls("gateway>orders", "orders>payments"), Services: services("gateway")},
			},
			want: []string{"warning TimeoutBelowCallee orders>payments shop/orders,shop/payments"},
		},
		{
			name: "callee's wait within the caller's bound",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{
					pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure")),
					pt.Policy(ns, "catalog", pt.Timeout("1s"), pt.Retries(2, "300ms", "connect-failure")),
				},
				Graph: callgraph.Graph{Calls: calls("gateway>orders", "orders>catalog"), Services: services("gateway")},
			},
		},
		{
			name: "a caller nobody calls has no bound",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{pt.Policy(ns, "payments", pt.Timeout("2s"), pt.Retries(0, ""))},
				Graph:    callgraph.Graph{Calls: calls("orders>payments"), Services: services("orders")},
			},
		},
		{
			name: "non-idempotent callee retried on 5xx",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 2, "connect-failure", "5xx")},
				Graph: callgraph.Graph{Calls: calls("orders>payments"), Services: services("orders"),
					NonIdempotent: []callgraph.Target{{Service: svc("payments")}}},
			},
			want: []string{"error NonIdempotentRetry orders>payments shop/payments"},
		},
		{
			name: "non-idempotent callee retried only before the request is sent",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 2, "connect-failure", "refused-stream", "reset-before-request")},
				Graph: callgraph.Graph{Calls: calls("orders>payments"), Services: services("orders"),
					NonIdempotent: []callgraph.Target{{Service: svc("payments")}}},
			},
		},
		{
			name: "non-idempotent callee without a policy: the default retries unavailable",
			in: callgraph.Input{
				Graph: callgraph.Graph{Calls: calls("orders>payments"), Services: services("orders", "payments"),
					NonIdempotent: []callgraph.Target{{Service: svc("payments")}}},
			},
			want: []string{"error NonIdempotentRetry orders>payments "},
		},
		{
			name: "non-idempotent method: only calls of it (and of unknown method) count",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 2)},
				Graph: callgraph.Graph{Calls: calls("orders>payments#Charge", "refunds>payments#Lookup", "audit>payments"),
					Services:      services("orders", "refunds", "audit"),
					NonIdempotent: []callgraph.Target{{Service: svc("payments"), Method: "Charge"}}},
			},
			want: []string{"error NonIdempotentRetry audit>payments shop/payments", "error NonIdempotentRetry orders>payments shop/payments"},
		},
		{
			name: "a call marked idempotent: false in the file",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 1)},
				Graph: callgraph.Graph{Calls: []callgraph.Call{{From: svc("orders"), To: svc("payments"), Idempotent: new(bool),
					Sources: []string{callgraph.SourceFile}}}, Services: services("orders")},
			},
			want: []string{"error NonIdempotentRetry orders>payments shop/payments"},
		},
		{
			name: "retries above a non-idempotent call repeat it",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("orders", 2, "connect-failure", "unavailable"), retrying("payments", 0)},
				Graph: callgraph.Graph{Calls: calls("loadgen>gateway", "gateway>orders", "orders>payments"), Services: services("loadgen", "gateway"),
					NonIdempotent: []callgraph.Target{{Service: svc("payments")}}},
			},
			// gateway has no policy: the platform default retries on unavailable and cancelled, which a
			// server may answer after it ran the request.
			want: []string{
				"warning RetryAboveNonIdempotent gateway>orders>payments shop/orders",
				"warning RetryAboveNonIdempotent loadgen>gateway>orders>payments ",
				"info RedundantRetries loadgen>gateway>orders shop/orders",
			},
		},
		{
			name: "graph file names an unknown service",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 0)},
				Graph:    callgraph.Graph{Calls: calls("orders>paymnets"), Services: services("orders")},
			},
			want: []string{"warning UnknownService orders>paymnets "},
		},
		{
			name: "policy for a Service that does not exist",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("ghost", 2, "connect-failure"), pt.Policy(ns, "ghost", pt.Allow("orders"))},
				Services: services("orders"), ServicesKnown: true,
				Graph: callgraph.FromAllow([]*v1alpha1.TrafficPolicy{pt.Policy(ns, "ghost", pt.Allow("orders"))}),
			},
			want: []string{"info PolicyWithoutService ghost shop/ghost"},
		},
		{
			name: "invalid policy: defaults instead",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{pt.Policy(ns, "payments", pt.Retries(11, ""))},
				Graph:    callgraph.Graph{Calls: calls("orders>payments"), Services: services("orders")},
			},
			want: []string{"info InvalidPolicy payments shop/payments"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := brief(analyze(t, tt.in))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

// Every path from the entry, with the worst case at each hop: attempts multiply, waits are per call.
func TestPaths(t *testing.T) {
	r := analyze(t, callgraph.Input{
		Policies: []*v1alpha1.TrafficPolicy{
			pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure")),
			pt.Policy(ns, "payments", pt.Timeout("2s"), pt.Retries(0, "")),
		},
		Services: services("gateway", "orders", "payments", "catalog"), ServicesKnown: true,
		Graph: callgraph.Graph{Calls: calls("gateway>orders", "orders>payments", "orders>catalog")},
	})
	// orders retries only on connection failures, so its retries repeat nothing below; catalog's
	// platform default retries unavailable and cancelled, failures from below.
	want := []callgraph.Path{
		{Services: services("gateway", "orders", "catalog"), Hops: []callgraph.Hop{
			{From: svc("gateway"), To: svc("orders"), Policy: "shop/orders", Attempts: 3, Reaching: 3, Wait: callgraph.Wait(3e9)},
			{From: svc("orders"), To: svc("catalog"), Attempts: 3, Carries: true, Reaching: 3},
		}},
		{Services: services("gateway", "orders", "payments"), Hops: []callgraph.Hop{
			{From: svc("gateway"), To: svc("orders"), Policy: "shop/orders", Attempts: 3, Reaching: 3, Wait: callgraph.Wait(3e9)},
			{From: svc("orders"), To: svc("payments"), Policy: "shop/payments", Attempts: 1, Reaching: 1, Wait: callgraph.Wait(2e9)},
		}},
	}
	if diff := cmp.Diff(want, r.Paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}

// Each finding names the path, the fields with their values, the numbers, and the smallest fix.
func TestFindingText(t *testing.T) {
	tests := []struct {
		name string
		in   callgraph.Input
		want callgraph.Finding
	}{
		{
			name: "amplification: one hop lowered as little as possible",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("orders", 2, "reset"), retrying("catalog", 3, "reset"), retrying("payments", 2, "reset")},
				Graph:    callgraph.Graph{Calls: calls("gateway>orders", "orders>catalog", "catalog>payments"), Services: services("gateway")},
				Options:  callgraph.Options{MaxAmplification: 20},
			},
			want: callgraph.Finding{Severity: callgraph.Warning, Kind: callgraph.KindAmplification,
				Path: services("gateway", "orders", "catalog", "payments"), Policies: []string{"shop/catalog", "shop/orders", "shop/payments"},
				Fields: []callgraph.Field{
					{Service: svc("orders"), Policy: "shop/orders", Field: "spec.retries.attempts", Value: "2"},
					{Service: svc("catalog"), Policy: "shop/catalog", Field: "spec.retries.attempts", Value: "3"},
					{Service: svc("payments"), Policy: "shop/payments", Field: "spec.retries.attempts", Value: "2"},
				},
				Message: "shop/payments can receive 36 attempts for one request entering at shop/gateway (3 × 4 × 3 along the path), above the limit of 20",
				Fix:     "set TrafficPolicy shop/catalog spec.retries.attempts to 1 (from 3): 18 attempts at most"},
		},
		{
			name: "amplification: no single hop is enough",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("a", 4, "reset"), retrying("b", 4, "reset"), retrying("c", 2, "reset")},
				Graph:    callgraph.Graph{Calls: calls("entry>a", "a>b", "b>c"), Services: services("entry")},
				Options:  callgraph.Options{MaxAmplification: 2},
			},
			want: callgraph.Finding{Severity: callgraph.Warning, Kind: callgraph.KindAmplification,
				Path: services("entry", "a", "b", "c"), Policies: []string{"shop/a", "shop/b", "shop/c"},
				Fields: []callgraph.Field{
					{Service: svc("a"), Policy: "shop/a", Field: "spec.retries.attempts", Value: "4"},
					{Service: svc("b"), Policy: "shop/b", Field: "spec.retries.attempts", Value: "4"},
					{Service: svc("c"), Policy: "shop/c", Field: "spec.retries.attempts", Value: "2"},
				},
				Message: "shop/c can receive 75 attempts for one request entering at shop/entry (5 × 5 × 3 along the path), above the limit of 2",
				Fix:     "set TrafficPolicy shop/a spec.retries.attempts to 0 (from 4) and set TrafficPolicy shop/b spec.retries.attempts to 0 (from 4) and set TrafficPolicy shop/c spec.retries.attempts to 1 (from 2)"},
		},
		{
			name: "timeout: the callee's timeout lowered, or the caller's per-try timeout raised",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{
					pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure")),
					pt.Policy(ns, "payments", pt.Timeout("2s"), pt.Retries(0, "")),
				},
				Graph: callgraph.Graph{Calls: calls("gateway>orders", "orders>payments"), Services: services("gateway")},
			},
			want: callgraph.Finding{Severity: callgraph.Warning, Kind: callgraph.KindTimeoutBelowCallee,
				Path: services("orders", "payments"), Policies: []string{"shop/orders", "shop/payments"},
				Fields: []callgraph.Field{
					{Service: svc("orders"), Policy: "shop/orders", Field: "spec.retries.perTryTimeout", Value: "1s"},
					{Service: svc("payments"), Policy: "shop/payments", Field: "spec.timeout", Value: "2s"},
				},
				Message: "an attempt at shop/orders is cut after 1s (perTryTimeout), but its call to shop/payments can take 2s (timeout 2s): the callers of shop/orders give up while shop/payments still works and retries, so waiting beyond 1s only adds load",
				Fix:     "set TrafficPolicy shop/payments spec.timeout to 1s (from 2s), or set TrafficPolicy shop/orders spec.retries.perTryTimeout to 2s (from 1s)"},
		},
		{
			name: "non-idempotent: keep the retries that cannot repeat",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 2, "connect-failure", "5xx")},
				Graph: callgraph.Graph{Calls: calls("orders>payments#Charge"), Services: services("orders"),
					NonIdempotent: []callgraph.Target{{Service: svc("payments"), Method: "Charge"}}},
			},
			want: callgraph.Finding{Severity: callgraph.Error, Kind: callgraph.KindNonIdempotentRetry,
				Path: services("orders", "payments"), Policies: []string{"shop/payments"},
				Fields: []callgraph.Field{
					{Service: svc("payments"), Policy: "shop/payments", Field: "spec.retries.attempts", Value: "2"},
					{Service: svc("payments"), Policy: "shop/payments", Field: "spec.retries.retryOn", Value: "[connect-failure, 5xx]"},
				},
				Message: "shop/payments Charge must not be repeated, but calls from shop/orders are retried up to 2 times on 5xx, which can fire after the server ran the request",
				Fix:     "set TrafficPolicy shop/payments spec.retries.retryOn to [connect-failure] (from [connect-failure, 5xx]), keeping only failures before the request reached the server, or its spec.retries.attempts to 0"},
		},
		{
			name: "unknown service: did you mean",
			in: callgraph.Input{
				Policies: []*v1alpha1.TrafficPolicy{retrying("payments", 0)},
				Graph:    callgraph.Graph{Calls: calls("orders>paymnets"), Services: services("orders")},
			},
			want: callgraph.Finding{Severity: callgraph.Warning, Kind: callgraph.KindUnknownService,
				Path:    services("orders", "paymnets"),
				Message: "the graph file's call shop/orders → shop/paymnets names shop/paymnets, which is not a TrafficPolicy's target or a service declared in the graph file (did you mean shop/payments?); the call is left out",
				Fix:     "correct the name, or declare the service under services: in the graph file (callers without a Service, such as a job, must be declared)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := analyze(t, tt.in)
			for _, f := range r.Findings {
				if f.Kind == tt.want.Kind && cmp.Equal(f.Path, tt.want.Path) {
					if diff := cmp.Diff(tt.want, f); diff != "" {
						t.Errorf("finding (-want +got):\n%s", diff)
					}
					return
				}
			}
			t.Errorf("no %s finding for %v among %v", tt.want.Kind, tt.want.Path, brief(r))
		})
	}
}

// Per-method routes decide what a call gets: a call naming a method is judged by the route that takes
// it (as callers try them), not by the policy's top level.
func TestRoutesDecideWhatACallGets(t *testing.T) {
	zero, two := int32(0), int32(2)
	payments := retrying("payments", 2)
	payments.Spec.Routes = []v1alpha1.Route{
		{Name: "charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: "Charge"}},
			Retries: &v1alpha1.Retries{Attempts: &zero}},
		{Name: "get-charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: "meshplane.payments.v1.PaymentService/GetCharge"}},
			Retries: &v1alpha1.Retries{Attempts: &two, RetryOn: []v1alpha1.RetryCondition{"unavailable"}}},
	}
	nonIdempotent := []callgraph.Target{{Service: svc("payments"), Method: "Charge"}}
	tests := []struct {
		name  string
		calls []callgraph.Call
		want  []string
	}{
		{"Charge's route does not retry: nothing to report", calls("orders>payments#Charge"), nil},
		{"without a method the top level (2 retries on unavailable) applies", calls("orders>payments"),
			[]string{"error NonIdempotentRetry orders>payments shop/payments"}},
		{"GetCharge's route retries, and GetCharge may be repeated", calls("orders>payments#GetCharge"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := analyze(t, callgraph.Input{Policies: []*v1alpha1.TrafficPolicy{payments},
				Graph: callgraph.Graph{Calls: tt.calls, NonIdempotent: nonIdempotent, Services: services("orders")}})
			if diff := cmp.Diff(tt.want, brief(r)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
	// The route's numbers, and its fields, are what a finding names.
	r := analyze(t, callgraph.Input{Policies: []*v1alpha1.TrafficPolicy{payments},
		Graph: callgraph.Graph{Calls: calls("orders>payments#GetCharge"), Services: services("orders"),
			NonIdempotent: []callgraph.Target{{Service: svc("payments"), Method: "GetCharge"}}}})
	if len(r.Findings) != 1 || len(r.Findings[0].Fields) == 0 || r.Findings[0].Fields[0].Field != "spec.routes[get-charge].retries.attempts" {
		t.Errorf("findings %+v, want one naming spec.routes[get-charge].retries.attempts", r.Findings)
	}
}

// A call that is safe to repeat as a whole (the caller sends an idempotency key) re-runs nothing below
// it when retried.
func TestAnIdempotentCallAboveIsNotReported(t *testing.T) {
	policies := []*v1alpha1.TrafficPolicy{retrying("gateway", 2, "gateway-error"), retrying("payments", 0)}
	nonIdempotent := []callgraph.Target{{Service: svc("payments"), Method: "Charge"}}
	edges := calls("loadgen>gateway", "gateway>payments#Charge")
	before := analyze(t, callgraph.Input{Policies: policies, Graph: callgraph.Graph{Calls: edges, NonIdempotent: nonIdempotent, Services: services("loadgen")}})
	if got := brief(before); len(got) != 1 || !strings.Contains(got[0], "RetryAboveNonIdempotent loadgen>gateway>payments") {
		t.Fatalf("findings %q, want RetryAboveNonIdempotent on loadgen>gateway>payments", got)
	}
	yes := true
	edges[0].Idempotent = &yes
	after := analyze(t, callgraph.Input{Policies: policies, Graph: callgraph.Graph{Calls: edges, NonIdempotent: nonIdempotent, Services: services("loadgen")}})
	if got := brief(after); len(got) != 0 {
		t.Errorf("findings %q with loadgen → gateway marked idempotent, want none", got)
	}
}
