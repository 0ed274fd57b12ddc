package inforce

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/operator/api/v1alpha1"
)

// A route takes the calls its match selects that no route tried before it takes; a gRPC route that
// takes none is reported UNUSED, an HTTP route is not counted.
func TestUse(t *testing.T) {
	grpc := func(name, method, service string) v1alpha1.Route {
		return v1alpha1.Route{Name: name, Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: method, Service: service}},
			Timeout: ptr(v1alpha1.Duration("1s"))}
	}
	p := &v1alpha1.TrafficPolicy{Spec: v1alpha1.TrafficPolicySpec{Routes: []v1alpha1.Route{
		grpc("payments", "", "meshplane.payments.v1.PaymentService"),
		grpc("charge", "meshplane.payments.v1.PaymentService/Charge", ""),
		grpc("refund", "Refund", ""),
		grpc("get-charge", "GetCharge", ""),
		{Name: "orders", Match: v1alpha1.RouteMatch{HTTP: &v1alpha1.HTTPMatch{Path: &v1alpha1.PathMatch{Type: v1alpha1.PathPrefix, Value: "/v1/orders"}}},
			Timeout: ptr(v1alpha1.Duration("1s"))},
	}}}
	calls := Calls{
		"/meshplane.payments.v1.PaymentService/Charge":    40,
		"/meshplane.payments.v1.PaymentService/GetCharge": 7,
		"/grpc.health.v1.Health/Check":                    100,
	}
	got := Use(p, calls)
	want := []RouteUse{
		{Name: "charge", Match: "gRPC /meshplane.payments.v1.PaymentService/Charge", Counted: true, Calls: 40,
			Paths: []string{"/meshplane.payments.v1.PaymentService/Charge"}},
		{Name: "refund", Match: "gRPC /*/Refund", Counted: true},
		{Name: "get-charge", Match: "gRPC /*/GetCharge", Counted: true, Calls: 7, Paths: []string{"/meshplane.payments.v1.PaymentService/GetCharge"}},
		{Name: "payments", Match: "gRPC service /meshplane.payments.v1.PaymentService/*", Counted: true},
		{Name: "orders", Match: "HTTP /v1/orders*"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("uses (-want +got):\n%s", diff)
	}
	var out strings.Builder
	if err := WriteUse(&out, "the servers' /metrics", got); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"refund      gRPC /*/Refund", "UNUSED: no server handled a call this route takes", "HTTP route"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
}
