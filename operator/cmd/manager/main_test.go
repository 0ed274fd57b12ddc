package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/test/envtest"
	pt "meshplane.dev/operator/test/policytest"
)

var env *envtest.Env

func TestMain(m *testing.M) {
	env = envtest.MustStart(envtest.Options{})
	utilruntime.Must(v1alpha1.AddToScheme(env.Scheme))
	code := m.Run()
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

const systemNS = "meshplane-system"

// operatorKubeconfig installs the generated RBAC (config/rbac) for a service account and returns a
// kubeconfig that authenticates as it: the manager must work with exactly the permissions its markers
// grant.
func operatorKubeconfig(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	c := env.Client
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "meshplane-operator", Namespace: systemNS}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshplane-operator"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "meshplane-operator"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "meshplane-operator", Namespace: systemNS}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "meshplane-operator", Namespace: systemNS},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "meshplane-operator"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "meshplane-operator", Namespace: systemNS}}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	roles, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(roles)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := sigsyaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}

	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts(systemNS).CreateToken(ctx, "meshplane-operator", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["meshplane-operator"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["meshplane-operator"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "meshplane-operator"}
	cfg.CurrentContext = "meshplane-operator"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// The manager binary's run, started with a plain kubeconfig as the operator's service account (RBAC
// exactly as generated), serves probes and metrics on loopback, takes the leader lease, applies the
// retry-default flag, watches only the namespaces it is told to, syncs the catalog with a real Consul
// both ways, and stops cleanly.
func TestRunAgainstKubeconfig(t *testing.T) {
	kubeconfig := operatorKubeconfig(t)
	consulSrv := devservertest.Consul(t)
	consul, err := consulapi.NewClient(&consulapi.Config{Address: consulSrv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	ports, err := devserver.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr, probeAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	watchedNS, ignoredNS := envtest.Namespace(t, env), envtest.Namespace(t, env)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"--kubeconfig", kubeconfig,
			"--metrics-bind-address", metricsAddr,
			"--health-probe-bind-address", probeAddr,
			"--leader-elect", "--leader-election-namespace", systemNS,
			"--namespaces", watchedNS,
			"--default-retry-attempts", "1",
			"--consul-address", consulSrv.Addr, "--cluster-name", "test",
			"--consul-serviceentry-namespace", watchedNS,
		}, func(string) string { return "" }, io.Discard, &logs)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager log:\n%s", logs.String())
		}
	})

	wait.For(t, time.Minute, func() error {
		select {
		case err := <-done:
			t.Fatalf("manager exited: %v", err)
		default:
		}
		return httpOK("http://" + probeAddr + "/readyz")
	})
	if err := httpOK("http://" + probeAddr + "/healthz"); err != nil {
		t.Error(err)
	}

	// A policy in an unwatched namespace first, then one in the watched namespace.
	ignored := pt.Policy(ignoredNS, "orders")
	watched := pt.Policy(watchedNS, "orders")
	for _, obj := range []client.Object{pt.Service(ignoredNS, "orders"), ignored, pt.Service(watchedNS, "orders"), watched} {
		if err := env.Client.Create(context.Background(), obj); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, time.Minute, func() error {
		p := &v1alpha1.TrafficPolicy{}
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(watched), p); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("policy not Ready: %+v", p.Status.Conditions)
		}
		return nil
	})
	vs := &networkingv1.VirtualService{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(watched), vs); err != nil {
		t.Fatal(err)
	}
	if got := vs.Spec.Http[0].Retries.GetAttempts(); got != 1 {
		t.Errorf("retries.attempts = %d, want 1 from --default-retry-attempts", got)
	}
	p := &v1alpha1.TrafficPolicy{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(ignored), p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.Conditions) > 0 {
		t.Errorf("policy in unwatched namespace %s was reconciled: %+v", ignoredNS, p.Status.Conditions)
	}

	// The catalog sync runs inside the manager: the watched Service's endpoint reaches Consul, and a
	// Consul-only service comes back as a ServiceEntry in the configured namespace.
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "orders-1", Namespace: watchedNS, Labels: map[string]string{discoveryv1.LabelServiceName: "orders"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.9.0.1"}}},
	}
	if err := env.Client.Create(context.Background(), slice); err != nil {
		t.Fatal(err)
	}
	if _, err := consul.Catalog().Register(&consulapi.CatalogRegistration{
		Node: "vm-1", Address: "10.8.0.1",
		Service: &consulapi.AgentService{ID: "billing-1", Service: "billing", Port: 8080},
	}, nil); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, func() error {
		entries, _, err := consul.Health().Service("orders", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 || entries[0].Service.Address != "10.9.0.1" || entries[0].Node.Node != "k8s-test" {
			return fmt.Errorf("consul orders = %d passing instances, want 10.9.0.1 on node k8s-test", len(entries))
		}
		se := &networkingv1.ServiceEntry{}
		return env.Client.Get(context.Background(), client.ObjectKey{Namespace: watchedNS, Name: "consul-billing"}, se)
	})

	lease := &coordinationv1.Lease{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: systemNS, Name: "meshplane-operator.traffic.meshplane.dev"}, lease); err != nil {
		t.Errorf("leader election lease: %v", err)
	}

	body, err := get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"meshplane_trafficpolicies{", "meshplane_operator_conflicts_total{", "meshplane_operator_apply_errors_total{",
		"meshplane_operator_reconcile_to_ready_seconds_bucket{", "meshplane_operator_writes_total{", "meshplane_callgraph_findings{",
		"controller_runtime_reconcile_total{", "controller_runtime_reconcile_errors_total{",
		"controller_runtime_reconcile_time_seconds_bucket{", "workqueue_depth{",
		"meshplane_consul_sync_services{", "meshplane_consul_sync_writes_total{", "meshplane_consul_sync_errors_total{",
		"meshplane_consul_sync_lag_seconds_bucket{", "meshplane_consul_sync_transactions_total{",
	} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %s", strings.TrimSuffix(name, "{"))
		}
	}
	if !strings.Contains(body, `meshplane_operator_writes_total{kind="VirtualService",op="create"} 1`) {
		t.Errorf("/metrics does not count the VirtualService create")
	}

	// Every call the manager made (watches, applies, status, events, the lease) was allowed.
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the generated RBAC denied the manager something:\n%s", logs.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("manager did not stop within a minute of cancel")
	}
}

