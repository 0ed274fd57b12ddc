package consulsync

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations a Service can carry to steer the Kubernetes → Consul direction.
const (
	// AnnotationSync is "true" or "false": sync this Service regardless of the default mode.
	AnnotationSync = "consul.meshplane.dev/sync"
	// AnnotationServiceName overrides the Consul service name.
	AnnotationServiceName = "consul.meshplane.dev/service-name"
	// AnnotationTags adds comma-separated Consul tags.
	AnnotationTags = "consul.meshplane.dev/tags"
	// AnnotationPort names the Service port (by name or number) to register; default the first port.
	AnnotationPort = "consul.meshplane.dev/port"
)

// Meta keys every registration of this sync carries.
const (
	MetaExternalSource = "external-source"
	MetaNamespace      = "external-k8s-ns"
	MetaService        = "external-k8s-service"
	MetaCluster        = "k8s-cluster"
	// MetaOwner marks a registration as owned by the sync of one cluster: only those are ever deleted.
	MetaOwner = "meshplane-sync"
	MetaPod   = "k8s-pod"
	// MetaPortPrefix + a port's name holds that port's number on the instance, for every named port:
	// e.g. port-http-metrics lets Prometheus' Consul discovery scrape an admin port.
	MetaPortPrefix = "port-"
	MetaNode       = "k8s-node"
	MetaProtocol   = "protocol"
	// TagKubernetes is on every instance synced from Kubernetes.
	TagKubernetes = "k8s"
)

// apiServerService is the Service the API server keeps in the default namespace for itself.
const apiServerService = "kubernetes"

// Mode says what a Consul instance stands for.
type Mode string

const (
	// ModeEndpoints registers one instance per EndpointSlice address (pod IP), health from readiness.
	ModeEndpoints Mode = "endpoints"
	// ModeClusterIP registers one instance at the Service's ClusterIP, passing while any endpoint is ready.
	ModeClusterIP Mode = "clusterip"
)

// Instance is one Consul service instance on the sync's node, reduced to what the sync controls, so desired
// and observed instances compare with ==-like equality (see Equal).
type Instance struct {
	ID      string
	Service string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Status is the instance's check status: passing or critical.
	Status string
}

// Equal reports whether two instances would register identically.
func (i Instance) Equal(o Instance) bool {
	return i.ID == o.ID && i.Service == o.Service && i.Address == o.Address && i.Port == o.Port &&
		i.Status == o.Status && slices.Equal(i.Tags, o.Tags) && maps.Equal(i.Meta, o.Meta)
}

// Key returns the Kubernetes Service (namespace/name) an instance was registered for, from its meta.
func (i Instance) Key() string { return i.Meta[MetaNamespace] + "/" + i.Meta[MetaService] }

// Settings are the knobs of the Kubernetes → Consul mapping.
type Settings struct {
	// Cluster names the source cluster, in meta and as the ownership marker.
	Cluster string
	// DefaultSync syncs Services without the sync annotation (opt-out); false means opt-in.
	DefaultSync bool
	// NamespaceSuffix names Consul services <name>-<namespace>, so equal names in two namespaces stay apart.
	NamespaceSuffix bool
	// Mode selects endpoint or ClusterIP instances.
	Mode Mode
	// DenyNamespaces are namespaces whose Services are never synced, whatever their annotation says.
	DenyNamespaces []string
}

// ShouldSync reports whether svc is synced. A Service in a denied namespace never is: the deny list is
// the platform's decision over namespaces teams do not own (consul-k8s' deny list takes precedence over
// its annotation too). The API server's own Service, default/kubernetes, is synced only when annotated
// "true": its addresses are the control plane's, and every cluster has one, so clusters syncing into one
// Consul would merge theirs into one service that sends clients to any cluster's API server. An
// annotation that is neither "true" nor "false" is an error, so a typo never silently removes a
// registration.
func ShouldSync(svc *corev1.Service, s Settings) (bool, error) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || slices.Contains(s.DenyNamespaces, svc.Namespace) {
		return false, nil
	}
	v, ok := svc.Annotations[AnnotationSync]
	if !ok {
		if svc.Namespace == metav1.NamespaceDefault && svc.Name == apiServerService {
			return false, nil
		}
		return s.DefaultSync, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil || (v != "true" && v != "false") {
		return false, fmt.Errorf("annotation %s: invalid value %q: want \"true\" or \"false\"", AnnotationSync, v)
	}
	return b, nil
}

// ConsulName returns the Consul service name for svc.
func ConsulName(svc *corev1.Service, s Settings) string {
	if n := strings.TrimSpace(svc.Annotations[AnnotationServiceName]); n != "" {
		return n
	}
	if s.NamespaceSuffix {
		return svc.Name + "-" + svc.Namespace
	}
	return svc.Name
}

