package slo_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/dashboards/slo"
)

// TestTiers pins the SRE workbook's recommended burn rates for a 30-day objective: page at 2% of the
// budget in 1h (14.4) or 5% in 6h (6), ticket at 10% in 1d (3) or in 3d (1).
func TestTiers(t *testing.T) {
	var got []float64
	for _, tier := range slo.Tiers {
		got = append(got, tier.Burn())
	}
	want := []float64{14.4, 6, 3, 1}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
		t.Errorf("burn rates (-want +got):\n%s", diff)
	}
	for _, tier := range slo.Tiers {
		for _, w := range []time.Duration{tier.Long, tier.Short} {
			found := false
			for _, rec := range slo.Windows() {
				found = found || rec == w
			}
			if !found {
				t.Errorf("tier window %s is not recorded by Windows()", w)
			}
		}
		if tier.Short >= tier.Long || tier.For >= tier.Long {
			t.Errorf("tier %s: short window %s and for %s must be shorter than the long window", tier.Long, tier.Short, tier.For)
		}
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Minute: "5m", time.Hour: "1h", 6 * time.Hour: "6h", 24 * time.Hour: "1d", 72 * time.Hour: "3d",
		30 * 24 * time.Hour: "30d", 90 * time.Second: "90s",
	} {
		if got := slo.Duration(d); got != want {
			t.Errorf("Duration(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := slo.All[0]
	for _, s := range slo.All {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
	tests := []struct {
		name  string
		edit  func(*slo.SLO)
		field string
	}{
		{"objective 1", func(s *slo.SLO) { s.Objective = 1 }, "objective"},
		{"objective above 1", func(s *slo.SLO) { s.Objective = 99.9 }, "objective"},
		{"no service", func(s *slo.SLO) { s.Service = "" }, "service"},
		{"no name", func(s *slo.SLO) { s.Name = "" }, "name"},
		{"no sli", func(s *slo.SLO) { s.SLI = slo.SLI{} }, "sli"},
	}
	for _, tt := range tests {
		s := good
		tt.edit(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: got error %v, want one naming %s", tt.name, err, tt.field)
		}
	}
}

func TestNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range slo.All {
		if seen[s.Name] {
			t.Errorf("two SLOs are named %s: their recorded series would collide", s.Name)
		}
		seen[s.Name] = true
	}
}
