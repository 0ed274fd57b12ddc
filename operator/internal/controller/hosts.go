package controller

import (
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Cache indexes.
const (
	// indexTarget indexes TrafficPolicies by the Service they target.
	indexTarget = "spec.targetRef.name"
	// indexHost indexes VirtualServices (mesh-bound ones) and DestinationRules by fully qualified host.
	indexHost = "meshplane.host"
)

// fqdn completes a host as Istio does for a rule in namespace ns: "orders", "orders.shop" and
// "orders.shop.svc" all mean orders.shop.svc.<domain>. Wildcards are left out: they never claim a host
// exactly, and Istio prefers the exact match.
func fqdn(host, ns, domain string) string {
	if strings.Contains(host, "*") {
		return ""
	}
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		return host + "." + ns + ".svc." + domain
	case len(parts) == 2:
		return host + ".svc." + domain
	case len(parts) == 3 && parts[2] == "svc":
		return host + "." + domain
	}
	return host
}

// serviceOf returns the Service a fully qualified host names, if it is a cluster Service host.
func serviceOf(host, domain string) (name, ns string, ok bool) {
	rest, found := strings.CutSuffix(host, ".svc."+domain)
	if !found {
		return "", "", false
	}
	name, ns, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(ns, ".") {
		return "", "", false
	}
	return name, ns, true
}

// hostIndexer returns the index function of indexHost for the cluster domain.
func hostIndexer(domain string) client.IndexerFunc {
	return func(obj client.Object) []string {
		var hosts []string
		switch o := obj.(type) {
		case *networkingv1.VirtualService:
			// Only VirtualServices bound to the mesh (sidecars) route callers of the Service; a
			// gateway-only one serves ingress and does not conflict (IST0109 is about mesh ones).
			if gw := o.Spec.Gateways; len(gw) > 0 && !slices.Contains(gw, "mesh") {
				return nil
			}
			for _, h := range o.Spec.Hosts {
				hosts = append(hosts, fqdn(h, o.Namespace, domain))
			}
		case *networkingv1.DestinationRule:
			hosts = append(hosts, fqdn(o.Spec.Host, o.Namespace, domain))
		}
		hosts = slices.DeleteFunc(hosts, func(h string) bool { return h == "" })
		slices.Sort(hosts)
		return slices.Compact(hosts)
	}
}
