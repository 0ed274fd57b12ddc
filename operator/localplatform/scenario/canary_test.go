package scenario_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"meshplane.dev/operator/localplatform/scenario"
)

// The canary tests run spec.canary on real traffic (see scenario.Mesh.CanaryPromote and the others):
// Prometheus scrapes payments v1 and v2 every second, so steps are 4 seconds long and a rollout takes
// seconds; the real-world default is a minute or more with a 15s scrape. `make drill` runs the same
// scenarios on the local platform with its own scrape interval.
var rollout = scenario.Rollout{
	Stable: "v1", Candidate: "v2", Interval: 4 * time.Second, ScrapeInterval: time.Second, Settle: time.Second,
	// 100 calls a second, so a 20% step sees about 80 calls per window, above MinRequests.
	CallsPerSecond: 100, MinRequests: 20, MinCalls: 100,
}

// TestCanaryRollout runs four rollouts of payments v2 on real traffic, one after the other (each a new
// spec.canary, so a new rollout): healthy and promoted through every step, each step's share within its
// binomial tolerance; failing 20% of calls and rolled back within two intervals, a scrape and two seconds,
// then serving nothing; without traffic, held at the first step; aborted mid-rollout, every call back on
// v1 at once.
func TestCanaryRollout(t *testing.T) {
	logTailsOnFailure(t)
	ctx := context.Background()
	if err := mesh.SetFaults(ctx, "payments-v2", ""); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		run  func() (scenario.CanaryOutcome, error)
	}{
		{"healthy v2 is promoted", func() (scenario.CanaryOutcome, error) {
			return mesh.CanaryPromote(ctx, rollout, []int32{20, 50, 100})
		}},
		{"failing v2 is rolled back", func() (scenario.CanaryOutcome, error) {
			return mesh.CanaryRollback(ctx, rollout, []int32{20, 60, 100}, 0.2)
		}},
		{"no traffic holds at the first step", func() (scenario.CanaryOutcome, error) {
			return mesh.CanaryHold(ctx, rollout, []int32{25, 100}, 3)
		}},
		{"abort returns every call to v1 at once", func() (scenario.CanaryOutcome, error) {
			return mesh.CanaryAbort(ctx, rollout, []int32{10, 50, 100}, 50)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.run()
			var table strings.Builder
			if werr := scenario.WriteCanaryTable(&table, o, rollout.Candidate); werr != nil {
				t.Fatal(werr)
			}
			t.Logf("\n%s", table.String())
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Err(); err != nil {
				t.Error(err)
			}
		})
	}
	// The next tests apply policies of their own; this one leaves none with a canary.
	if _, err := mesh.ApplyAndWait(ctx, mesh.Policy(scenario.NoRetries)); err != nil {
		t.Fatal(err)
	}
}
