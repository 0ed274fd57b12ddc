package manifests

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The connections the platform needs, written from its design (not from the evaluation): the shop's
// call graph, Prometheus scraping, Grafana reading, logs to Loki, the operator using Consul, Consul
// servers talking to each other.
var (
	shopCalls = []string{
		"shop/gateway -> shop/catalog:9010/TCP",
		"shop/gateway -> shop/orders:9020/TCP",
		"shop/orders -> shop/catalog:9010/TCP",
		"shop/orders -> shop/payments:9030/TCP",
		"shop/gateway -> shop/fulfillment:9040/TCP",
		// Events: orders publishes, fulfillment consumes; the NATS servers route to each other.
		"shop/orders -> shop-events/nats:4222/TCP",
		"shop/fulfillment -> shop-events/nats:4222/TCP",
		"shop-events/nats -> shop-events/nats:6222/TCP",
	}
	platform = []string{
		"consul/consul-server -> consul/consul-server:8300/TCP",
		"consul/consul-server -> consul/consul-server:8301/TCP",
		"consul/consul-server -> consul/consul-server:8301/UDP",
		"meshplane-system/meshplane-operator -> consul/consul-server:8500/TCP",
		"monitoring/grafana -> monitoring/loki:3100/TCP",
		"monitoring/grafana -> monitoring/prometheus:9090/TCP",
		"monitoring/prometheus -> meshplane-system/meshplane-operator:8080/TCP",
		"monitoring/prometheus -> monitoring/loki:3100/TCP",
		"monitoring/prometheus -> shop/catalog:9011/TCP",
		"monitoring/prometheus -> shop/gateway:8081/TCP",
		"monitoring/prometheus -> shop/orders:9021/TCP",
		"monitoring/prometheus -> shop/payments:9031/TCP",
		"monitoring/prometheus -> shop/fulfillment:9041/TCP",
		"shop/catalog -> monitoring/loki:3100/TCP",
		"shop/gateway -> monitoring/loki:3100/TCP",
		"shop/orders -> monitoring/loki:3100/TCP",
		"shop/payments -> monitoring/loki:3100/TCP",
		"shop/fulfillment -> monitoring/loki:3100/TCP",
	}
	// The dev overlay's canary is called like catalog; loadgen calls the gateway; both log and are scraped.
	// Its PostgreSQL (prod runs its own, outside the manifests) is reached by orders, payments and
	// fulfillment only.
	devExtras = []string{
		"shop/orders -> shop-db/postgres:5432/TCP",
		"shop/payments -> shop-db/postgres:5432/TCP",
		"shop/fulfillment -> shop-db/postgres:5432/TCP",
		"monitoring/prometheus -> shop/catalog-v2:9011/TCP",
		"monitoring/prometheus -> shop/loadgen:8090/TCP",
		"shop/catalog-v2 -> monitoring/loki:3100/TCP",
		"shop/gateway -> shop/catalog-v2:9010/TCP",
		"shop/loadgen -> monitoring/loki:3100/TCP",
		"shop/loadgen -> shop/gateway:8080/TCP",
		"shop/orders -> shop/catalog-v2:9010/TCP",
	}
)

func edgeStrings(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	edges, err := Edges(objs)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range edges {
		out = append(out, e.String())
	}
	slices.Sort(out)
	return out
}

func sorted(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return out
}

// TestNetworkPoliciesAllowOnlyTheCallGraph evaluates every overlay's NetworkPolicies for every pair of
// workloads and container ports: exactly the connections the platform needs are allowed, no more.
func TestNetworkPoliciesAllowOnlyTheCallGraph(t *testing.T) {
	for _, tt := range []struct {
		overlay string
		want    []string
	}{
		{"dev", sorted(shopCalls, platform, devExtras)},
		{"prod", sorted(shopCalls, platform)},
	} {
		t.Run(tt.overlay, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, edgeStrings(t, rendered(t, tt.overlay).objs)); diff != "" {
				t.Errorf("allowed connections (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEdgesFollowPolicyChanges: the evaluation reacts to the policies the way Kubernetes does, so the
// test above could fail.
func TestEdgesFollowPolicyChanges(t *testing.T) {
	tests := []struct {
		name          string
		change        func(objs []*unstructured.Unstructured, find func(kind, ns, name string) *unstructured.Unstructured) []*unstructured.Unstructured
		gone, appears []string
	}{{
		name: "payments' own policy removed: only the namespace-wide rules select it, orders is cut off, and so is its database",
		change: func(objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			return without(objs, find("NetworkPolicy", "shop", "payments"))
		},
		gone: []string{"shop/orders -> shop/payments:9030/TCP", "shop/payments -> shop-db/postgres:5432/TCP"},
	}, {
		name: "no policy selects Grafana any more: it may call anything that accepts it",
		change: func(objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			objs = without(objs, find("NetworkPolicy", "monitoring", "grafana"))
			objs = without(objs, find("NetworkPolicy", "monitoring", "default-deny"))
			return without(objs, find("NetworkPolicy", "monitoring", "dns"))
		},
		appears: []string{"monitoring/grafana -> monitoring/grafana:3000/TCP", "monitoring/grafana -> shop/gateway:8080/TCP"},
	}, {
		name: "a named ingress port follows the container's port name",
		change: func(objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			c := container(t, find("Deployment", "shop", "payments"))
			ports := c["ports"].([]any)
			ports[1].(map[string]any)["name"] = "metrics"
			return objs
		},
		gone: []string{"monitoring/prometheus -> shop/payments:9031/TCP"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, find := mutable(t)
			before := edgeStrings(t, objs)
			after := edgeStrings(t, tt.change(objs, find))
			gone, appears := difference(before, after), difference(after, before)
			if diff := cmp.Diff(tt.gone, gone); diff != "" {
				t.Errorf("connections no longer allowed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.appears, appears); diff != "" {
				t.Errorf("connections newly allowed (-want +got):\n%s", diff)
			}
		})
	}
}

// difference is a minus b, in a's order.
func difference(a, b []string) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}
