package scenario_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/inforce"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
)

// Every field of a TrafficPolicy, read back from what istiod sent the caller: the ones gRPC enforces
// are in force with the declared values, the others are reported as ignored, not sent or server side
// — exactly the table in docs/local-platform.md. `meshplane inforce` prints the same against the running istiod.
func TestInForce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := mesh.Policy(scenario.WithTimeout(2*time.Second), scenario.WithSplit("v1", "v2", 90),
		scenario.WithCircuitBreaker(v1alpha1.CircuitBreaker{
			MaxRequests: ptr.To[int32](50), MaxConnections: ptr.To[int32](10), ConsecutiveErrors: ptr.To[int32](5),
			BaseEjectionTime: ptr.To(v1alpha1.Duration("30s")),
		}))
	p.Spec.Retries = &v1alpha1.Retries{Attempts: ptr.To[int32](2), PerTryTimeout: ptr.To(v1alpha1.Duration("1s")),
		RetryOn: []v1alpha1.RetryCondition{"unavailable", "connect-failure", "503"}}
	p.Spec.MTLS = &v1alpha1.MTLS{Mode: v1alpha1.MTLSStrict}
	p.Spec.Allow = []v1alpha1.Caller{{ServiceAccount: "orders"}}
	// Routes per method: Charge by service/method, never retried, with a fault that aborts nothing (0%);
	// GetCharge by name, with its own timeout and retries. Retrying on 503 splits off the default
	// route's POST and PATCH requests, which gRPC calls never take.
	p.Spec.Routes = []v1alpha1.Route{
		{Name: "charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: paymentService + "/Charge"}},
			Retries: &v1alpha1.Retries{Attempts: ptr.To[int32](0)},
			Fault:   &v1alpha1.Fault{Abort: &v1alpha1.FaultAbort{Percentage: ptr.To[int32](0), Code: "UNAVAILABLE"}}},
		{Name: "get-charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: "GetCharge"}}, Timeout: ptr.To(v1alpha1.Duration("500ms")),
			Retries: &v1alpha1.Retries{Attempts: ptr.To[int32](3), RetryOn: []v1alpha1.RetryCondition{"unavailable"}}},
	}
	if _, err := mesh.ApplyAndWait(ctx, p); err != nil {
		t.Fatal(err)
	}

	report, err := inforce.Build(ctx, inforce.Options{Istiod: mesh.Istiod, Kube: env.Client, Namespace: ns,
		Service: "payments", Proxy: mesh.CallerID})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Clients) != 1 {
		t.Fatalf("got %d clients, want the caller", len(report.Clients))
	}
	got := map[string]inforce.Verdict{}
	received := map[string]string{}
	for _, r := range report.Clients[0].Rows {
		got[r.Field] = r.Verdict
		received[r.Field] = r.Received
	}
	want := map[string]inforce.Verdict{
		"timeout":                             inforce.InForce,
		"retries.attempts":                    inforce.InForce,
		"retries.retryOn":                     inforce.Partly,
		"retries.perTryTimeout":               inforce.Ignored,
		"split":                               inforce.InForce,
		"circuitBreaker.maxRequests":          inforce.InForce,
		"circuitBreaker.maxConnections":       inforce.NotSent,
		"circuitBreaker (outlier detection)":  inforce.NotSent,
		"mtls.mode":                           inforce.InForce,
		"allow":                               inforce.ServerSide,
		"routes[charge]":                      inforce.InForce,
		"routes[charge].timeout":              inforce.InForce,
		"routes[charge].retries.attempts":     inforce.InForce,
		"routes[charge].fault":                inforce.InForce,
		"routes[get-charge]":                  inforce.InForce,
		"routes[get-charge].timeout":          inforce.InForce,
		"routes[get-charge].retries.attempts": inforce.InForce,
		"routes[get-charge].retries.retryOn":  inforce.InForce,
		"routes[default.non-idempotent]":      inforce.HTTPOnly,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	for field, value := range map[string]string{
		"timeout":                             "route max_stream_duration=2s",
		"retries.attempts":                    "route num_retries=2",
		"retries.retryOn":                     "route retry_on=unavailable,connect-failure,retriable-status-codes retriable_status_codes=[503]",
		"split":                               "route weighted_clusters v1=90 v2=10",
		"circuitBreaker.maxRequests":          "cluster circuit_breakers.max_requests=50,50",
		"routes[charge]":                      "route #1 path=/" + paymentService + "/Charge",
		"routes[charge].fault":                "route typed_per_filter_config fault: abort UNAVAILABLE to 0%",
		"routes[get-charge]":                  "route #2 regex=/[^/]+/GetCharge",
		"routes[get-charge].timeout":          "route max_stream_duration=500ms",
		"routes[get-charge].retries.attempts": "route num_retries=3",
		"mtls.mode":                           "cluster transport_socket: ISTIO_MUTUAL",
	} {
		if received[field] != value {
			t.Errorf("%s: received %q, want %q", field, received[field], value)
		}
	}
	// The servers' side: each payments instance requires mTLS and allows only orders.
	servers := map[string]map[string]string{}
	for _, srv := range report.Servers {
		servers[srv.Server.Proxy.ID] = map[string]string{}
		for _, r := range srv.Rows {
			servers[srv.Server.Proxy.ID][r.Field] = r.Received + " → " + string(r.Verdict)
		}
	}
	inForce := map[string]string{
		"mtls.mode": "listener DownstreamTlsContext require_client_certificate → in force",
		"allow":     "listener RBAC ALLOW spiffe://cluster.local/ns/shop/sa/orders → in force",
	}
	if diff := cmp.Diff(map[string]map[string]string{"payments-v1." + ns: inForce, "payments-v2." + ns: inForce}, servers); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}

	// The command, as a user runs it against the same istiod and apiserver.
	bin := filepath.Join(t.TempDir(), "meshplane")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/meshplane").CombinedOutput(); err != nil {
		t.Fatalf("build meshplane: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, bin, "inforce", "--istiod", istiod.URL(), "--kubeconfig", env.Kubeconfig, "-n", ns, "payments")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshplane inforce: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	t.Logf("meshplane inforce -n %s payments:\n%s", ns, stdout.String())
	for _, line := range []string{
		"payments.shop.svc.cluster.local:9030 — TrafficPolicy shop/payments",
		"client " + mesh.CallerID + " (ACKed its last push)",
		"server payments-v1." + ns + " (ACKed its last push)",
		"retries.perTryTimeout",
		"routes[get-charge].retries.attempts",
	} {
		if !strings.Contains(stdout.String(), line) {
			t.Errorf("output lacks %q", line)
		}
	}
}

