package consulsync

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func svc(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.0.0.10",
			Ports:     []corev1.ServicePort{{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt(9091)}},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

type ep struct {
	addr        string
	ready       *bool
	terminating bool
	pod         string
}

func slice(port int32, eps ...ep) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(port)}},
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.terminating {
			x.Conditions.Terminating = ptr.To(true)
		}
		if e.pod != "" {
			x.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: e.pod}
		}
		s.Endpoints = append(s.Endpoints, x)
	}
	return s
}

// brief is what a test compares: address, port, status and name of each instance, in ID order.
func brief(ins []Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.Service+" "+in.Address+":"+strconv.Itoa(in.Port)+" "+in.Status)
	}
	return out
}

func TestDesiredInstances(t *testing.T) {
	settings := Settings{Cluster: "east", DefaultSync: true, Mode: ModeEndpoints}
	tests := []struct {
		name     string
		svc      *corev1.Service
		slices   []discoveryv1.EndpointSlice
		settings Settings
		want     []string
		wantMeta map[string]string // meta every instance must carry (besides the ownership keys)
	}{
		{
			name:   "ready and not-ready endpoints map to passing and critical",
			svc:    svc("orders"),
			slices: []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1", ready: ptr.To(true)}, ep{addr: "10.1.0.2", ready: ptr.To(false)})},
			want:   []string{"orders 10.1.0.1:9091 passing", "orders 10.1.0.2:9091 critical"},
		},
		{
			name:   "nil ready means ready; terminating means not",
			svc:    svc("orders"),
			slices: []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1"}, ep{addr: "10.1.0.2", ready: ptr.To(true), terminating: true})},
			want:   []string{"orders 10.1.0.1:9091 passing", "orders 10.1.0.2:9091 critical"},
		},
		{
			name: "an address in two slices is one instance, ready wins",
			svc:  svc("orders"),
			slices: []discoveryv1.EndpointSlice{
				slice(9091, ep{addr: "10.1.0.1", ready: ptr.To(false)}),
				slice(9091, ep{addr: "10.1.0.1", ready: ptr.To(true)}),
			},
			want: []string{"orders 10.1.0.1:9091 passing"},
		},
		{
			name:     "namespace suffix",
			svc:      svc("orders"),
			slices:   []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1"})},
			settings: Settings{Cluster: "east", NamespaceSuffix: true, Mode: ModeEndpoints},
			want:     []string{"orders-shop 10.1.0.1:9091 passing"},
		},
		{
			name:   "name annotation wins over the suffix",
			svc:    svc("orders", func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationServiceName: "orders-api"} }),
			slices: []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1"})},
			want:   []string{"orders-api 10.1.0.1:9091 passing"},
		},
		{
			name:     "clusterip mode: one instance, passing while any endpoint is ready",
			svc:      svc("orders"),
			slices:   []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1", ready: ptr.To(false)}, ep{addr: "10.1.0.2"})},
			settings: Settings{Cluster: "east", Mode: ModeClusterIP},
			want:     []string{"orders 10.0.0.10:9090 passing"},
		},
		{
			name:     "clusterip mode with no ready endpoint is critical",
			svc:      svc("orders"),
			settings: Settings{Cluster: "east", Mode: ModeClusterIP},
			want:     []string{"orders 10.0.0.10:9090 critical"},
		},
		{
			name:     "headless service falls back to endpoints in clusterip mode",
			svc:      svc("orders", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }),
			slices:   []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1"})},
			settings: Settings{Cluster: "east", Mode: ModeClusterIP},
			want:     []string{"orders 10.1.0.1:9091 passing"},
		},
		{
			name: "port annotation picks the second port",
			svc: svc("orders", func(s *corev1.Service) {
				s.Annotations = map[string]string{AnnotationPort: "http-admin"}
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "http-admin", Port: 8081, TargetPort: intstr.FromInt(8081)})
			}),
			slices: []discoveryv1.EndpointSlice{{
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](9091)}, {Name: ptr.To("http-admin"), Port: ptr.To[int32](8081)}},
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}}},
			}},
			want:     []string{"orders 10.1.0.1:8081 passing"},
			wantMeta: map[string]string{"port-grpc": "9091", "port-http-admin": "8081"},
		},
		{
			name:   "no endpoints: no instances",
			svc:    svc("orders"),
			slices: nil,
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.settings
			if s.Cluster == "" {
				s = settings
			}
			got, err := DesiredInstances(tt.svc, tt.slices, s)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, brief(got)); diff != "" {
				t.Errorf("instances (-want +got):\n%s", diff)
			}
			for _, in := range got {
				for k, v := range tt.wantMeta {
					if in.Meta[k] != v {
						t.Errorf("instance %s meta %s = %q, want %q", in.ID, k, in.Meta[k], v)
					}
				}
				if in.Meta[MetaOwner] != "east" || in.Meta[MetaExternalSource] != "kubernetes" || in.Key() != "shop/orders" {
					t.Errorf("instance %s meta = %v, want owner east, external-source kubernetes, key shop/orders", in.ID, in.Meta)
				}
			}
		})
	}
}

