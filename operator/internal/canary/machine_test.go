package canary_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/canary"
	pt "meshplane.dev/operator/test/policytest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const interval = 10 * time.Second

// spec is payments' policy: v1 stable, v2 the candidate over 10, 50, 100, a check every 10s that wants at
// least 10 calls and at most 1% errors (objective 99.9, burn 10), two failed checks to roll back.
func spec(change ...func(*v1alpha1.Canary)) *v1alpha1.TrafficPolicySpec {
	p := pt.Policy("shop", "payments", pt.Split("v1", 100, "v2", 0), pt.Canary("v1", "v2", "10s", []int32{10, 50, 100}, change...))
	if errs := p.Validate(); len(errs) > 0 {
		panic(errs.ToAggregate())
	}
	return &p.Spec
}

// healthy is a candidate and stable with 100 calls each, none failed.
var healthy = canary.Measurement{Candidate: canary.Subset{Requests: 100}, Stable: canary.Subset{Requests: 100}}

func measuring(m canary.Measurement, err error) func(time.Duration) (canary.Measurement, error) {
	return func(window time.Duration) (canary.Measurement, error) {
		if window != interval {
			return canary.Measurement{}, errors.New("measured a window other than the interval")
		}
		return m, err
	}
}

// notDue fails the test if the decision measures anything: no check is due.
func notDue(t *testing.T) func(time.Duration) (canary.Measurement, error) {
	return func(time.Duration) (canary.Measurement, error) {
		t.Error("measured before the check was due")
		return canary.Measurement{}, nil
	}
}

// run decides from status at now and returns the decision.
func run(s *v1alpha1.TrafficPolicySpec, st *v1alpha1.CanaryStatus, now time.Time, measure func(time.Duration) (canary.Measurement, error)) canary.Decision {
	return canary.Next(canary.Input{Spec: s, Status: st, Now: now, Measure: measure})
}

// at returns a status with the candidate at weight (step i), its check due at due.
func at(s *v1alpha1.TrafficPolicySpec, weight, step int32, due time.Time) *v1alpha1.CanaryStatus {
	started := metav1.NewMicroTime(due.Add(-interval))
	next := metav1.NewMicroTime(due)
	return &v1alpha1.CanaryStatus{Phase: v1alpha1.CanaryProgressing, Revision: canary.Revision(s), Weight: weight, Step: step,
		StepStarted: &started, NextCheck: &next}
}

// summary is what a person reads first: phase, weight, step, condition reason, counters.
type summary struct {
	Phase               v1alpha1.CanaryPhase
	Weight, Step        int32
	Reason              string
	Holds, FailedChecks int32
	Requeue             time.Duration
	Result              v1alpha1.CanaryCheckResult
	Event, WarningEvent bool
}

func summarize(d canary.Decision) summary {
	s := summary{Phase: d.Status.Phase, Weight: d.Status.Weight, Step: d.Status.Step, Reason: d.Reason,
		Holds: d.Status.Holds, FailedChecks: d.Status.FailedChecks, Requeue: d.Requeue}
	if d.Check != nil {
		s.Result = d.Check.Result
	}
	if d.Event != nil {
		s.Event, s.WarningEvent = true, d.Event.Warning
	}
	return s
}

