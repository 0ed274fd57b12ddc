package v1alpha1

import "testing"

// BenchmarkValidate validates a minimal policy and one using every field: the cost `meshplane render`
// and the operator pay per policy before building anything. Compare runs with benchstat:
//
//	go test ./operator/api/v1alpha1 -run '^$' -bench Validate -count 6
func BenchmarkValidate(b *testing.B) {
	minimal := &TrafficPolicy{Spec: TrafficPolicySpec{TargetRef: TargetRef{Kind: "Service", Name: "orders"}}}
	for _, c := range []struct {
		name string
		p    *TrafficPolicy
	}{{"minimal", minimal}, {"every-field", valid()}} {
		b.Run("policy="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if errs := c.p.Validate(); len(errs) > 0 {
					b.Fatal(errs)
				}
			}
		})
	}
}
