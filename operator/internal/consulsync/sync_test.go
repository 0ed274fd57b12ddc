package consulsync_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/internal/consulsync"
	"meshplane.dev/operator/test/envtest"
	"meshplane.dev/operator/test/istioctl"
)

var env *envtest.Env

func TestMain(m *testing.M) {
	env = envtest.MustStart(envtest.Options{})
	code := m.Run()
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

// startSync runs a manager with the sync against envtest and consul, scoped to namespace ns (which also
// receives the ServiceEntries), until the test ends.
func startSync(t *testing.T, ns string, consulAddr string) *consulsync.Sync {
	t.Helper()
	return startSyncWatching(t, consulAddr, []string{ns})
}

// startSyncWatching runs a manager with the sync against envtest and consul, watching the namespaces
// given (the first receives the ServiceEntries), until the test ends. The sync is configured as the
// manager configures it, through its flags: their defaults, cluster east, and args.
func startSyncWatching(t *testing.T, consulAddr string, namespaces []string, args ...string) *consulsync.Sync {
	t.Helper()
	watched := map[string]cache.Config{}
	for _, ns := range namespaces {
		watched[ns] = cache.Config{}
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: watched},
		// Each test runs its own manager with the same controller names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var opts consulsync.Options
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	opts.BindFlags(fs)
	if err := fs.Parse(append([]string{"--consul-address", consulAddr, "--cluster-name", "east", "--consul-serviceentry-namespace", namespaces[0]}, args...)); err != nil {
		t.Fatal(err)
	}
	s, err := consulsync.Setup(mgr, opts, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return s
}

func consulClient(t *testing.T, srv *devserver.Server) *consulapi.Client {
	t.Helper()
	c, err := consulapi.NewClient(&consulapi.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func service(ns, name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt(9090)}},
		},
	}
}

// endpointSlice is what the EndpointSlice controller would write for svc: addr → ready.
func endpointSlice(ns, svc string, eps map[string]bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-abc", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9090)}},
	}
	addrs := make([]string, 0, len(eps))
	for a := range eps {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(eps[a])},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: svc + "-" + strings.ReplaceAll(a, ".", "-")},
		})
	}
	return s
}

// instances summarises a Consul service as sorted "address:port status" lines, each with its node.
func instances(c *consulapi.Client, name string) ([]string, error) {
	entries, _, err := c.Health().Service(name, "", false, nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %s:%d %s", e.Node.Node, e.Service.Address, e.Service.Port, e.Checks.AggregatedStatus()))
	}
	sort.Strings(out)
	return out, nil
}

func wantInstances(t *testing.T, c *consulapi.Client, name string, want []string) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		got, err := instances(c, name)
		if err != nil {
			return err
		}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("consul service %s (-want +got):\n%s", name, diff)
		}
		return nil
	})
}

