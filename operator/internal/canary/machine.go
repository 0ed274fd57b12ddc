package canary

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshplane.dev/operator/api/v1alpha1"
)

// Reasons of the Canary condition, besides the phases Progressing, Paused, Promoted and RolledBack.
const (
	// ReasonAborted: spec.canary.abort sent every call back to stable.
	ReasonAborted = "Aborted"
	// ReasonCheckFailed: a check failed, not yet enough of them to roll back.
	ReasonCheckFailed = "CheckFailed"
	// ReasonInsufficientTraffic: the last check saw fewer calls than minRequests; the step holds.
	ReasonInsufficientTraffic = "InsufficientTraffic"
	// ReasonMetricsUnavailable: Prometheus did not answer, or not with what a check needs; the step holds.
	ReasonMetricsUnavailable = "MetricsUnavailable"
	// ReasonPrometheusNotConfigured: the operator runs without --prometheus-url, so no check can run.
	ReasonPrometheusNotConfigured = "PrometheusNotConfigured"
)

// Subset is what one subset served during a check's window.
type Subset struct {
	// Requests and Errors count calls, as Prometheus' increase() extrapolates them (not whole numbers).
	Requests, Errors float64
	// Latency is the checked quantile of response time; NaN when none was asked for or Prometheus has no
	// value (no calls in the window).
	Latency time.Duration
	// HasLatency says whether Latency holds a value.
	HasLatency bool
}

// Measurement is what the metrics say about both subsets over one window.
type Measurement struct {
	Candidate, Stable Subset
}

// Input is everything the state machine decides from.
type Input struct {
	// Spec is the policy's spec; its canary is set and valid.
	Spec *v1alpha1.TrafficPolicySpec
	// Status is the rollout as last recorded, nil when there is none yet.
	Status *v1alpha1.CanaryStatus
	// Now is the time of the decision.
	Now time.Time
	// Measure returns the metrics of both subsets over the window ending now. Nil when the operator has
	// no metrics source: the rollout then never moves.
	Measure func(window time.Duration) (Measurement, error)
}

// Event is a change worth announcing as a Kubernetes Event.
type Event struct {
	Warning         bool
	Reason, Message string
}

// Decision is the rollout's next state.
type Decision struct {
	// Status is the rollout after the decision; its weight is what the candidate should get now.
	Status v1alpha1.CanaryStatus
	// Condition is the Canary condition's status, reason and message.
	Condition metav1.ConditionStatus
	Reason    string
	// Requeue is when to decide again; 0 means only when something changes.
	Requeue time.Duration
	// Check is the check this decision made, if any.
	Check *v1alpha1.CanaryCheck
	// Event announces a start, a step, a promotion or a rollback.
	Event *Event
}