// The shop's own services in xds mode: orders and catalog run with their GRPC_XDS_BOOTSTRAP and reach
// payments and catalog through istiod (xds:/// targets); an order placed through the caller's xDS
// client is charged by payments, and orders shows up as a client of payments in istiod.
func TestShopInXDSMode(t *testing.T) {
	logTailsOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := mesh.ApplyAndWait(ctx, mesh.Policy(scenario.NoRetries)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func(name string, port int32, extra ...string) {
		t.Helper()
		svc := workload.Service{Name: name, Namespace: ns, Ports: []workload.Port{{Name: "grpc", Port: port}}}
		in, err := newInstance(name+"-0", map[string]string{"version": "v1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := workload.Apply(ctx, env.Client, svc, in); err != nil {
			t.Fatal(err)
		}
		if _, err := startService(ctx, dir, name, svc, in, extra); err != nil {
			t.Fatal(err)
		}
	}
	start("catalog", 9010)
	start("orders", 9020,
		"CATALOG_TARGET="+proxyless.Target("catalog", ns, 9010, ""),
		"PAYMENTS_TARGET="+proxyless.Target("payments", ns, 9030, ""))

	caller := proxyless.Bootstrap{Node: proxyless.Node{Name: "meshtest-orders", Namespace: ns, IP: "127.0.0.1"}, XDSAddr: istiod.XDSAddr}
	conn, err := scenario.DialXDS(caller, proxyless.Target("orders", ns, 9020, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	orders := ordersv1.NewOrderServiceClient(conn)
	var placed *ordersv1.PlaceOrderResponse
	wait.For(t, time.Minute, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		placed, err = orders.PlaceOrder(cctx, &ordersv1.PlaceOrderRequest{IdempotencyKey: "xds-order-1",
			Items: []*ordersv1.LineItem{{ProductId: "moka-pot", Quantity: 1}}, CardToken: "tok_visa"})
		return err
	})
	if placed.GetOrder().GetId() == "" {
		t.Fatalf("order placed without an id: %v", placed)
	}
	report, err := inforce.Build(ctx, inforce.Options{Istiod: mesh.Istiod, Kube: env.Client, Namespace: ns, Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	var clients []string
	for _, c := range report.Clients {
		clients = append(clients, c.Received.Proxy.ID)
	}
	if !slices.Contains(clients, "orders-0."+ns) {
		t.Errorf("payments' clients in istiod: %v, want orders-0.%s among them", clients, ns)
	}
}

// A route nobody's calls take — here a misspelt method — is valid to the API server and in force in
// every client; only the servers know. inforce counts each gRPC route's calls from the servers' own
// grpc_server_handled_total and marks the one that took none UNUSED.
func TestUnusedRoute(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	typo := v1alpha1.Route{Name: "lookup", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: "GetCharges"}},
		Timeout: ptr.To(v1alpha1.Duration("300ms"))}
	charge := v1alpha1.Route{Name: "charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: paymentService + "/Charge"}},
		Retries: &v1alpha1.Retries{Attempts: ptr.To[int32](0)}}
	if _, err := mesh.ApplyAndWait(ctx, mesh.Policy(scenario.WithRoutes(charge, typo))); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := mesh.Call(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var metrics []string
	for _, in := range mesh.Instances {
		metrics = append(metrics, "http://"+in.Admin+"/metrics")
	}
	report, err := inforce.Build(ctx, inforce.Options{Istiod: mesh.Istiod, Kube: env.Client, Namespace: ns, Service: "payments",
		Proxy: mesh.CallerID, Calls: inforce.Scrape{URLs: metrics}})
	if err != nil {
		t.Fatal(err)
	}
	uses := map[string]float64{}
	for _, u := range report.Uses {
		uses[u.Name] = u.Calls
	}
	if uses["charge"] < 5 || uses["lookup"] != 0 || len(uses) != 2 {
		t.Errorf("calls by route %v, want charge ≥ 5 (this test's calls) and lookup 0", uses)
	}

	bin := filepath.Join(t.TempDir(), "meshplane")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/meshplane").CombinedOutput(); err != nil {
		t.Fatalf("build meshplane: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "inforce", "--istiod", istiod.URL(), "--kubeconfig", env.Kubeconfig, "-n", ns,
		"--proxy", mesh.CallerID, "--metrics", strings.Join(metrics, ","), "payments").CombinedOutput()
	if err != nil {
		t.Fatalf("meshplane inforce: %v\n%s", err, out)
	}
	t.Logf("meshplane inforce --metrics …:\n%s", out)
	if !regexp.MustCompile(`lookup +gRPC /\*/GetCharges +0 +UNUSED`).Match(out) {
		t.Errorf("output does not mark route lookup UNUSED")
	}
}