func mustCreate(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func TestKubernetesToConsul(t *testing.T) {
	ctx := context.Background()
	ns := envtest.Namespace(t, env)
	srv := devservertest.Consul(t)
	c := consulClient(t, srv)

	// A service registered by hand on a real agent, with the same name: the sync must never touch it.
	if err := c.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "orders-vm", Name: "orders", Address: "192.168.9.9", Port: 9090}); err != nil {
		t.Fatal(err)
	}
	// Left over from before a restart: an owned registration of a Service that no longer exists (must
	// go), and one on the same node without the owner mark (not ours: must stay).
	for _, reg := range []*consulapi.AgentService{
		{ID: "gone-1", Service: "gone", Address: "10.1.9.9", Port: 80, Meta: map[string]string{
			"external-source": "kubernetes", "external-k8s-ns": ns, "external-k8s-service": "gone", "meshplane-sync": "east"}},
		{ID: "manual-1", Service: "manual", Address: "10.1.9.8", Port: 80},
	} {
		if _, err := c.Catalog().Register(&consulapi.CatalogRegistration{Node: "k8s-east", Address: "127.0.0.1", Service: reg}, nil); err != nil {
			t.Fatal(err)
		}
	}
	s := startSync(t, ns, srv.Addr)
	wantInstances(t, c, "gone", nil)
	wantInstances(t, c, "manual", []string{"k8s-east 10.1.9.8:80 passing"})

	slice := endpointSlice(ns, "orders", map[string]bool{"10.1.0.1": true, "10.1.0.2": false})
	mustCreate(t, service(ns, "orders", nil), slice)
	wantInstances(t, c, "orders", []string{
		"k8s-east 10.1.0.1:9090 passing",
		"k8s-east 10.1.0.2:9090 critical",
		"meshplane-dev 192.168.9.9:9090 passing",
	})

	// Meta says where an instance came from and who owns it.
	cs, _, err := c.Catalog().Service("orders", "k8s", nil)
	if err != nil || len(cs) != 2 {
		t.Fatalf("catalog orders tagged k8s = %d entries, %v; want 2", len(cs), err)
	}
	for _, e := range cs {
		m := e.ServiceMeta
		if m["external-source"] != "kubernetes" || m["external-k8s-ns"] != ns || m["external-k8s-service"] != "orders" || m["k8s-cluster"] != "east" || m["meshplane-sync"] != "east" || !strings.HasPrefix(m["k8s-pod"], "orders-") {
			t.Errorf("instance %s meta = %v", e.ServiceID, m)
		}
	}

	// Readiness changes and endpoint churn follow.
	slice.Endpoints[1].Conditions.Ready = ptr.To(true)
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.0.3"}})
	if err := env.Client.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	wantInstances(t, c, "orders", []string{
		"k8s-east 10.1.0.1:9090 passing",
		"k8s-east 10.1.0.2:9090 passing",
		"k8s-east 10.1.0.3:9090 passing",
		"meshplane-dev 192.168.9.9:9090 passing",
	})
	slice.Endpoints = slice.Endpoints[1:]
	if err := env.Client.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	wantInstances(t, c, "orders", []string{
		"k8s-east 10.1.0.2:9090 passing",
		"k8s-east 10.1.0.3:9090 passing",
		"meshplane-dev 192.168.9.9:9090 passing",
	})

	// Opt-out annotation: not registered. A typo in it: a Warning event, and nothing already registered lost.
	mustCreate(t, service(ns, "internal", map[string]string{consulsync.AnnotationSync: "false"}), endpointSlice(ns, "internal", map[string]bool{"10.1.1.1": true}))
	var svc corev1.Service
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orders"}, &svc); err != nil {
		t.Fatal(err)
	}
	svc.Annotations = map[string]string{consulsync.AnnotationSync: "yes"}
	if err := env.Client.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "orders" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, `annotation consul.meshplane.dev/sync: invalid value "yes"`) {
				return nil
			}
		}
		return fmt.Errorf("no Warning event naming the annotation among %d events", len(evs.Items))
	})
	if got, _ := instances(c, "internal"); len(got) != 0 {
		t.Errorf("opted-out service registered: %v", got)
	}
	wantInstances(t, c, "orders", []string{
		"k8s-east 10.1.0.2:9090 passing",
		"k8s-east 10.1.0.3:9090 passing",
		"meshplane-dev 192.168.9.9:9090 passing",
	})

	// Deleting the Service removes only what the sync owns.
	if err := env.Client.Delete(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	wantInstances(t, c, "orders", []string{"meshplane-dev 192.168.9.9:9090 passing"})
	// The writer counts a transaction's writes once Consul has answered it, which may be after a read
	// already sees them.
	wait.For(t, 10*time.Second, func() error {
		if got := testutil.ToFloat64(s.Metrics.Writes.WithLabelValues(consulsync.DirectionToConsul, "deregister")); got < 3 {
			return fmt.Errorf("deregister writes = %v, want at least 3", got)
		}
		return nil
	})
	if got := testutil.CollectAndCount(s.Metrics.Lag); got == 0 {
		t.Errorf("lag histogram has no series")
	}
}