// TestRunRejectsBadFlags: a bad flag stops the manager before it starts, with an error naming the problem.
func TestRunRejectsBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"--default-retry-on", "sometimes", "--kubeconfig", env.Kubeconfig}, "sometimes"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--kubeconfig", filepath.Join(t.TempDir(), "missing")}, "missing"},
		{[]string{"--kubeconfig", env.Kubeconfig, "--consul-address", "127.0.0.1:1", "--consul-sync-mode", "nodeport"}, "--consul-sync-mode"},
		{[]string{"--kubeconfig", env.Kubeconfig, "--max-concurrent-reconciles", "0"}, "--max-concurrent-reconciles"},
		{[]string{"--kubeconfig", env.Kubeconfig, "--consul-address", "127.0.0.1:1", "--consul-deny-namespaces", "kube-system,Kube_Public"}, `--consul-deny-namespaces: "Kube_Public" is not a namespace name`},
		{[]string{"--kubeconfig", env.Kubeconfig, "--callgraph-file", filepath.Join(t.TempDir(), "missing.yaml")}, "missing.yaml"},
		{[]string{"--kubeconfig", env.Kubeconfig, "--non-idempotent", "Shop/payments"}, "Shop/payments"},
		{[]string{"--kubeconfig", env.Kubeconfig, "--canary-queries", "envoy"}, "--canary-queries"},
		{[]string{"--kubeconfig", env.Kubeconfig, "--prometheus-url", "http://[::1"}, "--prometheus-url"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), tt.args, func(string) string { return "" }, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.want) {
			t.Errorf("run %q: error %v (stderr %q), want one mentioning %s", tt.args, err, stderr.String(), tt.want)
		}
	}
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), err
}

func httpOK(url string) error {
	_, err := get(url)
	return err
}

// syncBuffer collects the manager's log for a failing test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