func TestNext(t *testing.T) {
	s := spec()
	due := t0
	tests := []struct {
		name    string
		spec    *v1alpha1.TrafficPolicySpec
		status  *v1alpha1.CanaryStatus
		measure func(time.Duration) (canary.Measurement, error)
		want    summary
	}{
		{"a new rollout starts at the first step", s, nil, notDue(t),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "Progressing", Requeue: interval, Event: true}},
		{"before its check a step waits", s, at(s, 10, 1, due.Add(3*time.Second)), notDue(t),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "Progressing", Requeue: 3 * time.Second}},
		{"a passed check moves to the next step", s, at(s, 10, 1, due), measuring(healthy, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 50, Step: 2, Reason: "Progressing", Requeue: interval, Result: v1alpha1.CheckPassed, Event: true}},
		{"a check overdue by many intervals (a restart) runs once and moves one step", s, at(s, 10, 1, due.Add(-time.Hour)), measuring(healthy, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 50, Step: 2, Reason: "Progressing", Requeue: interval, Result: v1alpha1.CheckPassed, Event: true}},
		{"a passed check at 100 promotes", s, at(s, 100, 3, due), measuring(canary.Measurement{Candidate: canary.Subset{Requests: 100}}, nil),
			summary{Phase: v1alpha1.CanaryPromoted, Weight: 100, Step: 3, Reason: "Promoted", Result: v1alpha1.CheckPassed, Event: true}},
		{"too few calls hold the step", s, at(s, 10, 1, due), measuring(canary.Measurement{Candidate: canary.Subset{Requests: 9}, Stable: canary.Subset{Requests: 90}}, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "InsufficientTraffic", Holds: 1, Requeue: interval, Result: v1alpha1.CheckInsufficientTraffic}},
		{"no answer from Prometheus holds the step", s, at(s, 10, 1, due), measuring(canary.Measurement{}, errors.New("connection refused")),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "MetricsUnavailable", Requeue: interval, Result: v1alpha1.CheckMetricsUnavailable}},
		{"a failed check holds the step until the threshold", s, at(s, 10, 1, due), measuring(canary.Measurement{Candidate: canary.Subset{Requests: 100, Errors: 2}}, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "CheckFailed", FailedChecks: 1, Requeue: interval, Result: v1alpha1.CheckFailed}},
		{"the threshold's failed check rolls back at once", s, failedOnce(at(s, 50, 2, due)), measuring(canary.Measurement{Candidate: canary.Subset{Requests: 100, Errors: 2}}, nil),
			summary{Phase: v1alpha1.CanaryRolledBack, Reason: "RolledBack", FailedChecks: 2, Result: v1alpha1.CheckFailed, Event: true, WarningEvent: true}},
		{"an error ratio of exactly the limit passes", s, at(s, 10, 1, due), measuring(canary.Measurement{Candidate: canary.Subset{Requests: 100, Errors: 1}}, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 50, Step: 2, Reason: "Progressing", Requeue: interval, Result: v1alpha1.CheckPassed, Event: true}},
		{"worse than stable by more than the margin fails", spec(margin("0.1")), at(spec(margin("0.1")), 10, 1, due),
			measuring(canary.Measurement{Candidate: canary.Subset{Requests: 1000, Errors: 5}, Stable: canary.Subset{Requests: 9000, Errors: 0}}, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "CheckFailed", FailedChecks: 1, Requeue: interval, Result: v1alpha1.CheckFailed}},
		{"a stable without enough calls is not compared", spec(margin("0.1")), at(spec(margin("0.1")), 100, 3, due),
			measuring(canary.Measurement{Candidate: canary.Subset{Requests: 1000, Errors: 5}, Stable: canary.Subset{Requests: 2, Errors: 0}}, nil),
			summary{Phase: v1alpha1.CanaryPromoted, Weight: 100, Step: 3, Reason: "Promoted", Result: v1alpha1.CheckPassed, Event: true}},
		{"slower than the latency bound fails", spec(latency("0.99", "300ms")), at(spec(latency("0.99", "300ms")), 10, 1, due),
			measuring(canary.Measurement{Candidate: canary.Subset{Requests: 100, Latency: 310 * time.Millisecond, HasLatency: true}}, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "CheckFailed", FailedChecks: 1, Requeue: interval, Result: v1alpha1.CheckFailed}},
		{"no latency value holds", spec(latency("0.99", "300ms")), at(spec(latency("0.99", "300ms")), 10, 1, due),
			measuring(canary.Measurement{Candidate: canary.Subset{Requests: 100}}, nil),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "MetricsUnavailable", Requeue: interval, Result: v1alpha1.CheckMetricsUnavailable}},
		{"holds beyond maxHolds count as failed checks", spec(maxHolds(2), threshold(1)), held(at(spec(maxHolds(2), threshold(1)), 10, 1, due), 2),
			measuring(canary.Measurement{}, nil),
			summary{Phase: v1alpha1.CanaryRolledBack, Reason: "RolledBack", Holds: 3, FailedChecks: 1, Result: v1alpha1.CheckInsufficientTraffic, Event: true, WarningEvent: true}},
		{"abort rolls back at once, mid-step", spec(abort), at(spec(abort), 50, 2, due.Add(5*time.Second)), notDue(t),
			summary{Phase: v1alpha1.CanaryRolledBack, Reason: "Aborted", Event: true, WarningEvent: true}},
		{"pause holds the weight and checks nothing", spec(pause), at(s, 50, 2, due), notDue(t),
			summary{Phase: v1alpha1.CanaryPaused, Weight: 50, Step: 2, Reason: "Paused"}},
		{"unpaused, the next check is an interval away", s, paused(at(s, 50, 2, due.Add(-time.Hour))), notDue(t),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 50, Step: 2, Reason: "Progressing", Requeue: interval}},
		{"a rolled-back rollout stays rolled back", s, rolledBack(at(s, 50, 2, due)), notDue(t),
			summary{Phase: v1alpha1.CanaryRolledBack, Reason: "RolledBack"}},
		{"a rolled-back rollout starts over when the candidate's labels change", relabelled(s), rolledBack(at(s, 50, 2, due)), notDue(t),
			summary{Phase: v1alpha1.CanaryProgressing, Weight: 10, Step: 1, Reason: "Progressing", Requeue: interval, Event: true}},
		{"without Prometheus the rollout does not start", s, nil, nil,
			summary{Phase: v1alpha1.CanaryInitialized, Reason: "PrometheusNotConfigured"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarize(run(tt.spec, tt.status, t0, tt.measure))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

// A rollout driven from its own status, check after check, passes every step and is promoted after one
// interval per step; deciding again from the same status at the same time decides the same (what a
// restarted operator does).
func TestNextPromotesStepByStep(t *testing.T) {
	s := spec()
	var st *v1alpha1.CanaryStatus
	now := t0
	var weights []int32
	for range 10 {
		d := run(s, st, now, measuring(healthy, nil))
		again := run(s, st, now, measuring(healthy, nil))
		if diff := cmp.Diff(d, again); diff != "" {
			t.Fatalf("deciding twice from one status differs (-first +second):\n%s", diff)
		}
		st = &d.Status
		weights = append(weights, st.Weight)
		if st.Phase == v1alpha1.CanaryPromoted {
			break
		}
		now = now.Add(d.Requeue)
	}
	if diff := cmp.Diff([]int32{10, 50, 100, 100}, weights); diff != "" {
		t.Errorf("weights decision by decision (-want +got):\n%s", diff)
	}
	if got, want := now.Sub(t0), 3*interval; got != want {
		t.Errorf("promoted %s after the start, want %s (one interval per step)", got, want)
	}
	if !strings.Contains(st.Message, "remove spec.canary and set spec.split to v2: 100") {
		t.Errorf("promoted message %q does not say what to change next", st.Message)
	}
}

// The check records what it measured and the thresholds it applied, for status.
func TestCheckRecordsValues(t *testing.T) {
	s := spec(margin("0.5"), latency("0.99", "300ms"))
	d := run(s, at(s, 10, 1, t0), t0, measuring(canary.Measurement{
		Candidate: canary.Subset{Requests: 1000, Errors: 3, Latency: 212 * time.Millisecond, HasLatency: true},
		Stable:    canary.Subset{Requests: 9000, Errors: 9},
	}, nil))
	want := &v1alpha1.CanaryCheck{
		Time: metav1.NewMicroTime(t0), Window: "10s", Weight: 10, Result: v1alpha1.CheckPassed,
		Candidate:  &v1alpha1.SubsetMeasurement{Requests: 1000, SuccessRate: "99.700%", Latency: "212ms"},
		Stable:     &v1alpha1.SubsetMeasurement{Requests: 9000, SuccessRate: "99.900%"},
		Thresholds: v1alpha1.CanaryThresholds{MinSuccessRate: "99%", MaxErrorRatioOverStable: "0.5pp", MaxLatency: "p99 ≤ 300ms", MinRequests: 10},
		Message:    "success rate 99.700% ≥ 99% over 1000 calls, p99 212ms ≤ 300ms",
	}
	if diff := cmp.Diff(want, d.Check); diff != "" {
		t.Errorf("check (-want +got):\n%s", diff)
	}
}

func TestPlan(t *testing.T) {
	p := canary.NewPlan(spec(maxHolds(2), threshold(3), latency("0.999", "1s")).Canary)
	worst, bounded := p.WorstCase()
	if p.Fastest() != 30*time.Second || !bounded || worst != (3*3+2)*interval {
		t.Errorf("fastest %s, worst %s (bounded %v); want 30s and 1m50s", p.Fastest(), worst, bounded)
	}
	got := strings.Join(p.Describe(), "\n")
	for _, want := range []string{"10% → 50% → 100% of calls to v2 (the rest to v1), 10s each", "success rate ≥ 99%", "objective 99.9%, max burn rate 10",
		"p99.9 latency ≤ 1s", "fewer than 10 calls", "at 3 failed checks", "30s at the fastest; worst case 1m50s"} {
		if !strings.Contains(got, want) {
			t.Errorf("plan lacks %q:\n%s", want, got)
		}
	}
	if _, bounded := canary.NewPlan(spec().Canary).WorstCase(); bounded {
		t.Error("without maxHolds the worst case is bounded, want unbounded")
	}
}

// Pausing does not start a rollout over; changing what is rolled out does.
func TestRevision(t *testing.T) {
	base := canary.Revision(spec())
	if canary.Revision(spec(pause)) != base {
		t.Error("pausing changed the revision")
	}
	for name, s := range map[string]*v1alpha1.TrafficPolicySpec{
		"steps": spec(func(c *v1alpha1.Canary) { c.Steps = []int32{20, 100} }), "abort": spec(abort), "labels": relabelled(spec()),
	} {
		if canary.Revision(s) == base {
			t.Errorf("changing %s kept the revision", name)
		}
	}
}

func margin(m string) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) { v := v1alpha1.Decimal(m); c.Analysis.StableMargin = &v }
}