// Next decides what the rollout does now: start, wait for the next check, run it and move on, hold, or
// roll back; pause and abort come first. It is re-entrant over its own status: a decision made again from
// the same status at the same time decides the same, so the operator can resume after a restart without
// restarting the rollout or skipping a check (a check overdue after a restart runs once).
func Next(in Input) Decision {
	c := in.Spec.Canary
	plan := NewPlan(c)
	rev := Revision(in.Spec)
	st := v1alpha1.CanaryStatus{Phase: v1alpha1.CanaryInitialized, Revision: rev}
	if in.Status != nil && in.Status.Revision == rev {
		st = *in.Status.DeepCopy()
	}
	d := Decision{}
	now := metav1.NewMicroTime(in.Now)
	where := fmt.Sprintf("%s at %d%%", c.Candidate, st.Weight)

	if c.Abort {
		if st.Phase != v1alpha1.CanaryRolledBack {
			d.Event = &Event{Warning: true, Reason: string(v1alpha1.CanaryRolledBack),
				Message: fmt.Sprintf("aborted (spec.canary.abort) with %s: every call goes to %s", where, c.Stable)}
		}
		rollBack(&st)
		st.Message = fmt.Sprintf("aborted: every call goes to %s; unset spec.canary.abort to start the rollout over", c.Stable)
		return d.with(st, metav1.ConditionFalse, ReasonAborted)
	}
	switch st.Phase {
	case v1alpha1.CanaryPromoted:
		return d.with(st, metav1.ConditionTrue, string(v1alpha1.CanaryPromoted))
	case v1alpha1.CanaryRolledBack:
		return d.with(st, metav1.ConditionFalse, string(v1alpha1.CanaryRolledBack))
	}
	if in.Measure == nil {
		st.NextCheck = nil
		st.Message = fmt.Sprintf("the operator runs without --prometheus-url, so it cannot check %s: the rollout holds with %s", c.Candidate, where)
		return d.with(st, metav1.ConditionFalse, ReasonPrometheusNotConfigured)
	}
	if c.Paused {
		if st.Phase != v1alpha1.CanaryInitialized {
			st.Phase = v1alpha1.CanaryPaused
		}
		st.NextCheck = nil
		st.Message = fmt.Sprintf("paused (spec.canary.paused) with %s; the next check comes %s after it is unset", where, plan.Interval)
		return d.with(st, metav1.ConditionUnknown, string(v1alpha1.CanaryPaused))
	}
	if st.Phase == v1alpha1.CanaryPaused {
		// Resumed: the next check measures a whole interval from now, none of it paused.
		st.Phase = v1alpha1.CanaryProgressing
		st.NextCheck = ptrTime(in.Now.Add(plan.Interval))
	}
	if st.Phase == v1alpha1.CanaryInitialized || st.Weight == 0 {
		moveTo(&st, plan, 0, in.Now)
		st.Message = fmt.Sprintf("%s at %d%% (step 1 of %d); first check at %s", c.Candidate, st.Weight, len(plan.Steps), st.NextCheck.UTC().Format(time.RFC3339))
		d.Event = &Event{Reason: string(v1alpha1.CanaryProgressing), Message: fmt.Sprintf("rollout of %s started: %d%% of calls", c.Candidate, st.Weight)}
		d.Requeue = plan.Interval
		return d.with(st, metav1.ConditionUnknown, string(v1alpha1.CanaryProgressing))
	}
	if st.NextCheck == nil {
		st.NextCheck = ptrTime(in.Now.Add(plan.Interval))
	}
	if wait := st.NextCheck.Sub(in.Now); wait > 0 {
		d.Requeue = wait
		return d.with(st, metav1.ConditionUnknown, lastReason(st))
	}

	m, err := in.Measure(plan.Interval)
	check := judge(plan, st.Weight, now, m, err)
	st.LastCheck, d.Check = check, check
	st.NextCheck = ptrTime(in.Now.Add(plan.Interval))
	d.Requeue = plan.Interval
	switch check.Result {
	case v1alpha1.CheckMetricsUnavailable:
		st.Message = check.Message + "; " + where + " holds until Prometheus answers"
		return d.with(st, metav1.ConditionUnknown, ReasonMetricsUnavailable)
	case v1alpha1.CheckInsufficientTraffic:
		st.Holds++
		if plan.MaxHolds == 0 || st.Holds <= plan.MaxHolds {
			st.Message = fmt.Sprintf("%s; %s holds (%s in a row)", check.Message, where, count(int(st.Holds), "hold"))
			return d.with(st, metav1.ConditionUnknown, ReasonInsufficientTraffic)
		}
		check.Message += fmt.Sprintf("; %s in a row, more than maxHolds %d, counts as a failed check", count(int(st.Holds), "hold"), plan.MaxHolds)
	case v1alpha1.CheckPassed:
		st.Holds = 0
		if st.Weight >= 100 {
			st.Phase, st.NextCheck = v1alpha1.CanaryPromoted, nil
			st.Message = fmt.Sprintf("%s serves every call. Next, in one edit: remove spec.canary and set spec.split to %s: 100 (and %s: 0, or drop it once its pods are gone)",
				c.Candidate, c.Candidate, c.Stable)
			d.Event, d.Requeue = &Event{Reason: string(v1alpha1.CanaryPromoted), Message: fmt.Sprintf("%s promoted: %s", c.Candidate, check.Message)}, 0
			return d.with(st, metav1.ConditionTrue, string(v1alpha1.CanaryPromoted))
		}
		from := st.Weight
		moveTo(&st, plan, st.Weight, in.Now)
		st.Message = fmt.Sprintf("%s at %d%% (step %d of %d) after passing at %d%%; next check at %s", c.Candidate, st.Weight, st.Step, len(plan.Steps), from, st.NextCheck.UTC().Format(time.RFC3339))
		d.Event = &Event{Reason: string(v1alpha1.CanaryProgressing), Message: fmt.Sprintf("%s passed at %d%% (%s): now %d%%", c.Candidate, from, check.Message, st.Weight)}
		return d.with(st, metav1.ConditionUnknown, string(v1alpha1.CanaryProgressing))
	case v1alpha1.CheckFailed:
		st.Holds = 0
	}

	// A failed check, or a hold beyond maxHolds.
	st.FailedChecks++
	if st.FailedChecks < plan.FailureThreshold {
		st.Message = fmt.Sprintf("check failed (%d of %d that roll back): %s; %s holds", st.FailedChecks, plan.FailureThreshold, check.Message, where)
		return d.with(st, metav1.ConditionUnknown, ReasonCheckFailed)
	}
	d.Event = &Event{Warning: true, Reason: string(v1alpha1.CanaryRolledBack),
		Message: fmt.Sprintf("rolled back %s from %d%% after %s: %s", c.Candidate, st.Weight, count(int(st.FailedChecks), "failed check"), check.Message)}
	rollBack(&st)
	st.Message = fmt.Sprintf("rolled back after %s (last: %s): every call goes to %s; change spec.canary or %s's labels to try again",
		count(int(st.FailedChecks), "failed check"), check.Message, c.Stable, c.Candidate)
	d.Requeue = 0
	return d.with(st, metav1.ConditionFalse, string(v1alpha1.CanaryRolledBack))
}

