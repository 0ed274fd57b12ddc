// Package workload registers services whose instances run as local processes, not pods, in a Kubernetes
// API server the way istiod expects to find a mesh workload: a ServiceAccount (the identity), a Service
// selecting app=<name> (the host clients dial and the port names that carry the protocol), and one
// WorkloadEntry per instance carrying its address, ports, labels (app, version, ...) and service
// account, so subsets and per-instance endpoints exist.
//
// WorkloadEntries rather than Pods and EndpointSlices: the API server refuses loopback addresses in
// EndpointSlices, and istiod keys endpoints by address and port name, so two local instances of one
// service need two addresses (127.0.0.x, all on the loopback interface). A Kubernetes Service selects
// WorkloadEntries with its labels exactly as it selects pods (istiod's
// PILOT_ENABLE_K8S_SELECT_WORKLOAD_ENTRIES, on by default); this is how Istio runs VMs in a mesh.
package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"
	metaapi "istio.io/api/meta/v1alpha1"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/proxyless"
)

// ManagedByLabel marks what this package registered, so it can be listed and removed.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// managedBy is ManagedByLabel's value.
const managedBy = "meshplane-workload"

// Service is a Service whose instances run outside Kubernetes.
type Service struct {
	// Name is the Service's name and the app label of its instances.
	Name string
	// Namespace holds the Service, its ServiceAccount and its WorkloadEntries.
	Namespace string
	// Ports are the Service's ports. Their names carry the protocol to istiod (grpc, http, ...).
	Ports []Port
	// ServiceAccount is the instances' identity; empty means Name.
	ServiceAccount string
	// HealthChecks makes istiod send an instance's endpoint only while its WorkloadEntry's Healthy
	// condition is True (SetHealthy), as istio-agent's health checks do for VMs; new instances start
	// unhealthy. Without it every registered instance receives traffic.
	HealthChecks bool
}

// Port is one port of a Service.
type Port struct {
	// Name is the port name, e.g. "grpc"; instances map it to the port they listen on.
	Name string
	// Port is the Service's port: the one clients dial (xds:///<svc>.<ns>.svc.cluster.local:<port>).
	Port int32
}

// Instance is one running process of a Service.
type Instance struct {
	// Name names its WorkloadEntry and its xDS node, e.g. payments-v1-0.
	Name string
	// IP is the address the process listens on.
	IP string
	// Ports maps a Service port name to the port the process listens on.
	Ports map[string]uint32
	// Labels are added to app=<service>, e.g. {"version": "v1"}.
	Labels map[string]string
}

func (s Service) serviceAccount() string {
	if s.ServiceAccount != "" {
		return s.ServiceAccount
	}
	return s.Name
}

// Labels returns an instance's full label set: app=<service> and its own.
func (s Service) Labels(i Instance) map[string]string {
	out := map[string]string{"app": s.Name}
	maps.Copy(out, i.Labels)
	out["app"] = s.Name
	return out
}

// Node returns the xDS node identity the instance's bootstrap must carry for istiod to recognise it
// as this WorkloadEntry (same address, namespace, labels and service account).
func (s Service) Node(i Instance) proxyless.Node {
	return proxyless.Node{
		Name: i.Name, Namespace: s.Namespace, IP: i.IP, Labels: s.Labels(i), ServiceAccount: s.serviceAccount(),
	}
}