// TestSystemServicesStayOutOfConsul: by default neither the API server's own Service (default/kubernetes)
// nor a Service of Kubernetes' system namespaces reaches Consul, while every other Service does. The
// kubernetes Service comes in when annotated consul.meshplane.dev/sync: "true" (and goes when the
// annotation does); a system namespace's Services come in only when --consul-deny-namespaces leaves the
// namespace out: a denied namespace's annotation cannot opt in, as with consul-k8s' deny list.
func TestSystemServicesStayOutOfConsul(t *testing.T) {
	ctx := context.Background()
	ns := envtest.Namespace(t, env)
	watched := []string{ns, metav1.NamespaceDefault, metav1.NamespaceSystem}
	system := ns + "-dns" // a Service of the cluster's own, annotated to sync
	mustCreate(t,
		service(metav1.NamespaceSystem, system, map[string]string{consulsync.AnnotationSync: "true"}),
		endpointSlice(metav1.NamespaceSystem, system, map[string]bool{"10.5.0.1": true}),
		service(ns, "orders", nil), endpointSlice(ns, "orders", map[string]bool{"10.1.0.1": true}),
	)
	// Deleted for real: kube-system outlives the test, and envtest's Service IP range (no namespace
	// controller frees it) is nearly used up by TestMoreServicesThanConsulConnectionsPerClient.
	t.Cleanup(func() {
		for _, o := range []client.Object{
			service(metav1.NamespaceSystem, system, nil), endpointSlice(metav1.NamespaceSystem, system, nil),
			service(ns, "orders", nil), endpointSlice(ns, "orders", nil),
		} {
			_ = env.Client.Delete(ctx, o)
		}
	})
	srv := devservertest.Consul(t)
	c := consulClient(t, srv)
	s := startSyncWatching(t, srv.Addr, watched)
	wantInstances(t, c, "orders", []string{"k8s-east 10.1.0.1:9090 passing"})

	// Absence needs a moment to stand for "decided": every watched Service is checked once more after
	// orders went in, then neither may be in Consul.
	services := 0
	for _, n := range watched {
		var list corev1.ServiceList
		if err := env.Client.List(ctx, &list, client.InNamespace(n)); err != nil {
			t.Fatal(err)
		}
		services += len(list.Items)
	}
	reconciled := s.ToConsul.Reconciled()
	if err := s.ToConsul.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		if n := s.ToConsul.Reconciled() - reconciled; n < int64(services) {
			return fmt.Errorf("%d of %d watched Services reconciled after resync", n, services)
		}
		return nil
	})
	for _, name := range []string{"kubernetes", system} {
		if got, err := instances(c, name); err != nil || len(got) > 0 {
			t.Errorf("consul service %s = %v (%v); want none by default", name, got, err)
		}
	}

	// The annotation opts the API server's Service in, at the addresses the API server published.
	var apiSlice discoveryv1.EndpointSlice
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: metav1.NamespaceDefault, Name: "kubernetes"}, &apiSlice); err != nil {
		t.Fatalf("the API server's EndpointSlice: %v", err)
	}
	var apiserver []string
	for _, e := range apiSlice.Endpoints {
		for _, a := range e.Addresses {
			apiserver = append(apiserver, fmt.Sprintf("k8s-east %s:%d passing", a, *apiSlice.Ports[0].Port))
		}
	}
	sort.Strings(apiserver)
	annotate := func(value string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, consulsync.AnnotationSync, value)
		kube := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: "kubernetes"}}
		if err := env.Client.Patch(ctx, kube, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	annotate(`"true"`)
	t.Cleanup(func() { annotate("null") })
	wantInstances(t, c, "kubernetes", apiserver)
	annotate("null")
	wantInstances(t, c, "kubernetes", nil)

	// A sync denying no namespace registers kube-system's Service.
	other := devservertest.Consul(t)
	startSyncWatching(t, other.Addr, watched, "--consul-deny-namespaces=")
	wantInstances(t, consulClient(t, other), system, []string{"k8s-east 10.5.0.1:9090 passing"})
}

// registerVM registers a non-Kubernetes instance on its own node with a check of the given status.
func registerVM(t *testing.T, c *consulapi.Client, node, addr, status string) {
	t.Helper()
	_, err := c.Catalog().Register(&consulapi.CatalogRegistration{
		Node: node, Address: addr,
		Service: &consulapi.AgentService{ID: "billing-" + node, Service: "billing", Address: addr, Port: 8080, Meta: map[string]string{"protocol": "http", "version": "v1"}},
		Check:   &consulapi.AgentCheck{Node: node, CheckID: "billing-" + node + ":alive", Name: "alive", ServiceID: "billing-" + node, Status: status},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

// endpointsOf returns the addresses of the ServiceEntry's endpoints, or an error if it does not exist.
func endpointsOf(ctx context.Context, ns, name string) ([]string, error) {
	var se networkingv1.ServiceEntry
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &se); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range se.Spec.Endpoints {
		out = append(out, e.Address)
	}
	return out, nil
}

func wantEndpoints(t *testing.T, ns, name string, want []string) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		got, err := endpointsOf(context.Background(), ns, name)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("serviceentry %s endpoints = %v, want %v", name, got, want)
		}
		return nil
	})
}

