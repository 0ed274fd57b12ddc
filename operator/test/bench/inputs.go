package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"meshplane.dev/operator/api/v1alpha1"
)

// Shapes is the number of policy shapes Policy cycles through.
const Shapes = 4

// Policy returns the i-th benchmark TrafficPolicy in ns, targeting the Service of the same name. The
// shapes cycle so that a run holds a realistic mix, 2.5 generated objects per policy on average:
//
//	0: timeout and retries                                  → VirtualService
//	1: and a circuit breaker                                → DestinationRule, VirtualService
//	2: timeout, retries, mtls STRICT and allow              → VirtualService, PeerAuthentication, AuthorizationPolicy
//	3: everything, with a 90/10 split                       → all four
func Policy(ns string, i int) *v1alpha1.TrafficPolicy {
	name := ServiceName(i)
	attempts := int32(2)
	timeout, perTry := v1alpha1.Duration("3s"), v1alpha1.Duration("1s")
	p := &v1alpha1.TrafficPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "TrafficPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.TrafficPolicySpec{
			TargetRef: v1alpha1.TargetRef{Kind: "Service", Name: name},
			Timeout:   &timeout,
			Retries: &v1alpha1.Retries{Attempts: &attempts, PerTryTimeout: &perTry,
				RetryOn: []v1alpha1.RetryCondition{"connect-failure", "refused-stream", "unavailable"}},
		},
	}
	shape := i % Shapes
	if shape == 1 || shape == 3 {
		interval, ejection := v1alpha1.Duration("10s"), v1alpha1.Duration("30s")
		p.Spec.CircuitBreaker = &v1alpha1.CircuitBreaker{
			MaxConnections: ptr.To[int32](100), MaxPendingRequests: ptr.To[int32](10), MaxRequests: ptr.To[int32](100),
			ConsecutiveErrors: ptr.To[int32](5), Interval: &interval, BaseEjectionTime: &ejection, MaxEjectionPercent: ptr.To[int32](50),
		}
	}
	if shape == 2 || shape == 3 {
		p.Spec.MTLS = &v1alpha1.MTLS{Mode: v1alpha1.MTLSStrict}
		p.Spec.Allow = []v1alpha1.Caller{{ServiceAccount: "gateway"}, {ServiceAccount: "loadgen", Namespace: "tools"}}
	}
	if shape == 3 {
		p.Spec.Split = []v1alpha1.Subset{
			{Subset: "v1", Labels: map[string]v1alpha1.LabelValue{"version": "v1"}, Weight: ptr.To[int32](90)},
			{Subset: "v2", Labels: map[string]v1alpha1.LabelValue{"version": "v2"}, Weight: ptr.To[int32](10)},
		}
	}
	return p
}

// ServiceName is the name of the i-th benchmark Service (and of its policy).
func ServiceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// Service returns the i-th benchmark Service in ns: selector app=<name>, one gRPC port 9090, headless.
// Neither the operator nor the sync reads a ClusterIP, and allocating thousands of them rewrites the
// API server's allocation bitmap with every Service: creating 2×5,000 inputs took 300 s that way.
func Service(ns string, i int) *corev1.Service {
	name := ServiceName(i)
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": name},
			Ports:     []corev1.ServicePort{{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9090)}},
		},
	}
}

// EndpointSlice returns what the EndpointSlice controller would write for the i-th Service: one slice
// with the given number of ready endpoints at distinct 10.x.y.z addresses.
func EndpointSlice(ns string, i, endpoints int) *discoveryv1.EndpointSlice {
	name := ServiceName(i)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-bench", Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9090)}},
	}
	for e := range endpoints {
		s.Endpoints = append(s.Endpoints, endpointAt(i, e))
	}
	return s
}

// endpointAt is endpoint e of Service i: a ready pod at a unique address.
func endpointAt(i, e int) discoveryv1.Endpoint {
	n := i*16 + e
	return discoveryv1.Endpoint{
		Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", (n>>16)&0xff, (n>>8)&0xff, n&0xff)},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "", Name: fmt.Sprintf("%s-%d", ServiceName(i), e)},
		NodeName:   ptr.To("node-1"),
	}
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error; it stops handing out work
// once one call failed or ctx ended.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