func latency(q, bound string) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) {
		c.Analysis.Latency = &v1alpha1.LatencyBound{Quantile: v1alpha1.Quantile(q), Max: v1alpha1.Duration(bound)}
	}
}

func maxHolds(n int32) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) { c.Analysis.MaxHolds = &n }
}

func threshold(n int32) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) { c.Analysis.FailureThreshold = &n }
}

func abort(c *v1alpha1.Canary) { c.Abort = true }
func pause(c *v1alpha1.Canary) { c.Paused = true }

func relabelled(s *v1alpha1.TrafficPolicySpec) *v1alpha1.TrafficPolicySpec {
	out := s.DeepCopy()
	out.Split[1].Labels = map[string]v1alpha1.LabelValue{"version": "v2.1"}
	return out
}

func failedOnce(st *v1alpha1.CanaryStatus) *v1alpha1.CanaryStatus    { st.FailedChecks = 1; return st }
func held(st *v1alpha1.CanaryStatus, n int32) *v1alpha1.CanaryStatus { st.Holds = n; return st }
func paused(st *v1alpha1.CanaryStatus) *v1alpha1.CanaryStatus {
	st.Phase = v1alpha1.CanaryPaused
	return st
}

func rolledBack(st *v1alpha1.CanaryStatus) *v1alpha1.CanaryStatus {
	st.Phase, st.Weight, st.Step, st.NextCheck = v1alpha1.CanaryRolledBack, 0, 0, nil
	return st
}
