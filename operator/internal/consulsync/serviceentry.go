package consulsync

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels and annotations on the ServiceEntries this sync writes: they find them again for cleanup.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "meshplane"
	// LabelConsulService holds the (label-safe) Consul service name a ServiceEntry mirrors.
	LabelConsulService = "consul.meshplane.dev/service"
	// AnnotationConsulService holds the exact Consul service name.
	AnnotationConsulService = "consul.meshplane.dev/service-name"
)

// ServiceEntryName is the Kubernetes name of the ServiceEntry for a Consul service: "consul-" plus the
// name made DNS-safe, with a hash suffix when that changed it, so two Consul names never collide.
func ServiceEntryName(consulName string) string {
	safe := strings.Trim(dnsUnsafe.ReplaceAllString(strings.ToLower(consulName), "-"), "-")
	name := "consul-" + safe
	if safe != consulName || len(name) > 63 {
		h := sha256.Sum256([]byte(consulName))
		suffix := "-" + hex.EncodeToString(h[:4])
		name = strings.TrimRight(name[:min(len(name), 63-len(suffix))], "-") + suffix
	}
	return name
}

// Host is the mesh host name of a Consul service, as Consul's DNS interface answers it.
func Host(consulName string) string { return strings.ToLower(consulName) + ".service.consul" }

// Imported reports whether a Consul service is brought into the mesh: not Consul itself, and not a service
// that came from Kubernetes (by this sync or any other: its instances say external-source=kubernetes).
func Imported(consulName string, entries []*consulapi.ServiceEntry) bool {
	if consulName == "consul" || len(entries) == 0 {
		return false
	}
	return !slices.ContainsFunc(entries, func(e *consulapi.ServiceEntry) bool {
		return e.Service != nil && e.Service.Meta[MetaExternalSource] == "kubernetes"
	})
}

// DesiredServiceEntry maps the instances of one Consul service to a ServiceEntry in namespace: host
// <name>.service.consul, one port per distinct instance port (protocol from the "protocol" meta, else TCP),
// STATIC resolution with the passing instances as endpoints, sorted so unchanged input renders the same
// object. Instances whose address is not an IP cannot be STATIC endpoints and are left out. It returns an
// error when the name cannot be a mesh host.
func DesiredServiceEntry(consulName string, entries []*consulapi.ServiceEntry, namespace string) (*networkingv1.ServiceEntry, error) {
	host := Host(consulName)
	if errs := validation.IsDNS1123Subdomain(host); len(errs) > 0 {
		return nil, fmt.Errorf("consul service %q: host %q is not a valid mesh host: %s", consulName, host, strings.Join(errs, "; "))
	}

	type port struct {
		number   int
		proto    string
		declared bool
	}
	ports := map[int]port{}
	var eps []*networkingapi.WorkloadEntry
	for _, e := range entries {
		if e.Service == nil || e.Service.Port <= 0 {
			continue
		}
		p := e.Service.Port
		// An instance that declares a protocol beats one that does not; between two declarations the
		// smaller name wins, so the result never depends on instance order.
		declared := e.Service.Meta[MetaProtocol] != ""
		proto := istioProtocol(e.Service.Meta[MetaProtocol])
		if cur, ok := ports[p]; !ok || (declared && (!cur.declared || proto < cur.proto)) {
			ports[p] = port{number: p, proto: proto, declared: declared}
		}
		if e.Checks.AggregatedStatus() != consulapi.HealthPassing {
			continue
		}
		addr := e.Service.Address
		if addr == "" && e.Node != nil {
			addr = e.Node.Address
		}
		if net.ParseIP(addr) == nil {
			continue
		}
		eps = append(eps, &networkingapi.WorkloadEntry{
			Address: addr,
			Ports:   map[string]uint32{"": uint32(p)},
			Labels:  labelsFromMeta(e.Service.Meta),
		})
	}
	// Port names are known only once every instance declared its protocol.
	for _, ep := range eps {
		p := ep.Ports[""]
		ep.Ports = map[string]uint32{portName(ports[int(p)].proto, int(p)): p}
	}
	if len(ports) == 0 {
		return nil, fmt.Errorf("consul service %q: no instance has a port", consulName)
	}

	spec := networkingapi.ServiceEntry{
		Hosts:      []string{host},
		Location:   networkingapi.ServiceEntry_MESH_INTERNAL,
		Resolution: networkingapi.ServiceEntry_STATIC,
		Endpoints:  eps,
	}
	for _, p := range ports {
		spec.Ports = append(spec.Ports, &networkingapi.ServicePort{Number: uint32(p.number), Protocol: p.proto, Name: portName(p.proto, p.number)})
	}
	slices.SortFunc(spec.Ports, func(a, b *networkingapi.ServicePort) int { return cmp.Compare(a.Number, b.Number) })
	slices.SortFunc(spec.Endpoints, func(a, b *networkingapi.WorkloadEntry) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(endpointPort(a), endpointPort(b)))
	})
	spec.Endpoints = slices.CompactFunc(spec.Endpoints, func(a, b *networkingapi.WorkloadEntry) bool {
		return a.Address == b.Address && endpointPort(a) == endpointPort(b)
	})

	se := &networkingv1.ServiceEntry{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "ServiceEntry"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        ServiceEntryName(consulName),
			Namespace:   namespace,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelConsulService: labelValue(consulName)},
			Annotations: map[string]string{AnnotationConsulService: consulName},
		},
	}
	// The spec is a protobuf message: set it field by field rather than copying the struct (it holds a lock).
	se.Spec.Hosts, se.Spec.Location, se.Spec.Resolution = spec.Hosts, spec.Location, spec.Resolution
	se.Spec.Ports, se.Spec.Endpoints = spec.Ports, spec.Endpoints
	return se, nil
}

func endpointPort(w *networkingapi.WorkloadEntry) uint32 {
	for _, p := range w.Ports {
		return p
	}
	return 0
}

func istioProtocol(meta string) string {
	switch strings.ToLower(meta) {
	case "http":
		return "HTTP"
	case "http2":
		return "HTTP2"
	case "grpc":
		return "GRPC"
	case "https":
		return "HTTPS"
	default:
		return "TCP"
	}
}

func portName(proto string, number int) string {
	return strings.ToLower(proto) + "-" + strconv.Itoa(number)
}

// labelsFromMeta carries instance meta that is a valid label (e.g. version: v2, for subsets), except this
// sync's own bookkeeping keys.
func labelsFromMeta(meta map[string]string) map[string]string {
	var out map[string]string
	for k, v := range meta {
		switch k {
		case MetaExternalSource, MetaProtocol:
			continue
		}
		if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

func labelValue(s string) string {
	if len(validation.IsValidLabelValue(s)) == 0 {
		return s
	}
	h := sha256.Sum256([]byte(s))
	return "h-" + hex.EncodeToString(h[:8])
}
