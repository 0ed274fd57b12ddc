package localplatform_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/localplatform"
)

// TestUpStatusDown runs `meshplane up` as a user would (the real binary, a temporary directory, free
// ports), checks every part of the platform works end to end, and that `down` leaves no process behind.
func TestUpStatusDown(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := localplatform.FindRepo(wd)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	meshplane := filepath.Join(dir, "meshplane")
	build := exec.Command("go", "build", "-o", meshplane, "./operator/cmd/meshplane")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build meshplane: %v\n%s", err, out)
	}

	names := slices.Sorted(maps.Keys(localplatform.DefaultPorts()))
	free, err := devserver.FreePorts(len(names))
	if err != nil {
		t.Fatal(err)
	}
	ports := localplatform.Ports{}
	for i, n := range names {
		ports[n] = free[i]
	}
	state := filepath.Join(dir, "state")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(meshplane, append(args, "--repo", repo, "--dir", state)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	// Stop whatever started, whatever happens below.
	t.Cleanup(func() {
		if out, err := run("down"); err != nil {
			t.Errorf("cleanup down: %v\n%s", err, out)
		}
	})

	out, err := run("up", "--port", ports.String(), "--load-rate", "2")
	if err != nil {
		t.Fatalf("meshplane up: %v\n%s", err, out)
	}
	t.Logf("up:\n%s", out)
	st, err := localplatform.ReadState(state)
	if err != nil || st == nil {
		t.Fatalf("state after up: %v %v", st, err)
	}

	// Every component answers its health check; the API server's row shows its own log, and etcd and the
	// controller-manager have rows of their own.
	if out, err := run("status"); err != nil {
		t.Errorf("meshplane status: %v\n%s", err, out)
	} else {
		// ... and NATS, with orders' stream and fulfillment's durable consumer on it.
		for _, want := range []string{"kube-apiserver.log", "etcd.log", "kube-controller-manager.log", "/ui/", "nats.log", "ORDERS", "fulfillment"} {
			if !strings.Contains(out, want) {
				t.Errorf("meshplane status does not show %s:\n%s", want, out)
			}
		}
	}

	// A second up is harmless: it reports the running platform.
	if out, err := run("up", "--port", ports.String()); err != nil || !strings.Contains(out, "already running") {
		t.Errorf("second up: %v\n%s", err, out)
	}

	// An order placed through the gateway succeeds.
	gateway := "http://" + ports.Addr("gateway")
	req, _ := http.NewRequest(http.MethodPost, gateway+"/v1/orders", strings.NewReader(`{"items":[{"productId":"moka-pot","quantity":1}],"cardToken":"tok_visa"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "platform-test-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("POST /v1/orders: %s %s", resp.Status, body)
	}
	traceID := resp.Header.Get("X-Trace-Id")
	var placed struct{ ID string }
	_ = json.Unmarshal(body, &placed)

	// Its OrderPlaced event went from orders' outbox through NATS to fulfillment: the gateway shows the
	// order's shipment.
	wait.For(t, time.Minute, func() error {
		var o struct{ Fulfillment struct{ Status string } }
		if err := getJSON(gateway+"/v1/orders/"+placed.ID, &o); err != nil {
			return err
		}
		if o.Fulfillment.Status != "preparing" {
			return fmt.Errorf("order %s: fulfillment %q, want its shipment preparing", placed.ID, o.Fulfillment.Status)
		}
		return nil
	})

	// A TrafficPolicy applied with kubectl becomes Ready.
	kubectl := filepath.Join(devserver.BinDir(), "kubectl")
	policy := `apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: gateway, namespace: shop}
spec:
  targetRef: {name: gateway}
  timeout: 5s
`
	apply := exec.Command(kubectl, "--kubeconfig", st.Kubeconfig, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(policy)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	wait.For(t, time.Minute, func() error {
		out, err := exec.Command(kubectl, "--kubeconfig", st.Kubeconfig, "get", "tp", "-n", "shop", "gateway",
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`).CombinedOutput()
		if err != nil || string(out) != "True" {
			return fmt.Errorf("gateway policy Ready=%q (kubectl: %w)", out, err)
		}
		return nil
	})

	// The services are in Consul's catalog, registered by the operator's sync.
	consul, err := consulapi.NewClient(&consulapi.Config{Address: ports.Addr("consul")})
	if err != nil {
		t.Fatal(err)
	}
	instances := map[string]int{"gateway": 1, "catalog": 2, "orders": 2, "payments": 2, "fulfillment": 2}
	for svc, want := range instances {
		entries, _, err := consul.Health().Service(svc, "k8s", true, nil)
		if err != nil || len(entries) != want {
			t.Errorf("consul %s: %d passing instances synced from Kubernetes (%v), want %d", svc, len(entries), err, want)
		}
		for _, e := range entries {
			if e.Service.Meta["meshplane-sync"] != "local" {
				t.Errorf("consul %s instance %s: meta %v, want it owned by the sync of cluster local", svc, e.Service.ID, e.Service.Meta)
			}
		}
	}

	// That order went through the mesh: orders called payments through istiod, and what it holds is
	// what payments' TrafficPolicy declares (inforce exits 1 otherwise) — the sample's mtls STRICT and
	// allow [orders] included: orders holds ISTIO_MUTUAL, each payments instance requires mTLS and
	// allows only orders.
	wait.For(t, time.Minute, func() error {
		out, err := exec.Command(meshplane, "inforce", "--istiod", "http://"+ports.Addr("istiod"), "--kubeconfig", st.Kubeconfig,
			"-n", "shop", "payments").CombinedOutput()
		if err != nil {
			return fmt.Errorf("meshplane inforce: %w\n%s", err, out)
		}
		// "client orders-v1": either orders replica (orders-v1.shop or orders-v1-2.shop) — a replica's
		// channel to payments subscribes at its first charge, and the orders so far may all have gone to
		// the other one.
		for _, want := range []string{"client orders-v1", "cluster transport_socket: ISTIO_MUTUAL",
			"server payments-v1.shop", "server payments-v2.shop", "listener DownstreamTlsContext require_client_certificate",
			"listener RBAC ALLOW spiffe://cluster.local/ns/shop/sa/orders"} {
			if !strings.Contains(string(out), want) {
				return fmt.Errorf("meshplane inforce does not show %q:\n%s", want, out)
			}
		}
		return nil
	})
	// The shop's own traffic is mTLS: payments handles orders' charges from orders' certificate, none in
	// plaintext; every shop process has its istio-agent.
	// (Counted from now: loadgen's orders before the sample policies were applied went in plaintext.)
	paymentsByPeer := func() map[string]float64 {
		t.Helper()
		sum := map[string]float64{}
		for _, key := range []string{"payments", "payments-v2"} {
			m, err := metricsByPeer("http://" + ports.Addr(key+"-admin") + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			for peer, n := range m {
				sum[peer] += n
			}
		}
		return sum
	}
	before := paymentsByPeer()
	wait.For(t, time.Minute, func() error {
		after := paymentsByPeer()
		fromOrders := after["spiffe://cluster.local/ns/shop/sa/orders"] - before["spiffe://cluster.local/ns/shop/sa/orders"]
		plaintext := after["plaintext"] - before["plaintext"]
		if fromOrders == 0 || plaintext != 0 {
			return fmt.Errorf("payments handled %g calls from orders' certificate and %g in plaintext since; want some and none", fromOrders, plaintext)
		}
		return nil
	})
	agentsSeen, shopProcesses := 0, 0
	for _, c := range st.Components {
		if strings.HasSuffix(c.Name, "-agent") {
			agentsSeen++
		}
	}
	for _, n := range instances {
		shopProcesses += n
	}
	if agentsSeen != shopProcesses {
		t.Errorf("%d istio-agents in the state file, want one per shop process (%d)", agentsSeen, shopProcesses)
	}

	// The gateway's metrics are in Prometheus, its logs (that order's included) in Loki, and the generated
	// rules are loaded.
	prom := "http://" + ports.Addr("prometheus")
	wait.For(t, time.Minute, func() error {
		var r struct {
			Data struct{ Result []json.RawMessage } `json:"data"`
		}
		if err := getJSON(prom+"/api/v1/query?query="+url.QueryEscape(`http_server_request_duration_seconds_count{service="gateway"}`), &r); err != nil {
			return err
		}
		if len(r.Data.Result) == 0 {
			return fmt.Errorf("no gateway request metrics in Prometheus yet")
		}
		return nil
	})
	var rules struct {
		Data struct {
			Groups []struct{ Rules []json.RawMessage } `json:"groups"`
		} `json:"data"`
	}
	if err := getJSON(prom+"/api/v1/rules", &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		n += len(g.Rules)
	}
	if n < 50 {
		t.Errorf("Prometheus has %d rules loaded, want the generated set", n)
	}
	wait.For(t, time.Minute, func() error {
		q := url.Values{
			"query": {`{service="gateway"} |= "` + traceID + `"`},
			"start": {strconv.FormatInt(time.Now().Add(-10*time.Minute).UnixNano(), 10)},
		}
		var r struct {
			Data struct{ Result []json.RawMessage } `json:"data"`
		}
		if err := getJSON("http://"+ports.Addr("loki")+"/loki/api/v1/query_range?"+q.Encode(), &r); err != nil {
			return err
		}
		if len(r.Data.Result) == 0 {
			return fmt.Errorf("no gateway log line with trace %s in Loki yet", traceID)
		}
		return nil
	})

	// The drill shows the breaker opening and closing on the real platform (it fails otherwise), and
	// every mesh scenario's prediction holding — among them a caller without certificates refused under
	// STRICT and a caller the allow list does not name refused with PERMISSION_DENIED — and the canary
	// rollouts judged by the operator from the platform's Prometheus (--prometheus-url, the grpc queries
	// over targets labelled with their version): promoted, rolled back, held, aborted.
	out, err = run("drill", "--baseline", "5s", "--fault", "20s", "--recovery", "45s")
	t.Logf("drill:\n%s", out)
	if err != nil {
		t.Errorf("meshplane drill: %v", err)
	}
	for _, want := range []string{"mtls STRICT, caller without certificate", "PermissionDenied=100", "issued by istiod's ca",
		"Promoted ", "Rolled back ", "InsufficientTraffic", "Aborted: v2's last call"} {
		if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
			t.Errorf("drill output lacks %q", want)
		}
	}

	// down stops everything; not one process of the run is left.
	if out, err := run("down"); err != nil {
		t.Fatalf("meshplane down: %v\n%s", err, out)
	}
	if left := localplatform.RunProcesses(st.RunID); len(left) > 0 {
		t.Errorf("processes of the run left after down: %v", left)
	}
	for _, c := range st.Components {
		if c.PID != 0 && processExists(c.PID) {
			t.Errorf("%s (pid %d) still running after down", c.Name, c.PID)
		}
	}
	// status after down: one line, and exit status 3 (not running), as documented.
	out, err = run("status")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("status after down: %v, output %q; want exit status 3 and one line", err, out)
	}
}

func getJSON(u string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func processExists(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	return err == nil && !bytes.Contains(b, []byte(") Z "))
}

// metricsByPeer reads meshplane_grpc_server_calls_by_peer_total from a server's /metrics, summed by peer.
func metricsByPeer(u string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "meshplane_grpc_server_calls_by_peer_total{") {
			continue
		}
		i := strings.Index(line, `peer="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		peer, _, _ := strings.Cut(line[i+len(`peer="`):], `"`)
		v, err := strconv.ParseFloat(line[j+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", u, line, err)
		}
		out[peer] += v
	}
	return out, nil
}