// Validate reports the first problem, naming the field.
func (s Service) Validate(instances ...Instance) error {
	if errs := validation.IsDNS1035Label(s.Name); len(errs) > 0 {
		return fmt.Errorf("service name %q: %s", s.Name, errs[0])
	}
	if errs := validation.IsDNS1123Label(s.Namespace); len(errs) > 0 {
		return fmt.Errorf("service %s: namespace %q: %s", s.Name, s.Namespace, errs[0])
	}
	if len(s.Ports) == 0 {
		return fmt.Errorf("service %s: ports: at least one is required", s.Name)
	}
	names := map[string]bool{}
	for _, p := range s.Ports {
		if p.Name == "" || p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("service %s: port %q %d: want a name and 1-65535", s.Name, p.Name, p.Port)
		}
		names[p.Name] = true
	}
	seen := map[string]bool{}
	for _, i := range instances {
		if errs := validation.IsDNS1123Label(i.Name); len(errs) > 0 {
			return fmt.Errorf("service %s: instance name %q: %s", s.Name, i.Name, errs[0])
		}
		if seen[i.Name] {
			return fmt.Errorf("service %s: instance %s listed twice", s.Name, i.Name)
		}
		seen[i.Name] = true
		if net.ParseIP(i.IP) == nil {
			return fmt.Errorf("service %s: instance %s: ip %q is not an IP address", s.Name, i.Name, i.IP)
		}
		for name, port := range i.Ports {
			if !names[name] {
				return fmt.Errorf("service %s: instance %s: port %q is not a port of the service", s.Name, i.Name, name)
			}
			if port < 1 || port > 65535 {
				return fmt.Errorf("service %s: instance %s: port %s=%d: want 1-65535", s.Name, i.Name, name, port)
			}
		}
		for k, v := range i.Labels {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return fmt.Errorf("service %s: instance %s: label %q: %s", s.Name, i.Name, k, errs[0])
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				return fmt.Errorf("service %s: instance %s: label %s=%q: %s", s.Name, i.Name, k, v, errs[0])
			}
		}
	}
	return nil
}

// Apply creates or updates the namespace, ServiceAccount, Service and the instances' WorkloadEntries,
// and deletes WorkloadEntries of the Service this package registered earlier that are no longer listed.
func Apply(ctx context.Context, c client.Client, s Service, instances ...Instance) error {
	if err := s.Validate(instances...); err != nil {
		return err
	}
	if err := EnsureNamespace(ctx, c, s.Namespace); err != nil {
		return err
	}
	managed := map[string]string{ManagedByLabel: managedBy}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: s.serviceAccount(), Namespace: s.Namespace}}
	if err := createOrUpdate(ctx, c, sa, func() { sa.Labels = merge(sa.Labels, managed) }); err != nil {
		return fmt.Errorf("apply serviceaccount %s/%s: %w", s.Namespace, sa.Name, err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace}}
	if err := createOrUpdate(ctx, c, svc, func() {
		svc.Labels = merge(svc.Labels, map[string]string{"app": s.Name, ManagedByLabel: managedBy})
		svc.Spec.Selector = map[string]string{"app": s.Name}
		svc.Spec.Ports = nil
		for _, p := range s.Ports {
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
				Name: p.Name, Port: p.Port, TargetPort: intstr.FromString(p.Name), AppProtocol: appProtocol(p.Name),
			})
		}
	}); err != nil {
		return fmt.Errorf("apply service %s/%s: %w", s.Namespace, s.Name, err)
	}
	keep := map[string]bool{}
	for _, i := range instances {
		keep[i.Name] = true
		we := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: i.Name, Namespace: s.Namespace}}
		if err := createOrUpdate(ctx, c, we, func() {
			we.Labels = merge(s.Labels(i), map[string]string{ManagedByLabel: managedBy})
			if s.HealthChecks {
				we.Annotations = merge(we.Annotations, map[string]string{HealthChecksAnnotation: "true"})
			} else {
				delete(we.Annotations, HealthChecksAnnotation)
			}
			we.Spec = networkingapi.WorkloadEntry{
				Address: i.IP, Ports: maps.Clone(i.Ports), Labels: s.Labels(i), ServiceAccount: s.serviceAccount(),
			}
		}); err != nil {
			return fmt.Errorf("apply workloadentry %s/%s: %w", s.Namespace, i.Name, err)
		}
	}
	var list networkingv1.WorkloadEntryList
	if err := c.List(ctx, &list, client.InNamespace(s.Namespace),
		client.MatchingLabels{"app": s.Name, ManagedByLabel: managedBy}); err != nil {
		return fmt.Errorf("list workloadentries of %s/%s: %w", s.Namespace, s.Name, err)
	}
	for _, we := range list.Items {
		if !keep[we.Name] {
			if err := c.Delete(ctx, we); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete workloadentry %s/%s: %w", s.Namespace, we.Name, err)
			}
		}
	}
	return nil
}

// HealthChecksAnnotation turns on health-based endpoints for a WorkloadEntry (istiod reads it).
const HealthChecksAnnotation = "proxy.istio.io/health-checks-enabled"

