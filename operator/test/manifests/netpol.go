package manifests

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Edge is a connection the NetworkPolicies allow from the pods of one workload to a container port of
// another's ("ns/name" each).
type Edge struct {
	From, To string
	Port     int32
	Protocol corev1.Protocol
}

func (e Edge) String() string { return fmt.Sprintf("%s -> %s:%d/%s", e.From, e.To, e.Port, e.Protocol) }

// Edges evaluates the NetworkPolicies in objs as Kubernetes specifies them, for every pair of workloads
// in objs and every container port of the destination: a connection is allowed when the source's egress
// policies allow it (or none selects the source) and the destination's ingress policies allow it (or
// none selects the destination). Namespaces carry their objects' labels plus kubernetes.io/metadata.name.
// An ipBlock peer is taken to match every pod: the evaluation over-approximates, so it can only report
// too many connections, never hide one.
func Edges(objs []*unstructured.Unstructured) ([]Edge, error) {
	workloads, err := Workloads(objs)
	if err != nil {
		return nil, err
	}
	policies, err := networkPolicies(objs)
	if err != nil {
		return nil, err
	}
	nsLabels := map[string]map[string]string{}
	for _, u := range objs {
		if u.GetAPIVersion() == "v1" && u.GetKind() == "Namespace" {
			nsLabels[u.GetName()] = u.GetLabels()
		}
	}
	pod := func(w Workload) peer {
		l := map[string]string{}
		for k, v := range nsLabels[w.Namespace] {
			l[k] = v
		}
		l["kubernetes.io/metadata.name"] = w.Namespace
		return peer{namespace: w.Namespace, nsLabels: l, labels: w.Template.Labels}
	}
	var out []Edge
	for _, src := range workloads {
		for _, dst := range workloads {
			from, to := pod(src), pod(dst)
			for _, c := range dst.Template.Spec.Containers {
				for _, p := range c.Ports {
					proto := cmp.Or(p.Protocol, corev1.ProtocolTCP)
					if allowed(policies[src.Namespace], k8snetworkingv1.PolicyTypeEgress, from, to, p, proto) &&
						allowed(policies[dst.Namespace], k8snetworkingv1.PolicyTypeIngress, to, from, p, proto) {
						out = append(out, Edge{From: src.Namespace + "/" + src.Name, To: dst.Namespace + "/" + dst.Name, Port: p.ContainerPort, Protocol: proto})
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	return slices.Compact(out), nil
}

// peer is a pod as policies see it.
type peer struct {
	namespace string
	nsLabels  map[string]string
	labels    map[string]string
}

// allowed decides one direction: self is the pod the policies in its namespace may select, other the
// far end; port is the destination's container port.
func allowed(policies []k8snetworkingv1.NetworkPolicy, dir k8snetworkingv1.PolicyType, self, other peer, port corev1.ContainerPort, proto corev1.Protocol) bool {
	selected := false
	for _, np := range policies {
		if !slices.Contains(policyTypes(np), dir) || !selects(np.Spec.PodSelector, self.labels) {
			continue
		}
		selected = true
		if dir == k8snetworkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if portsMatch(r.Ports, port, proto) && peersMatch(r.From, np.Namespace, other) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if portsMatch(r.Ports, port, proto) && peersMatch(r.To, np.Namespace, other) {
					return true
				}
			}
		}
	}
	return !selected
}

// portsMatch: no ports means every port; a named port is the destination container's port name.
func portsMatch(ports []k8snetworkingv1.NetworkPolicyPort, port corev1.ContainerPort, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if cmp.Or(ptrValue(p.Protocol), corev1.ProtocolTCP) != proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String:
			if p.Port.StrVal == port.Name {
				return true
			}
		case p.EndPort != nil:
			if port.ContainerPort >= p.Port.IntVal && port.ContainerPort <= *p.EndPort {
				return true
			}
		case p.Port.IntVal == port.ContainerPort:
			return true
		}
	}
	return false
}

// peersMatch: no peers means every source or destination.
func peersMatch(peers []k8snetworkingv1.NetworkPolicyPeer, policyNamespace string, p peer) bool {
	if len(peers) == 0 {
		return true
	}
	for _, np := range peers {
		switch {
		case np.IPBlock != nil:
			return true
		case np.NamespaceSelector != nil:
			if selects(*np.NamespaceSelector, p.nsLabels) && (np.PodSelector == nil || selects(*np.PodSelector, p.labels)) {
				return true
			}
		case np.PodSelector != nil:
			if p.namespace == policyNamespace && selects(*np.PodSelector, p.labels) {
				return true
			}
		}
	}
	return false
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