func wantGone(t *testing.T, ns, name string) {
	t.Helper()
	wait.For(t, 20*time.Second, func() error {
		_, err := endpointsOf(context.Background(), ns, name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("serviceentry %s still there (get: %w)", name, err)
	})
}

func TestConsulToIstio(t *testing.T) {
	ctx := context.Background()
	ns := envtest.Namespace(t, env)
	srv := devservertest.Consul(t)
	c := consulClient(t, srv)
	startSync(t, ns, srv.Addr)

	registerVM(t, c, "vm-1", "10.2.0.1", consulapi.HealthPassing)
	registerVM(t, c, "vm-2", "10.2.0.2", consulapi.HealthCritical)
	// Registered from Kubernetes elsewhere (e.g. consul-k8s): not imported back.
	if _, err := c.Catalog().Register(&consulapi.CatalogRegistration{
		Node: "k8s-west", Address: "127.0.0.1",
		Service: &consulapi.AgentService{ID: "web-1", Service: "web", Address: "10.3.0.1", Port: 80, Meta: map[string]string{"external-source": "kubernetes"}},
	}, nil); err != nil {
		t.Fatal(err)
	}

	wantEndpoints(t, ns, "consul-billing", []string{"10.2.0.1"})
	registerVM(t, c, "vm-2", "10.2.0.2", consulapi.HealthPassing)
	wantEndpoints(t, ns, "consul-billing", []string{"10.2.0.1", "10.2.0.2"})

	var se networkingv1.ServiceEntry
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "consul-billing"}, &se); err != nil {
		t.Fatal(err)
	}
	if got := se.Spec.Hosts; !slices.Equal(got, []string{"billing.service.consul"}) {
		t.Errorf("hosts = %v", got)
	}
	if se.Spec.Resolution.String() != "STATIC" || len(se.Spec.Ports) != 1 || se.Spec.Ports[0].Protocol != "HTTP" {
		t.Errorf("spec = %v, want STATIC with one HTTP port", &se.Spec)
	}
	if _, err := endpointsOf(ctx, ns, "consul-web"); !apierrors.IsNotFound(err) {
		t.Errorf("service from Kubernetes imported as a ServiceEntry (err %v)", err)
	}

	// Istio's own analyzers accept what the sync wrote.
	analyzeServiceEntry(t, &se)

	// Deregistering the last instance removes the service from Consul, and the ServiceEntry with it.
	for _, node := range []string{"vm-1", "vm-2"} {
		if _, err := c.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: node}, nil); err != nil {
			t.Fatal(err)
		}
	}
	wantGone(t, ns, "consul-billing")
}

func analyzeServiceEntry(t *testing.T, se *networkingv1.ServiceEntry) {
	t.Helper()
	se = se.DeepCopy()
	se.ManagedFields = nil
	se.SetGroupVersionKind(networkingv1.SchemeGroupVersion.WithKind("ServiceEntry"))
	b, err := yaml.Marshal(se)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "se.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	msgs, err := istioctl.Analyze(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Level == "Error" || m.Level == "Warning" {
			t.Errorf("istioctl analyze: %s", m)
		}
	}
}