// SetHealthy sets the Healthy condition of an instance's WorkloadEntry, which istiod turns into the
// endpoint's health (when Service.HealthChecks is on): unhealthy endpoints get no traffic.
func SetHealthy(ctx context.Context, c client.Client, namespace, name string, healthy bool) error {
	we := &networkingv1.WorkloadEntry{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, we); err != nil {
		return fmt.Errorf("get workloadentry %s/%s: %w", namespace, name, err)
	}
	want := "False"
	if healthy {
		want = "True"
	}
	now := timestamppb.Now()
	var cond *metaapi.IstioCondition
	for _, existing := range we.Status.Conditions {
		if existing.Type == conditionHealthy {
			cond = existing
		}
	}
	if cond == nil {
		cond = &metaapi.IstioCondition{Type: conditionHealthy}
		we.Status.Conditions = append(we.Status.Conditions, cond)
	}
	if cond.Status == want {
		return nil
	}
	cond.Status, cond.LastTransitionTime, cond.LastProbeTime = want, now, now
	if err := c.Status().Update(ctx, we); err != nil {
		return fmt.Errorf("set workloadentry %s/%s Healthy=%s: %w", namespace, name, want, err)
	}
	return publishHealthy(ctx, c, namespace, we.Labels["app"])
}

// HealthyAnnotation on a Service lists its healthy instances (WorkloadEntries), sorted;
// HealthyDigestLabel is a digest of that list. istiod compares a Service's labels, not its annotations,
// to decide whether the Service changed.
const (
	HealthyAnnotation  = "workload.meshplane.dev/healthy"
	HealthyDigestLabel = "workload.meshplane.dev/healthy-digest"
)

// publishHealthy writes the Service's healthy instances into its HealthyAnnotation and their digest
// into its HealthyDigestLabel. istiod treats an
// unhealthy WorkloadEntry as absent, and a WorkloadEntry's health change only updates the Service's
// endpoints (EDS): the instance's own proxy keeps the inbound listener (or its absence) it got when it
// connected. A change of the Service makes istiod recompute every proxy's service targets in the
// namespace, so an instance that turned healthy gets its inbound listener — its gRPC xDS server starts
// serving — and one that turned unhealthy loses it.
func publishHealthy(ctx context.Context, c client.Client, namespace, service string) error {
	if service == "" {
		return nil
	}
	var list networkingv1.WorkloadEntryList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{"app": service}); err != nil {
		return fmt.Errorf("list workloadentries of %s/%s: %w", namespace, service, err)
	}
	var healthy []string
	for _, we := range list.Items {
		for _, cond := range we.Status.Conditions {
			if cond.Type == conditionHealthy && cond.Status == "True" {
				healthy = append(healthy, we.Name)
			}
		}
	}
	slices.Sort(healthy)
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: service}, svc); err != nil {
		return client.IgnoreNotFound(err)
	}
	names := strings.Join(healthy, ",")
	sum := sha256.Sum256([]byte(names))
	digest := hex.EncodeToString(sum[:])[:16]
	if svc.Labels[HealthyDigestLabel] == digest {
		return nil
	}
	patch := client.MergeFrom(svc.DeepCopy())
	svc.Annotations = merge(svc.Annotations, map[string]string{HealthyAnnotation: names})
	svc.Labels = merge(svc.Labels, map[string]string{HealthyDigestLabel: digest})
	if err := c.Patch(ctx, svc, patch); err != nil {
		return fmt.Errorf("annotate service %s/%s with its healthy instances: %w", namespace, service, err)
	}
	return nil
}

const conditionHealthy = "Healthy"

// RemoveInstance deletes one instance's WorkloadEntry: istiod stops sending its endpoint.
func RemoveInstance(ctx context.Context, c client.Client, namespace, name string) error {
	we := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if err := c.Delete(ctx, we); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete workloadentry %s/%s: %w", namespace, name, err)
	}
	return nil
}

// EnsureNamespace creates the namespace unless it exists.
func EnsureNamespace(ctx context.Context, c client.Client, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// appProtocol tells istiod the protocol when the port name alone would not (e.g. "grpc-web" stays
// named); Kubernetes wants it unset rather than empty.
func appProtocol(portName string) *string {
	for _, p := range []string{"grpc", "http", "http2", "tcp"} {
		if portName == p {
			return &p
		}
	}
	return nil
}

func createOrUpdate(ctx context.Context, c client.Client, obj client.Object, mutate func()) error {
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		mutate()
		return c.Create(ctx, obj)
	}
	mutate()
	return c.Update(ctx, obj)
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}
