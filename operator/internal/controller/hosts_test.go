package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshplane.dev/operator/api/v1alpha1"
)

func TestFQDN(t *testing.T) {
	tests := []struct{ host, ns, want string }{
		{"orders", "shop", "orders.shop.svc.cluster.local"},
		{"orders.shop", "web", "orders.shop.svc.cluster.local"},
		{"orders.shop.svc", "web", "orders.shop.svc.cluster.local"},
		{"orders.shop.svc.cluster.local", "web", "orders.shop.svc.cluster.local"},
		{"api.example.com", "shop", "api.example.com"},
		{"*.shop.svc.cluster.local", "shop", ""},
	}
	for _, tt := range tests {
		if got := fqdn(tt.host, tt.ns, "cluster.local"); got != tt.want {
			t.Errorf("fqdn(%q, %q) = %q, want %q", tt.host, tt.ns, got, tt.want)
		}
	}
	if name, ns, ok := serviceOf("orders.shop.svc.cluster.local", "cluster.local"); !ok || name != "orders" || ns != "shop" {
		t.Errorf("serviceOf = %q, %q, %v; want orders, shop, true", name, ns, ok)
	}
	for _, h := range []string{"api.example.com", "a.b.c.svc.cluster.local", "orders.svc.cluster.local"} {
		if _, _, ok := serviceOf(h, "cluster.local"); ok {
			t.Errorf("serviceOf(%q) ok, want not a Service host", h)
		}
	}
}

// The older policy governs a Service; creationTimestamp has second precision, so ties go to the name.
func TestOlder(t *testing.T) {
	at := func(name string, sec int) *v1alpha1.TrafficPolicy {
		return &v1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Name: name,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, sec, 0, time.UTC))}}
	}
	tests := []struct {
		a, b *v1alpha1.TrafficPolicy
		want bool
	}{
		{at("z", 1), at("a", 2), true},
		{at("a", 2), at("z", 1), false},
		{at("a", 1), at("b", 1), true},
		{at("b", 1), at("a", 1), false},
	}
	for _, tt := range tests {
		if got := older(tt.a, tt.b); got != tt.want {
			t.Errorf("older(%s@%v, %s@%v) = %v, want %v", tt.a.Name, tt.a.CreationTimestamp, tt.b.Name, tt.b.CreationTimestamp, got, tt.want)
		}
	}
}