func (d Decision) with(st v1alpha1.CanaryStatus, cond metav1.ConditionStatus, reason string) Decision {
	d.Status, d.Condition, d.Reason = st, cond, reason
	return d
}

// lastReason is the Canary condition's reason while a progressing rollout waits for its next check: what
// the last check said.
func lastReason(st v1alpha1.CanaryStatus) string {
	if st.LastCheck != nil && st.LastCheck.Weight == st.Weight {
		switch st.LastCheck.Result {
		case v1alpha1.CheckInsufficientTraffic:
			return ReasonInsufficientTraffic
		case v1alpha1.CheckMetricsUnavailable:
			return ReasonMetricsUnavailable
		case v1alpha1.CheckFailed:
			return ReasonCheckFailed
		}
	}
	return string(v1alpha1.CanaryProgressing)
}

// moveTo puts the candidate at the first step above weight: the steps as the spec lists them now.
func moveTo(st *v1alpha1.CanaryStatus, plan Plan, weight int32, now time.Time) {
	i := slices.IndexFunc(plan.Steps, func(w int32) bool { return w > weight })
	if i < 0 {
		i = len(plan.Steps) - 1
	}
	st.Phase, st.Weight, st.Step, st.Holds = v1alpha1.CanaryProgressing, plan.Steps[i], int32(i+1), 0
	st.StepStarted, st.NextCheck = ptrTime(now), ptrTime(now.Add(plan.Interval))
}

func rollBack(st *v1alpha1.CanaryStatus) {
	st.Phase, st.Weight, st.Step, st.NextCheck = v1alpha1.CanaryRolledBack, 0, 0, nil
}

