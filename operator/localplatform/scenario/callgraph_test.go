package scenario_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
)

// The call-graph analysis' worst case, measured on real calls. A two-hop chain: a proxyless caller →
// checkout (the orders binary, registered under its own Service so no other test's instance shares
// it, with its breaker off so every call goes through) → payments, whose every instance fails Charge
// with UNAVAILABLE. Orders answers UNAVAILABLE when payments fails, so the caller's retries on
// unavailable (checkout's policy) repeat orders' retried calls to payments (payments' policy). The
// analysis, over the policies in the API server and the calls istiod serves its clients (adsz), gives
// the attempts one call can cause at payments; payments' own servers count them (grpc_server_handled_total
// of Charge): the count must equal calls × that worst case. Then the analysis' fix is applied and the
// count follows it.
func TestCallGraphAmplification(t *testing.T) {
	logTailsOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	start := func(name, bin string, port int32, extra ...string) {
		t.Helper()
		svc := workload.Service{Name: name, Namespace: ns, Ports: []workload.Port{{Name: "grpc", Port: port}}}
		in, err := newInstance(name+"-0", map[string]string{"version": "v1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := workload.Apply(ctx, env.Client, svc, in); err != nil {
			t.Fatal(err)
		}
		if _, err := startService(ctx, dir, bin, svc, in, extra); err != nil {
			t.Fatal(err)
		}
	}
	start("pricing", "catalog", 9050)
	start("checkout", "orders", 9040,
		"CATALOG_TARGET="+proxyless.Target("pricing", ns, 9050, ""),
		"PAYMENTS_TARGET="+proxyless.Target("payments", ns, 9030, ""),
		// The breaker would fail calls fast without reaching payments once it opens: off, so every call
		// shows what the mesh's retries do.
		"BREAKER_CONSECUTIVE_FAILURES=1000000", "BREAKER_FAILURE_RATIO=0")

	caller := proxyless.Bootstrap{Node: proxyless.Node{Name: "meshtest-checkout", Namespace: ns, IP: "127.0.0.1"}, XDSAddr: istiod.XDSAddr}
	conn, err := scenario.DialXDS(caller, proxyless.Target("checkout", ns, 9040, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	orders := ordersv1.NewOrderServiceClient(conn)
	placeOrder := func(ctx context.Context) error {
		_, err := orders.PlaceOrder(ctx, &ordersv1.PlaceOrderRequest{IdempotencyKey: "callgraph-" + randomKey(),
			Items: []*ordersv1.LineItem{{ProductId: "moka-pot", Quantity: 1}}, CardToken: "tok_visa"})
		return err
	}
	// checkout as the caller sees it, and payments as checkout's instance sees it: each policy is
	// waited for until the client that applies it has ACKed it.
	checkout := &scenario.Mesh{Namespace: ns, Service: "checkout", Port: 9040, Method: "PlaceOrder", Istiod: mesh.Istiod,
		CallerID: caller.Node.ProxyID(), Call: placeOrder, Apply: mesh.Apply, Client: env.Client}
	payments := &scenario.Mesh{Namespace: ns, Service: "payments", Port: 9030, Method: "Charge", Instances: mesh.Instances,
		Istiod: mesh.Istiod, CallerID: "checkout-0." + ns, Call: placeOrder, Apply: mesh.Apply, Client: env.Client,
		SetHealthy: mesh.SetHealthy}
	paymentsPolicy := payments.Policy(scenario.WithRetries(2, "unavailable"))
	if _, err := payments.ApplyAndWait(ctx, paymentsPolicy); err != nil {
		t.Fatal(err)
	}

	const calls = 25
	faults := map[string]string{"*": `[{"target":"Charge","errorRate":1,"grpcCode":"UNAVAILABLE"}]`}
	var table strings.Builder
	for _, step := range []struct {
		label           string
		checkoutRetries int32
		finding         bool // the analysis reports Amplification at payments
	}{
		{"checkout retries.attempts: 3, payments retries.attempts: 2", 3, true},
		{"the analysis' fix: checkout retries.attempts: 2", 2, false},
	} {
		if _, err := checkout.ApplyAndWait(ctx, checkout.Policy(scenario.WithRetries(step.checkoutRetries, "unavailable"))); err != nil {
			t.Fatal(err)
		}
		worst, report := analyse(ctx, t, caller.Node.Name)
		var amplification *callgraph.Finding
		for i, f := range report.Findings {
			if f.Kind == callgraph.KindAmplification && f.Path[len(f.Path)-1].Name == "payments" {
				amplification = &report.Findings[i]
			}
		}
		if (amplification != nil) != step.finding {
			t.Errorf("%s: Amplification finding at payments: %v, want %v (findings %v)", step.label, amplification != nil, step.finding, report.Findings)
		}
		if amplification != nil {
			t.Logf("%s: %s\n  fix: %s", step.label, amplification.Message, amplification.Fix)
		}
		s := scenario.Scenario{Name: "call-graph amplification", Field: "caller → checkout → payments attempts (analysis worst case)",
			Steps: []scenario.Step{{
				Label: step.label, Policy: paymentsPolicy, Faults: faults, Calls: calls, Concurrency: 1, Deadline: 10 * time.Second,
				Predict: func(o scenario.Observed) scenario.Prediction {
					seen := 0
					for _, n := range o.Served {
						seen += n
					}
					want := calls * worst
					p := scenario.Prediction{Expected: fmt.Sprintf("%d Charge attempts = %d calls × worst case %d", want, calls, worst)}
					switch {
					case o.Codes[codes.Unavailable] != calls:
						p.Err = fmt.Errorf("codes %v, want all %d UNAVAILABLE", o.Codes, calls)
					case seen != int(want):
						p.Err = fmt.Errorf("payments' servers saw %d Charge attempts for %d calls (%.2f per call), analysis' worst case %d per call", seen, calls, float64(seen)/calls, worst)
					}
					return p
				},
			}}}
		outcomes, err := payments.Run(ctx, s)
		_ = scenario.WriteTable(&table, s, outcomes, payments.Instances)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outcomes {
			if o.Err != nil {
				t.Errorf("%s: %v", o.Step, o.Err)
			}
		}
	}
	t.Logf("\n%s", table.String())
}

// analyse runs the call-graph analysis the way the operator and `meshplane check --istiod` do, over
// the live policies and Services and the calls istiod serves, and returns the worst case at payments on
// the path from the caller through checkout.
func analyse(ctx context.Context, t *testing.T, caller string) (int64, *callgraph.Report) {
	t.Helper()
	watchers, err := mesh.Istiod.Watchers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var observed []callgraph.Observed
	for _, w := range watchers {
		for _, h := range w.Hosts {
			observed = append(observed, callgraph.Observed{Name: w.Name, Namespace: w.Namespace, Labels: w.Labels, Host: h})
		}
	}
	var services corev1.ServiceList
	if err := env.Client.List(ctx, &services, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var policies v1alpha1.TrafficPolicyList
	if err := env.Client.List(ctx, &policies, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	in := callgraph.Input{ServicesKnown: true, Defaults: desiredstate.PlatformDefaults()}
	kube := make([]*corev1.Service, len(services.Items))
	for i := range services.Items {
		kube[i] = &services.Items[i]
		in.Services = append(in.Services, callgraph.Service{Namespace: ns, Name: services.Items[i].Name})
	}
	for i := range policies.Items {
		in.Policies = append(in.Policies, &policies.Items[i])
	}
	in.Graph = callgraph.FromObserved(observed, kube, "cluster.local")
	report, err := callgraph.Analyze(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range report.Paths {
		names := make([]string, len(p.Services))
		for i, s := range p.Services {
			names[i] = s.Name
		}
		if strings.Join(names, ">") == caller+">checkout>payments" {
			return p.Hops[len(p.Hops)-1].Reaching, report
		}
	}
	var b strings.Builder
	_ = callgraph.WriteText(&b, report, true)
	t.Fatalf("no path %s → checkout → payments in the observed graph:\n%s", caller, b.String())
	return 0, nil
}

func randomKey() string { return fmt.Sprint(time.Now().UnixNano()) }
