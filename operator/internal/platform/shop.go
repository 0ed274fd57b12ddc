package platform

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devserver"
	"meshplane.dev/mesh/wait"
	"meshplane.dev/operator/api/v1alpha1"
)

// shopService is one of the shop's processes and the Kubernetes Service that stands for it.
type shopService struct {
	name string
	// proto is the traffic port's protocol: grpc or http (the Istio port-name prefix).
	proto string
	// env beyond the common settings, given the platform's ports.
	env func(p Ports) []string
}

// shop lists the services in dependency order: each starts after what it calls.
var shop = []shopService{
	{name: "catalog", proto: "grpc", env: func(p Ports) []string {
		return []string{"GRPC_ADDR=" + anyAddr(p, "catalog")}
	}},
	{name: "payments", proto: "grpc", env: func(p Ports) []string {
		return []string{"GRPC_ADDR=" + anyAddr(p, "payments")}
	}},
	{name: "orders", proto: "grpc", env: func(p Ports) []string {
		return []string{"GRPC_ADDR=" + anyAddr(p, "orders"), "CATALOG_TARGET=consul:///catalog", "PAYMENTS_TARGET=consul:///payments"}
	}},
	{name: "gateway", proto: "http", env: func(p Ports) []string {
		return []string{"HTTP_ADDR=" + anyAddr(p, "gateway"), "CATALOG_TARGET=consul:///catalog", "ORDERS_TARGET=consul:///orders"}
	}},
}

// startShop starts each service as a process with a Kubernetes Service and EndpointSlice for it in the
// local apiserver. The operator's catalog sync registers them in Consul from there — the same path as in
// a cluster — and the services find each other through Consul. The EndpointSlice's ready condition
// follows the process's /readyz, as the kubelet and EndpointSlice controller would make it.
func (s *supervisor) startShop(ctx context.Context) error {
	for _, svc := range shop {
		if err := s.startService(ctx, svc); err != nil {
			return err
		}
	}
	go s.mirrorReadiness(ctx, shop)
	return nil
}

// anyAddr listens on every interface: the services are published at the machine's address (see
// Config.Host) and reached by people at 127.0.0.1.
func anyAddr(p Ports, name string) string { return ":" + strconv.Itoa(p[name]) }

func (s *supervisor) commonEnv(name string) []string {
	return []string{
		"ADMIN_ADDR=" + anyAddr(s.cfg.Ports, name+"-admin"),
		"NAMESPACE=" + ShopNamespace,
		"LOKI_URL=http://" + s.cfg.Ports.Addr("loki"),
		"CONSUL_HTTP_ADDR=" + s.cfg.Ports.Addr("consul"),
		"CONSUL_REGISTER=false", // the catalog sync registers it, from its EndpointSlice
		"DRAIN_DELAY=1s",
	}
}

func (s *supervisor) startService(ctx context.Context, svc shopService) error {
	if err := s.applyEndpoints(ctx, svc.name, svc.proto, false); err != nil {
		return err
	}
	admin := "http://" + s.cfg.Ports.Addr(svc.name+"-admin")
	_, err := s.server(ctx, svc.name, "the "+svc.name+" service (waits for /readyz)", func(ctx context.Context) (*devserver.Server, error) {
		return devserver.Run(ctx, s.opts(svc.name, 0), devserver.Program{
			Name: svc.name, Bin: filepath.Join(s.cfg.binDir(), svc.name),
			Env:   append(s.commonEnv(svc.name), svc.env(s.cfg.Ports)...),
			Addr:  s.cfg.Ports.Addr(svc.name),
			Ready: devserver.HTTPReady(admin + "/readyz"),
		})
	}, url(svc, s.cfg.Ports), admin+"/readyz")
	if err != nil {
		return err
	}
	if err := s.applyEndpoints(ctx, svc.name, svc.proto, true); err != nil {
		return err
	}
	s.say(svc.name, "registered by the catalog sync (waits for Consul to list it passing)")
	return s.waitPassing(ctx, svc.name, 1)
}

func url(svc shopService, p Ports) string {
	if svc.proto == "http" {
		return "http://" + p.Addr(svc.name)
	}
	return "grpc://" + p.Addr(svc.name)
}

