package desiredstate_test

import (
	"testing"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

// BenchmarkBuild builds the Istio objects of a minimal policy (a VirtualService) and of one using every
// field (all four objects): the pure part of every reconcile and of `meshplane render`, validation
// included. Compare runs with benchstat:
//
//	go test ./operator/internal/desiredstate -run '^$' -bench Build -count 6
func BenchmarkBuild(b *testing.B) {
	d := desiredstate.PlatformDefaults()
	for _, c := range []struct {
		name string
		p    *v1alpha1.TrafficPolicy
	}{
		{"minimal", pt.Policy("shop", "orders")},
		{"every-field", pt.Policy("shop", "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure", "503"),
			pt.MTLS(v1alpha1.MTLSStrict), pt.Split("v1", 90, "v2", 10), pt.Allow("gateway", "tools/loadgen"),
			pt.CircuitBreaker(v1alpha1.CircuitBreaker{MaxConnections: pt.Int32(100), ConsecutiveErrors: pt.Int32(5)}))},
	} {
		svc := pt.Service("shop", "orders")
		b.Run("policy="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := desiredstate.Build(c.p, svc, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
