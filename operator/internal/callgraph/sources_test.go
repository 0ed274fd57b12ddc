package callgraph_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	pt "meshplane.dev/operator/test/policytest"
)

// Allow lists: each allowed service account calls the policy's Service, in its own namespace if given.
func TestFromAllow(t *testing.T) {
	g := callgraph.FromAllow([]*v1alpha1.TrafficPolicy{
		pt.Policy(ns, "orders", pt.Allow("gateway", "tools/loadgen")),
		pt.Policy(ns, "payments", pt.Allow("orders")),
		pt.Policy(ns, "catalog"),
	})
	want := []callgraph.Call{
		{From: svc("gateway"), To: svc("orders"), Sources: []string{"allow"}},
		{From: svc("orders"), To: svc("payments"), Sources: []string{"allow"}},
		{From: callgraph.Service{Namespace: "tools", Name: "loadgen"}, To: svc("orders"), Sources: []string{"allow"}},
	}
	if diff := cmp.Diff(want, g.Calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestParseFile(t *testing.T) {
	g, err := callgraph.ParseFile("graph.yaml", []byte(`
namespace: shop
services:
- {name: payments, idempotent: false}
- {name: orders, nonIdempotentMethods: [PlaceOrder]}
- {name: tools/loadgen}
calls:
- {from: tools/loadgen, to: gateway}
- {from: gateway, to: orders, method: PlaceOrder}
- {from: orders, to: payments, idempotent: false}
- {from: orders, to: catalog}
`), "default")
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := callgraph.Graph{
		Calls: []callgraph.Call{
			{From: svc("gateway"), To: svc("orders"), Method: "PlaceOrder", Sources: []string{"file"}},
			{From: svc("orders"), To: svc("catalog"), Sources: []string{"file"}},
			{From: svc("orders"), To: svc("payments"), Idempotent: &no, Sources: []string{"file"}},
			{From: callgraph.Service{Namespace: "tools", Name: "loadgen"}, To: svc("gateway"), Sources: []string{"file"}},
		},
		NonIdempotent: []callgraph.Target{{Service: svc("orders"), Method: "PlaceOrder"}, {Service: svc("payments")}},
		Services:      []callgraph.Service{svc("orders"), svc("payments"), {Namespace: "tools", Name: "loadgen"}},
	}
	if diff := cmp.Diff(want, g); diff != "" {
		t.Errorf("graph (-want +got):\n%s", diff)
	}
}

// Bad graph files: every problem at once, each naming the file and the entry; never a panic.
func TestParseFileProblems(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"unknown field", "calls:\n- {frm: a, to: b}\n", `graph.yaml: unknown field "frm"`},
		{"not YAML", "calls: [", "graph.yaml: yaml: line 1: did not find expected node content"},
		{"several problems", "calls:\n- {from: Gateway, to: orders}\n- {to: b}\n- {from: a, to: b, method: 'Place Order'}\nservices:\n- {name: x/y/z}\n",
			`graph.yaml: services[0].name: "x/y/z": name "y/z": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')` + "\n" +
				`graph.yaml: calls[0].from: "Gateway": name "Gateway": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')` + "\n" +
				"graph.yaml: calls[1].from: required\n" +
				`graph.yaml: calls[2].method: "Place Order" is not a method name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := callgraph.ParseFile("graph.yaml", []byte(tt.file), "shop")
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// istiod's clients: the caller is the Service whose selector matches the client's labels, else its app
// label, else its name; hosts outside the cluster domain are left out.
func TestFromObserved(t *testing.T) {
	orders := pt.Service(ns, "orders")
	g := callgraph.FromObserved([]callgraph.Observed{
		{Name: "orders-0", Namespace: ns, Labels: map[string]string{"app": "orders", "version": "v1"}, Host: "payments.shop.svc.cluster.local"},
		{Name: "gateway-7f9", Namespace: ns, Labels: map[string]string{"app": "gateway"}, Host: "orders.shop.svc.cluster.local"},
		{Name: "meshtest", Namespace: ns, Host: "orders.shop.svc.cluster.local"},
		{Name: "meshtest", Namespace: ns, Host: "api.example.com"},
	}, []*corev1.Service{orders}, "cluster.local")
	want := []callgraph.Call{
		{From: svc("gateway"), To: svc("orders"), Sources: []string{"istiod"}},
		{From: svc("meshtest"), To: svc("orders"), Sources: []string{"istiod"}},
		{From: svc("orders"), To: svc("payments"), Sources: []string{"istiod"}},
	}
	if diff := cmp.Diff(want, g.Calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want callgraph.Target
		err  string
	}{
		{in: "payments", want: callgraph.Target{Service: svc("payments")}},
		{in: "billing/payments", want: callgraph.Target{Service: callgraph.Service{Namespace: "billing", Name: "payments"}}},
		{in: "payments/Charge", want: callgraph.Target{Service: svc("payments"), Method: "Charge"}},
		{in: "billing/payments/Charge", want: callgraph.Target{Service: callgraph.Service{Namespace: "billing", Name: "payments"}, Method: "Charge"}},
		{in: "a/b/c", err: `"a/b/c": want SERVICE, NAMESPACE/SERVICE, SERVICE/Method or NAMESPACE/SERVICE/Method`},
		{in: "", err: `"": name "": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
	}
	for _, tt := range tests {
		got, err := callgraph.ParseTarget(tt.in, ns)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseTarget(%q) error = %v, want %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// Merging sources: one call per caller, callee and method; named methods take over a call of any method.
func TestMerge(t *testing.T) {
	no := false
	g := callgraph.Merge(
		callgraph.FromAllow([]*v1alpha1.TrafficPolicy{pt.Policy(ns, "orders", pt.Allow("gateway")), pt.Policy(ns, "payments", pt.Allow("orders"))}),
		callgraph.Graph{Calls: []callgraph.Call{
			{From: svc("gateway"), To: svc("orders"), Method: "PlaceOrder", Sources: []string{"file"}},
			{From: svc("gateway"), To: svc("orders"), Method: "GetOrder", Sources: []string{"file"}},
			{From: svc("orders"), To: svc("payments"), Sources: []string{"istiod"}},
			{From: svc("orders"), To: svc("payments"), Idempotent: &no, Sources: []string{"file"}},
		}},
	)
	want := []callgraph.Call{
		{From: svc("gateway"), To: svc("orders"), Method: "GetOrder", Sources: []string{"allow", "file"}},
		{From: svc("gateway"), To: svc("orders"), Method: "PlaceOrder", Sources: []string{"allow", "file"}},
		{From: svc("orders"), To: svc("payments"), Idempotent: &no, Sources: []string{"allow", "file", "istiod"}},
	}
	if diff := cmp.Diff(want, g.Calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