// TestConsulRestartAndNoOpResync: a Consul that comes back empty gets everything again, once, and nothing
// stale; a resync with nothing changed writes nothing, to Consul or to the apiserver.
func TestConsulRestartAndNoOpResync(t *testing.T) {
	ctx := context.Background()
	ns := envtest.Namespace(t, env)
	srv := devservertest.Consul(t)
	c := consulClient(t, srv)
	s := startSync(t, ns, srv.Addr)

	mustCreate(t,
		service(ns, "orders", nil), endpointSlice(ns, "orders", map[string]bool{"10.1.0.1": true, "10.1.0.2": true}),
		service(ns, "payments", nil), endpointSlice(ns, "payments", map[string]bool{"10.1.0.5": true}),
	)
	registerVM(t, c, "vm-1", "10.2.0.1", consulapi.HealthPassing)
	wantInstances(t, c, "orders", []string{"k8s-east 10.1.0.1:9090 passing", "k8s-east 10.1.0.2:9090 passing"})
	wantInstances(t, c, "payments", []string{"k8s-east 10.1.0.5:9090 passing"})
	wantEndpoints(t, ns, "consul-billing", []string{"10.2.0.1"})

	// No-op resync: every Service reconciled again, zero writes.
	writes := func() float64 {
		return testutil.ToFloat64(s.Metrics.Writes.WithLabelValues(consulsync.DirectionToConsul, "register")) +
			testutil.ToFloat64(s.Metrics.Writes.WithLabelValues(consulsync.DirectionToConsul, "deregister")) +
			testutil.ToFloat64(s.Metrics.Writes.WithLabelValues(consulsync.DirectionToIstio, "apply")) +
			testutil.ToFloat64(s.Metrics.Writes.WithLabelValues(consulsync.DirectionToIstio, "delete"))
	}
	before := writes()
	reconciled := s.ToConsul.Reconciled()
	if err := s.ToConsul.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, func() error {
		if n := s.ToConsul.Reconciled() - reconciled; n < 2 {
			return fmt.Errorf("%d services reconciled after resync, want 2", n)
		}
		return nil
	})
	if after := writes(); after != before {
		t.Errorf("no-op resync wrote %v times, want 0", after-before)
	}

	// Consul restarts empty on the same address.
	port := srv.Port()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	srv = devservertest.ConsulOnPort(t, port)
	c = consulClient(t, srv)

	wantInstances(t, c, "orders", []string{"k8s-east 10.1.0.1:9090 passing", "k8s-east 10.1.0.2:9090 passing"})
	wantInstances(t, c, "payments", []string{"k8s-east 10.1.0.5:9090 passing"})
	// billing was only in the old Consul: its ServiceEntry must not outlive it.
	wantGone(t, ns, "consul-billing")
	// And the sync keeps following the new server.
	registerVM(t, c, "vm-1", "10.2.0.1", consulapi.HealthPassing)
	wantEndpoints(t, ns, "consul-billing", []string{"10.2.0.1"})
	services, _, err := c.Catalog().NodeServiceList("k8s-east", nil)
	if err != nil || len(services.Services) != 3 {
		t.Errorf("k8s-east node has %v services (%v), want exactly 3: no duplicates", len(services.Services), err)
	}
}

// TestMoreServicesThanConsulConnectionsPerClient: Consul refuses a client more than 200 concurrent
// connections (http_max_conns_per_client), and a blocking query holds one. With more Services than that
// synced from Kubernetes, both directions must keep working: every Service registered, a VM service
// still imported, no call refused.
func TestMoreServicesThanConsulConnectionsPerClient(t *testing.T) {
	ns := envtest.Namespace(t, env)
	srv := devservertest.Consul(t)
	c := consulClient(t, srv)
	s := startSync(t, ns, srv.Addr)

	const n = 250
	for i := range n {
		name := fmt.Sprintf("svc-%03d", i)
		mustCreate(t, service(ns, name, nil), endpointSlice(ns, name, map[string]bool{fmt.Sprintf("10.4.%d.%d", i/200, i%200+1): true}))
	}
	wait.For(t, 90*time.Second, func() error {
		list, _, err := c.Catalog().NodeServiceList("k8s-east", nil)
		if err != nil {
			return err
		}
		if got := len(list.Services); got != n {
			return fmt.Errorf("%d of %d Services registered in Consul", got, n)
		}
		return nil
	})
	registerVM(t, c, "vm-1", "10.2.0.1", consulapi.HealthPassing)
	wantEndpoints(t, ns, "consul-billing", []string{"10.2.0.1"})
	for _, d := range []string{consulsync.DirectionToConsul, consulsync.DirectionToIstio} {
		if errs := testutil.ToFloat64(s.Metrics.Errors.WithLabelValues(d)); errs != 0 {
			t.Errorf("meshplane_consul_sync_errors_total{direction=%q} = %v, want 0", d, errs)
		}
	}
}