// judge turns a measurement into a check: MetricsUnavailable without one, InsufficientTraffic below
// minRequests (never a pass on no data), else Passed or Failed against the plan's thresholds.
func judge(plan Plan, weight int32, now metav1.MicroTime, m Measurement, err error) *v1alpha1.CanaryCheck {
	check := &v1alpha1.CanaryCheck{Time: now, Window: plan.Interval.String(), Weight: weight, Thresholds: plan.Thresholds()}
	if err != nil {
		check.Result, check.Message = v1alpha1.CheckMetricsUnavailable, "no metrics: "+err.Error()
		return check
	}
	check.Candidate, check.Stable = measured(m.Candidate, plan), measured(m.Stable, plan)
	cand := m.Candidate
	if cand.Requests < float64(plan.MinRequests) {
		check.Result = v1alpha1.CheckInsufficientTraffic
		check.Message = fmt.Sprintf("%s served %d calls in %s, fewer than minRequests %d", plan.Candidate, int64(math.Round(cand.Requests)), plan.Interval, plan.MinRequests)
		return check
	}
	var broken, held []string
	errRatio := ratio(cand)
	if errRatio > plan.MaxErrorRatio {
		broken = append(broken, fmt.Sprintf("success rate %s below %s", check.Candidate.SuccessRate, check.Thresholds.MinSuccessRate))
	}
	if plan.StableMargin >= 0 && m.Stable.Requests >= float64(plan.MinRequests) {
		if stableRatio := ratio(m.Stable); errRatio > stableRatio+plan.StableMargin {
			broken = append(broken, fmt.Sprintf("error ratio %s exceeds %s's %s by more than %s",
				percent(errRatio, 3), plan.Stable, percent(stableRatio, 3), check.Thresholds.MaxErrorRatioOverStable))
		}
	}
	if plan.LatencyQuantile > 0 {
		switch {
		case !cand.HasLatency:
			held = append(held, "no latency value for "+plan.Candidate)
		case cand.Latency > plan.MaxLatency:
			broken = append(broken, fmt.Sprintf("%s latency %s above %s", quantileName(plan.LatencyQuantile), check.Candidate.Latency, plan.MaxLatency))
		}
	}
	switch {
	case len(broken) > 0:
		check.Result, check.Message = v1alpha1.CheckFailed, strings.Join(broken, "; ")
	case len(held) > 0:
		check.Result, check.Message = v1alpha1.CheckMetricsUnavailable, strings.Join(held, "; ")
	default:
		check.Result = v1alpha1.CheckPassed
		check.Message = fmt.Sprintf("success rate %s ≥ %s over %d calls", check.Candidate.SuccessRate, check.Thresholds.MinSuccessRate, check.Candidate.Requests)
		if plan.LatencyQuantile > 0 {
			check.Message += fmt.Sprintf(", %s %s ≤ %s", quantileName(plan.LatencyQuantile), check.Candidate.Latency, plan.MaxLatency)
		}
	}
	return check
}

// ratio is a subset's error ratio; 0 without requests.
func ratio(s Subset) float64 {
	if s.Requests <= 0 {
		return 0
	}
	return min(s.Errors/s.Requests, 1)
}

func measured(s Subset, plan Plan) *v1alpha1.SubsetMeasurement {
	out := &v1alpha1.SubsetMeasurement{Requests: int64(math.Round(s.Requests))}
	if s.Requests > 0 {
		// Three decimals, truncated: a rate just below a threshold never shows as equal to it.
		out.SuccessRate = fmt.Sprintf("%.3f%%", math.Floor((1-ratio(s))*100_000)/1000)
	}
	if plan.LatencyQuantile > 0 && s.HasLatency {
		out.Latency = s.Latency.Round(time.Millisecond).String()
		if s.Latency < time.Millisecond {
			out.Latency = s.Latency.Round(time.Microsecond).String()
		}
	}
	return out
}

func ptrTime(t time.Time) *metav1.MicroTime {
	v := metav1.NewMicroTime(t)
	return &v
}
