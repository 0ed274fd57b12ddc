package render_test

import (
	"fmt"
	"io"
	"testing"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/internal/render"
	pt "meshplane.dev/operator/test/policytest"
)

// BenchmarkRender renders n policies using every field (four objects each) to YAML: the cost of
// `meshplane render` on a large repository, and of one full operator resync's builds.
func BenchmarkRender(b *testing.B) {
	for _, n := range []int{100, 1000} {
		in := &render.Inputs{}
		for i := range n {
			name := fmt.Sprintf("svc-%04d", i)
			in.Policies = append(in.Policies, render.Policy{File: "bench.yaml", TrafficPolicy: pt.Policy("shop", name,
				pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure", "503"), pt.MTLS(v1alpha1.MTLSStrict),
				pt.Split("v1", 90, "v2", 10), pt.Allow("gateway", "tools/loadgen"),
				pt.CircuitBreaker(v1alpha1.CircuitBreaker{MaxConnections: pt.Int32(100), ConsecutiveErrors: pt.Int32(5)}))})
			in.Services = append(in.Services, render.Service{File: "bench.yaml", Service: pt.Service("shop", name)})
		}
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			for b.Loop() {
				rendered, problems := render.Render(in, desiredstate.PlatformDefaults())
				if problems != nil {
					b.Fatal(problems)
				}
				if err := render.WriteYAML(io.Discard, rendered); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