// DesiredInstances returns the instances svc should have in Consul, sorted by address and port. It is pure: the Service,
// its EndpointSlices and the settings decide everything.
func DesiredInstances(svc *corev1.Service, endpointSlices []discoveryv1.EndpointSlice, s Settings) ([]Instance, error) {
	port, err := selectPort(svc)
	if err != nil {
		return nil, err
	}
	name := ConsulName(svc, s)
	meta := map[string]string{
		MetaExternalSource: "kubernetes",
		MetaNamespace:      svc.Namespace,
		MetaService:        svc.Name,
		MetaCluster:        s.Cluster,
		MetaOwner:          s.Cluster,
	}
	if p := protocol(port); p != "" {
		meta[MetaProtocol] = p
	}
	tags := []string{TagKubernetes}
	for t := range strings.SplitSeq(svc.Annotations[AnnotationTags], ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	slices.Sort(tags)
	tags = slices.Compact(tags)

	eps := endpoints(svc, endpointSlices, port)
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.ClusterIP == ""
	if s.Mode == ModeClusterIP && !headless {
		status := "critical"
		if slices.ContainsFunc(eps, func(e endpoint) bool { return e.ready }) {
			status = "passing"
		}
		m := maps.Clone(meta)
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				m[MetaPortPrefix+p.Name] = strconv.Itoa(int(p.Port))
			}
		}
		return []Instance{{
			ID: instanceID(name, svc, svc.Spec.ClusterIP, int(port.Port)), Service: name,
			Address: svc.Spec.ClusterIP, Port: int(port.Port), Tags: tags, Meta: m, Status: status,
		}}, nil
	}

	out := make([]Instance, 0, len(eps))
	for _, e := range eps {
		m := maps.Clone(meta)
		if e.pod != "" {
			m[MetaPod] = e.pod
		}
		if e.node != "" {
			m[MetaNode] = e.node
		}
		for n, p := range e.ports {
			m[MetaPortPrefix+n] = strconv.Itoa(p)
		}
		status := "critical"
		if e.ready {
			status = "passing"
		}
		out = append(out, Instance{
			ID: instanceID(name, svc, e.address, e.port), Service: name,
			Address: e.address, Port: e.port, Tags: tags, Meta: m, Status: status,
		})
	}
	slices.SortFunc(out, func(a, b Instance) int {
		return cmp.Or(strings.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	return out, nil
}

// selectPort picks the Service port named by AnnotationPort, or the first one.
func selectPort(svc *corev1.Service) (corev1.ServicePort, error) {
	if len(svc.Spec.Ports) == 0 {
		return corev1.ServicePort{}, fmt.Errorf("service %s/%s has no ports", svc.Namespace, svc.Name)
	}
	want, ok := svc.Annotations[AnnotationPort]
	if !ok {
		return svc.Spec.Ports[0], nil
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == want || strconv.Itoa(int(p.Port)) == want {
			return p, nil
		}
	}
	return corev1.ServicePort{}, fmt.Errorf("annotation %s: no port named or numbered %q on service %s/%s", AnnotationPort, want, svc.Namespace, svc.Name)
}

// protocol maps appProtocol or an Istio-style port name prefix to the protocol meta other tools read.
func protocol(p corev1.ServicePort) string {
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
	}
	for _, proto := range []string{"grpc", "http2", "https", "http", "tcp"} {
		if name == proto || strings.HasPrefix(name, proto+"-") {
			return proto
		}
	}
	return ""
}

type endpoint struct {
	address   string
	port      int
	ready     bool
	pod, node string
	// ports are every named port of the endpoint's slice, by name.
	ports map[string]int
}

// endpoints flattens the slices into unique (address, port) endpoints of the selected port. During slice
// transitions an address can appear twice; ready wins.
func endpoints(svc *corev1.Service, endpointSlices []discoveryv1.EndpointSlice, port corev1.ServicePort) []endpoint {
	seen := map[string]int{}
	var out []endpoint
	for _, sl := range endpointSlices {
		if sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		target := -1
		var named map[string]int
		for _, p := range sl.Ports {
			if p.Port == nil {
				continue
			}
			if ptrString(p.Name) == port.Name {
				target = int(*p.Port)
			}
			if n := ptrString(p.Name); n != "" {
				if named == nil {
					named = map[string]int{}
				}
				named[n] = int(*p.Port)
			}
		}
		if target < 0 {
			// A slice without the port (or a selector-less Service's slice without ports): the target port
			// is the Service's, when it is a number.
			if port.TargetPort.IntValue() == 0 {
				continue
			}
			target = port.TargetPort.IntValue()
		}
		for _, ep := range sl.Endpoints {
			// Per the EndpointSlice API, a nil ready condition means ready.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
				ready = false
			}
			var pod, node string
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				pod = ep.TargetRef.Name
			}
			if ep.NodeName != nil {
				node = *ep.NodeName
			}
			for _, addr := range ep.Addresses {
				if net.ParseIP(addr) == nil {
					continue
				}
				k := net.JoinHostPort(addr, strconv.Itoa(target))
				if i, ok := seen[k]; ok {
					out[i].ready = out[i].ready || ready
					continue
				}
				seen[k] = len(out)
				out = append(out, endpoint{address: addr, port: target, ready: ready, pod: pod, node: node, ports: named})
			}
		}
	}
	return out
}

// instanceID is stable for a (Service, address, port): the same endpoint always has the same ID, so a
// resync overwrites rather than duplicates.
func instanceID(consulName string, svc *corev1.Service, addr string, port int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%s", svc.Namespace, svc.Name, net.JoinHostPort(addr, strconv.Itoa(port))))
	return consulName + "-" + hex.EncodeToString(h[:6])
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