// TestRefusedInstanceCostsOthersNothing: Consul refuses an instance with more than 64 meta pairs (an
// EndpointSlice with 60 named ports: every named port becomes port-<name> meta) and rolls back the whole
// transaction holding it. The sync drops what Consul refused and commits the rest again: every other
// Service and the same Service's other instances are registered, and the Service's owners get a Warning
// event with Consul's reason. Its deregistrations wait until its registrations succeed (register before
// deregister), then go.
func TestRefusedInstanceCostsOthersNothing(t *testing.T) {
	ctx := context.Background()
	ns := envtest.Namespace(t, env)
	srv := devservertest.Consul(t)
	c := consulClient(t, srv)
	// Created before the sync starts, so that its first transactions hold many Services at once;
	// headless, as envtest's Service IP range is nearly used up by TestMoreServicesThanConsulConnectionsPerClient.
	headless := func(name string) *corev1.Service {
		s := service(ns, name, nil)
		s.Spec.ClusterIP = corev1.ClusterIPNone
		return s
	}
	const n = 40
	for i := range n {
		name := fmt.Sprintf("svc-%02d", i)
		mustCreate(t, headless(name), endpointSlice(ns, name, map[string]bool{fmt.Sprintf("10.6.0.%d", i+1): true}))
	}
	mixed := endpointSlice(ns, "mixed", map[string]bool{"10.6.1.1": true})
	wide := endpointSlice(ns, "mixed", map[string]bool{"10.6.1.0": true}) // before the others in address order
	wide.Name = "mixed-wide"
	for p := range 60 {
		wide.Ports = append(wide.Ports, discoveryv1.EndpointPort{Name: ptr.To(fmt.Sprintf("p%02d", p)), Port: ptr.To(int32(10000 + p))})
	}
	mustCreate(t, headless("mixed"), mixed, wide)
	s := startSync(t, ns, srv.Addr)

	for i := range n {
		wantInstances(t, c, fmt.Sprintf("svc-%02d", i), []string{fmt.Sprintf("k8s-east 10.6.0.%d:9090 passing", i+1)})
	}
	wantInstances(t, c, "mixed", []string{"k8s-east 10.6.1.1:9090 passing"})
	wait.For(t, 20*time.Second, func() error {
		var evs eventsv1.EventList
		if err := env.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "mixed" && e.Type == corev1.EventTypeWarning && e.Reason == "ConsulRefused" && strings.Contains(e.Note, "more than 64 key/value pairs") {
				return nil
			}
		}
		var notes []string
		for _, e := range evs.Items {
			notes = append(notes, e.Reason+": "+e.Note)
		}
		return fmt.Errorf("no ConsulRefused Warning event on Service mixed with Consul's reason; events: %q", notes)
	})
	if got := testutil.ToFloat64(s.Metrics.Transactions.WithLabelValues(consulsync.TxnRolledBack)); got < 1 {
		t.Errorf("meshplane_consul_sync_transactions_total{outcome=rolled_back} = %v, want at least 1", got)
	}

	// The Service moves from 10.6.1.1 to 10.6.1.2 while the wide instance is still refused: the new
	// instance is registered, and the old one stays while a registration of the Service fails.
	mixed.Endpoints[0].Addresses = []string{"10.6.1.2"}
	if err := env.Client.Update(ctx, mixed); err != nil {
		t.Fatal(err)
	}
	both := []string{"k8s-east 10.6.1.1:9090 passing", "k8s-east 10.6.1.2:9090 passing"}
	wantInstances(t, c, "mixed", both)
	failures := testutil.ToFloat64(s.Metrics.Errors.WithLabelValues(consulsync.DirectionToConsul))
	wait.For(t, 20*time.Second, func() error {
		if got := testutil.ToFloat64(s.Metrics.Errors.WithLabelValues(consulsync.DirectionToConsul)); got <= failures {
			return fmt.Errorf("no failed reconcile of Service mixed yet after %v", failures)
		}
		return nil
	})
	if got, err := instances(c, "mixed"); err != nil || !slices.Equal(got, both) {
		t.Errorf("consul service mixed after another refused registration = %v (%v), want %v: nothing deregistered", got, err, both)
	}

	// The wide slice gone: the deregistration that waited goes.
	if err := env.Client.Delete(ctx, wide); err != nil {
		t.Fatal(err)
	}
	wantInstances(t, c, "mixed", []string{"k8s-east 10.6.1.2:9090 passing"})
}