// applyEndpoints writes the Service and its one-endpoint EndpointSlice for a local process: traffic port
// (if proto is set) and the admin port as http-metrics.
func (s *supervisor) applyEndpoints(ctx context.Context, name, proto string, ready bool) error {
	var ports []corev1.ServicePort
	var slicePorts []discoveryv1.EndpointPort
	add := func(portName, key string) {
		n := int32(s.cfg.Ports[key])
		ports = append(ports, corev1.ServicePort{Name: portName, Port: n, TargetPort: intstr.FromInt32(n)})
		slicePorts = append(slicePorts, discoveryv1.EndpointPort{Name: ptr.To(portName), Port: ptr.To(n)})
	}
	if proto != "" {
		add(proto, name)
	}
	add("http-metrics", name+"-admin")

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ShopNamespace}}
	if _, err := createOrUpdate(ctx, s.env.Client, svc, func() {
		svc.Labels = map[string]string{"app": name}
		svc.Spec.Selector = map[string]string{"app": name}
		svc.Spec.Ports = ports
	}); err != nil {
		return fmt.Errorf("service %s: %w", name, err)
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name + "-local", Namespace: ShopNamespace}}
	_, err := createOrUpdate(ctx, s.env.Client, slice, func() {
		slice.Labels = map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "meshplane-up"}
		slice.AddressType = discoveryv1.AddressTypeIPv4
		slice.Ports = slicePorts
		slice.Endpoints = []discoveryv1.Endpoint{{
			Addresses:  []string{s.cfg.Host},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ShopNamespace, Name: name + "-local"},
		}}
	})
	if err != nil {
		return fmt.Errorf("endpointslice %s: %w", name, err)
	}
	return nil
}

// createOrUpdate gets obj by its key, lets mutate set the desired fields, and creates or updates it.
func createOrUpdate(ctx context.Context, c client.Client, obj client.Object, mutate func()) (bool, error) {
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return false, err
		}
		mutate()
		return true, c.Create(ctx, obj)
	}
	mutate()
	return false, c.Update(ctx, obj)
}

// mirrorReadiness keeps each EndpointSlice's ready condition equal to its process's /readyz until ctx
// ends, so a service that stops or drains leaves Consul's passing set through the real sync.
func (s *supervisor) mirrorReadiness(ctx context.Context, svcs []shopService) {
	last := map[string]bool{}
	for _, svc := range svcs {
		last[svc.name] = true
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, svc := range svcs {
			ready := httpGetOK(ctx, "http://"+s.cfg.Ports.Addr(svc.name+"-admin")+"/readyz") == nil
			if ready == last[svc.name] {
				continue
			}
			if err := s.applyEndpoints(ctx, svc.name, svc.proto, ready); err == nil {
				last[svc.name] = ready
				s.say(svc.name, "readiness changed: ready=%v", ready)
			}
		}
	}
}

// startLoadgen runs the load generator at the configured rate until the platform stops.
func (s *supervisor) startLoadgen(ctx context.Context) error {
	if s.cfg.LoadRate <= 0 {
		s.say("loadgen", "skipped (rate 0)")
		return nil
	}
	if err := s.applyEndpoints(ctx, "loadgen", "", true); err != nil {
		return err
	}
	admin := "http://" + s.cfg.Ports.Addr("loadgen-admin")
	_, err := s.server(ctx, "loadgen", fmt.Sprintf("the load generator at %g requests/s through the gateway", s.cfg.LoadRate), func(ctx context.Context) (*devserver.Server, error) {
		return devserver.Run(ctx, s.opts("loadgen", 0), devserver.Program{
			Name: "loadgen", Bin: filepath.Join(s.cfg.binDir(), "loadgen"),
			Env: []string{
				"TARGET_URL=http://" + s.cfg.Ports.Addr("gateway"),
				"RATE=" + strconv.FormatFloat(s.cfg.LoadRate, 'f', -1, 64),
				"ADMIN_ADDR=" + anyAddr(s.cfg.Ports, "loadgen-admin"),
				"NAMESPACE=" + ShopNamespace,
				"LOKI_URL=http://" + s.cfg.Ports.Addr("loki"),
			},
			Addr:  s.cfg.Ports.Addr("loadgen-admin"),
			Ready: devserver.HTTPReady(admin + "/readyz"),
		})
	}, admin+"/metrics", admin+"/readyz")
	return err
}

// applyPolicies applies the example TrafficPolicies (operator/config/samples) and waits until the
// operator reports each Ready.
func (s *supervisor) applyPolicies(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(s.cfg.Repo, "operator", "config", "samples", "traffic_*.yaml"))
	if err != nil {
		return err
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		u.SetNamespace(ShopNamespace)
		if err := s.env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("meshplane-up"), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s: %w", filepath.Base(f), err)
		}
		names = append(names, u.GetName())
	}
	s.say("policies", "applied %s (waits for Ready)", strings.Join(names, ", "))
	return wait.Until(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		for _, n := range names {
			var p v1alpha1.TrafficPolicy
			if err := s.env.Client.Get(ctx, client.ObjectKey{Namespace: ShopNamespace, Name: n}, &p); err != nil {
				return err
			}
			if !isReady(&p) {
				return fmt.Errorf("TrafficPolicy %s not Ready", n)
			}
		}
		return nil
	})
}

func isReady(p *v1alpha1.TrafficPolicy) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady {
			return c.Status == metav1.ConditionTrue && p.Status.ObservedGeneration == p.Generation
		}
	}
	return false
}