func TestDesiredInstancesMetaAndTags(t *testing.T) {
	s := svc("orders", func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationTags: "v1, canary ,v1"} })
	got, err := DesiredInstances(s, []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1", pod: "orders-abc"})}, Settings{Cluster: "east", Mode: ModeEndpoints})
	if err != nil {
		t.Fatal(err)
	}
	want := Instance{
		ID: got[0].ID, Service: "orders", Address: "10.1.0.1", Port: 9091, Status: "passing",
		Tags: []string{"canary", "k8s", "v1"},
		Meta: map[string]string{
			MetaExternalSource: "kubernetes", MetaNamespace: "shop", MetaService: "orders",
			MetaCluster: "east", MetaOwner: "east", MetaPod: "orders-abc", MetaProtocol: "grpc",
			"port-grpc": "9091",
		},
	}
	if diff := cmp.Diff(want, got[0]); diff != "" {
		t.Errorf("instance (-want +got):\n%s", diff)
	}
	// The ID is a function of (service, address, port): a resync must produce the same one.
	again, _ := DesiredInstances(s, []discoveryv1.EndpointSlice{slice(9091, ep{addr: "10.1.0.1", pod: "orders-abc"})}, Settings{Cluster: "east", Mode: ModeEndpoints})
	if again[0].ID != got[0].ID || !strings.HasPrefix(got[0].ID, "orders-") {
		t.Errorf("instance ID %q then %q, want one stable ID prefixed orders-", got[0].ID, again[0].ID)
	}
}

func TestShouldSync(t *testing.T) {
	system := []string{"kube-system", "kube-public"}
	tests := []struct {
		namespace, name string // default shop/orders
		annotation      *string
		defaultSync     bool
		deny            []string
		typ             corev1.ServiceType
		want            bool
		wantErr         string
	}{
		{defaultSync: true, want: true},
		{defaultSync: false, want: false},
		{annotation: ptr.To("false"), defaultSync: true, want: false},
		{annotation: ptr.To("true"), defaultSync: false, want: true},
		{annotation: ptr.To("yes"), defaultSync: true, wantErr: `annotation consul.meshplane.dev/sync: invalid value "yes"`},
		{annotation: ptr.To("1"), defaultSync: true, wantErr: `invalid value "1"`},
		{defaultSync: true, typ: corev1.ServiceTypeExternalName, want: false},
		// A denied namespace wins over the default and the annotation, a bad one included.
		{namespace: "kube-system", defaultSync: true, deny: system, want: false},
		{namespace: "kube-system", annotation: ptr.To("true"), defaultSync: true, deny: system, want: false},
		{namespace: "kube-system", annotation: ptr.To("yes"), defaultSync: true, deny: system, want: false},
		{namespace: "kube-system", defaultSync: true, want: true},
		{defaultSync: true, deny: system, want: true},
		// The API server's own Service only when annotated; a Service named kubernetes elsewhere as any other.
		{namespace: "default", name: "kubernetes", defaultSync: true, want: false},
		{namespace: "default", name: "kubernetes", annotation: ptr.To("true"), defaultSync: false, want: true},
		{namespace: "default", name: "kubernetes", annotation: ptr.To("true"), defaultSync: true, deny: []string{"default"}, want: false},
		{namespace: "shop", name: "kubernetes", defaultSync: true, want: true},
		{namespace: "default", name: "orders", defaultSync: true, want: true},
	}
	for _, tt := range tests {
		s := svc("orders", func(s *corev1.Service) {
			if tt.namespace != "" {
				s.Namespace = tt.namespace
			}
			if tt.name != "" {
				s.Name = tt.name
			}
			if tt.annotation != nil {
				s.Annotations = map[string]string{AnnotationSync: *tt.annotation}
			}
			s.Spec.Type = tt.typ
		})
		got, err := ShouldSync(s, Settings{DefaultSync: tt.defaultSync, DenyNamespaces: tt.deny})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("annotation %v: err = %v, want %q", ptr.Deref(tt.annotation, "<none>"), err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s/%s annotation %v default %v deny %v type %q: got %v, %v; want %v",
				s.Namespace, s.Name, ptr.Deref(tt.annotation, "<none>"), tt.defaultSync, tt.deny, tt.typ, got, err, tt.want)
		}
	}
}

func TestDesiredInstancesBadPortAnnotation(t *testing.T) {
	s := svc("orders", func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationPort: "metrics"} })
	_, err := DesiredInstances(s, nil, Settings{Cluster: "east"})
	if err == nil || !strings.Contains(err.Error(), `annotation consul.meshplane.dev/port: no port named or numbered "metrics"`) {
		t.Fatalf("err = %v, want it to name the annotation and the value", err)
	}
}
