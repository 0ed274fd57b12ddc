package desiredstate_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

// FuzzBuild feeds raw JSON specs through strict decoding, Validate and Build. It must never panic, Build
// must accept exactly what Validate accepts, and the same input must build the same objects. The seed
// corpus (policytest.SpecCases and testdata/fuzz/FuzzBuild) runs in every `go test`; the differential
// test sends the same corpus to a real API server.
func FuzzBuild(f *testing.F) {
	for _, c := range pt.SpecCases {
		f.Add(c.Spec)
	}
	for _, c := range pt.MessageCases {
		f.Add(c.Spec)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		p, err := pt.Decode(pt.Document("shop", "fuzz", spec))
		if err != nil {
			return
		}
		svc := pt.Service("shop", p.Spec.TargetRef.Name)
		errs := p.Validate()
		s, err := desiredstate.Build(p, svc, desiredstate.PlatformDefaults())
		if len(errs) > 0 {
			if _, ok := errors.AsType[*desiredstate.InvalidError](err); !ok {
				t.Fatalf("Validate found %v but Build returned %v, want *InvalidError", errs, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Validate accepted the spec but Build failed: %v", err)
		}
		again, err := desiredstate.Build(p, svc, desiredstate.PlatformDefaults())
		if err != nil {
			t.Fatal(err)
		}
		first, second := s.Objects(), again.Objects()
		if len(first) != len(second) {
			t.Fatalf("Build is not deterministic: %d then %d objects", len(first), len(second))
		}
		for i := range first {
			if !proto.Equal(desiredstate.Spec(first[i]), desiredstate.Spec(second[i])) {
				t.Fatalf("Build is not deterministic for %T", first[i])
			}
			if _, err := desiredstate.Unstructured(first[i]); err != nil {
				t.Fatalf("Unstructured: %v", err)
			}
		}
	})
}
