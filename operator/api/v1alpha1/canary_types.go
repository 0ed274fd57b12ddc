package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Canary is a progressive rollout from one subset of spec.split to another: the candidate gets each
// weight of steps in turn; after interval at a weight the operator checks the candidate on live metrics
// (Prometheus) against the service's SLO, and moves on, holds, or rolls back. The rollout's progress is
// in status.canary.
//
// The CEL rules compare interval with scrapeInterval only when both are well-formed durations of at
// least 1ms, so a malformed one gets its own message alone.
//
// +kubebuilder:validation:XValidation:rule="!has(self.stable) || !has(self.candidate) || self.stable != self.candidate",message="must differ from stable: a rollout moves traffic from one subset to another",fieldPath=".candidate",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.interval) || !has(self.analysis) || !self.interval.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.interval) < duration('1ms') || (has(self.analysis.scrapeInterval) && (!self.analysis.scrapeInterval.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.analysis.scrapeInterval) < duration('1ms'))) || duration(self.interval) >= duration(has(self.analysis.scrapeInterval) ? self.analysis.scrapeInterval : '15s') + duration(has(self.analysis.scrapeInterval) ? self.analysis.scrapeInterval : '15s')",messageExpression="'%s is shorter than twice analysis.scrapeInterval (%s): a check needs two scrapes within the step to measure a rate'.format([self.interval, has(self.analysis.scrapeInterval) ? self.analysis.scrapeInterval : '15s'])",fieldPath=".interval",reason=FieldValueInvalid
type Canary struct {
	// stable names the subset of spec.split that serves the traffic today (its weight there is 100). A
	// rollback or an abort returns every call to it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Stable string `json:"stable"`

	// candidate names the subset of spec.split the rollout moves traffic to (its weight there is 0).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Candidate string `json:"candidate"`

	// steps are the candidate's weights in percent, in the order it gets them: strictly increasing,
	// ending at 100, e.g. [10, 25, 50, 100]. The candidate is promoted once the check at 100 passes.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=100
	// +kubebuilder:validation:XValidation:rule="self.isSorted() && self.all(w, self.exists_one(v, v == w))",message="must increase strictly, e.g. [10, 25, 50, 100]"
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || self[size(self) - 1] == 100",messageExpression="'must end at 100 (the candidate serves every call once promoted), not %d'.format([self[size(self) - 1]])"
	Steps []int32 `json:"steps"`

	// interval is how long the candidate stays at a weight before the check that decides whether it moves
	// on, and the window that check measures (e.g. 1m). At least twice analysis.scrapeInterval.
	// +required
	Interval Duration `json:"interval"`

	// analysis says how each check judges the candidate.
	// +required
	Analysis CanaryAnalysis `json:"analysis"`

	// paused holds the rollout at its current weight, with no checks, until it is unset; the check after
	// that comes a full interval later.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// abort rolls back at once: every call goes to stable, without waiting for a check. Unsetting it
	// starts the rollout over from its first step.
	// +optional
	Abort bool `json:"abort,omitempty"`
}

// Decimal is a non-negative decimal number written as a string, such as "99.9" or "14.4": up to three
// digits, then up to four decimals.
//
// +kubebuilder:validation:MaxLength=8
// +kubebuilder:validation:Pattern=`^[0-9]{1,3}([.][0-9]{1,4})?$`
type Decimal string

// Quantile is a quantile between 0 and 1 written as a string, such as "0.99".
//
// +kubebuilder:validation:MaxLength=6
// +kubebuilder:validation:Pattern=`^0[.][0-9]{1,4}$`
// +kubebuilder:validation:XValidation:rule="!self.matches('^0[.][0-9]{1,4}$') || double(self) > 0.0",message="must be above 0, e.g. 0.99"
type Quantile string

// CanaryAnalysis is how a check judges the candidate over the last interval: its success rate against the
// service's SLO and, optionally, against the stable subset's, and optionally its latency. A check with too
// few requests, or without metrics, holds the rollout: it never passes on no data.
//
// The rules read objective and maxBurnRate only when the pattern accepts them, so a malformed value gets
// the pattern's message alone.
//
// +kubebuilder:validation:XValidation:rule="!has(self.objective) || !self.objective.matches('^[0-9]{1,3}([.][0-9]{1,4})?$') || (double(self.objective) > 0.0 && double(self.objective) < 100.0)",messageExpression="'%s is not a percentage strictly between 0 and 100, such as 99.9'.format([self.objective])",fieldPath=".objective",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.maxBurnRate) || !self.maxBurnRate.matches('^[0-9]{1,3}([.][0-9]{1,4})?$') || double(self.maxBurnRate) > 0.0",message="must be above 0: it is how many times faster than the SLO allows the candidate may fail",fieldPath=".maxBurnRate",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.objective) || !has(self.maxBurnRate) || !self.objective.matches('^[0-9]{1,3}([.][0-9]{1,4})?$') || !self.maxBurnRate.matches('^[0-9]{1,3}([.][0-9]{1,4})?$') || double(self.objective) <= 0.0 || double(self.objective) >= 100.0 || double(self.maxBurnRate) <= 0.0 || double(self.maxBurnRate) * (100.0 - double(self.objective)) < 100.0",messageExpression="'maxBurnRate %s times the error budget of objective %s allows every call to fail: the check would pass anything; lower it'.format([self.maxBurnRate, self.objective])",fieldPath=".maxBurnRate",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.stableMargin) || !self.stableMargin.matches('^[0-9]{1,3}([.][0-9]{1,4})?$') || double(self.stableMargin) < 100.0",messageExpression="'%s is not a percentage below 100, such as 0.5'.format([self.stableMargin])",fieldPath=".stableMargin",reason=FieldValueInvalid
type CanaryAnalysis struct {
	// objective is the service's SLO: the percentage of calls that succeed, strictly between 0 and 100,
	// e.g. "99.9". Its error budget is 100 − objective percent of calls.
	// +required
	Objective Decimal `json:"objective"`

	// maxBurnRate is how fast the candidate may burn the error budget during a step: a check fails when the
	// candidate's error ratio exceeds maxBurnRate × (100 − objective) percent. With objective 99.9 and
	// maxBurnRate 10 the candidate may fail 1% of calls. Errors are server-side failures: HTTP 5xx and
	// the gRPC codes Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable and DataLoss.
	// +required
	MaxBurnRate Decimal `json:"maxBurnRate"`

	// stableMargin compares the candidate with the stable subset over the same window: a check fails when
	// the candidate's error ratio exceeds the stable's by more than this many percentage points, e.g.
	// "0.5". Not compared when the stable subset served fewer than minRequests calls (at weight 100).
	// Unset: the candidate is judged against the SLO alone.
	// +optional
	StableMargin *Decimal `json:"stableMargin,omitempty"`

	// latency bounds a quantile of the candidate's response time over the step. Unset: latency is not
	// checked.
	// +optional
	Latency *LatencyBound `json:"latency,omitempty"`

	// minRequests is the fewest calls the candidate must serve during a check's window for the check to
	// judge it; with fewer, the rollout holds at its weight (InsufficientTraffic) and checks again an
	// interval later.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	MinRequests *int32 `json:"minRequests,omitempty"`

	// maxHolds is how many checks in a row a step may hold for too little traffic; each further one counts
	// as a failed check. Unset: a step without traffic holds until traffic comes, never passing and never
	// failing.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxHolds *int32 `json:"maxHolds,omitempty"`

	// failureThreshold is how many failed checks, over the whole rollout, roll it back; a failed check
	// before that keeps the candidate at its weight and checks again an interval later. Default 2.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10
	FailureThreshold *int32 `json:"failureThreshold,omitempty"`

	// scrapeInterval is how often Prometheus scrapes the service's metrics (default 15s): a check's
	// window must hold two scrapes, so interval is at least twice it.
	// +optional
	ScrapeInterval *Duration `json:"scrapeInterval,omitempty"`
}

// LatencyBound bounds a quantile of the candidate's response time.
type LatencyBound struct {
	// quantile of the candidate's response times checked, e.g. "0.99".
	// +required
	Quantile Quantile `json:"quantile"`

	// max is the longest that quantile may be, e.g. 300ms.
	// +required
	Max Duration `json:"max"`
}

// CanaryPhase is where a rollout stands.
//
// +kubebuilder:validation:Enum=Initialized;Progressing;Paused;Promoted;RolledBack
type CanaryPhase string

// The phases of a rollout.
const (
	// CanaryInitialized: the rollout is set up with the candidate at weight 0 and has not started (the
	// Canary condition says what it waits for).
	CanaryInitialized CanaryPhase = "Initialized"
	// CanaryProgressing: the candidate is at one of the steps, waiting for its check.
	CanaryProgressing CanaryPhase = "Progressing"
	// CanaryPaused: spec.canary.paused holds the candidate at its weight.
	CanaryPaused CanaryPhase = "Paused"
	// CanaryPromoted: the candidate passed every step and serves every call.
	CanaryPromoted CanaryPhase = "Promoted"
	// CanaryRolledBack: checks failed or the rollout was aborted; every call goes to stable until
	// spec.canary or the labels of its subsets change.
	CanaryRolledBack CanaryPhase = "RolledBack"
)

// CanaryCheckResult is the verdict of one check.
type CanaryCheckResult string

// The results of a check.
const (
	// CheckPassed: the candidate met every threshold.
	CheckPassed CanaryCheckResult = "Passed"
	// CheckFailed: the candidate broke a threshold (the message says which).
	CheckFailed CanaryCheckResult = "Failed"
	// CheckInsufficientTraffic: the candidate served fewer than minRequests calls; the step holds.
	CheckInsufficientTraffic CanaryCheckResult = "InsufficientTraffic"
	// CheckMetricsUnavailable: Prometheus did not answer, or answered without a value it must have; the
	// step holds.
	CheckMetricsUnavailable CanaryCheckResult = "MetricsUnavailable"
)

// CanaryStatus is where a rollout stands, and its last check. The operator resumes a rollout from it
// (after a restart too), so it is the rollout's memory, not only a report.
type CanaryStatus struct {
	// phase is Initialized, Progressing, Paused, Promoted or RolledBack.
	Phase CanaryPhase `json:"phase"`
	// revision identifies what is rolled out: a hash of spec.canary (paused aside) and the labels of its
	// two subsets. When it changes, the rollout starts over.
	Revision string `json:"revision"`
	// weight is the candidate's share of calls now, in percent.
	Weight int32 `json:"weight"`
	// step is the position of weight in spec.canary.steps, from 1; 0 before the first step.
	// +optional
	Step int32 `json:"step,omitempty"`
	// stepStarted is when the candidate's current weight went into force (to the microsecond, as the
	// rollout's clock needs).
	// +optional
	StepStarted *metav1.MicroTime `json:"stepStarted,omitempty"`
	// nextCheck is when the next check is due, while the rollout progresses.
	// +optional
	NextCheck *metav1.MicroTime `json:"nextCheck,omitempty"`
	// holds counts the checks in a row that held this step for too little traffic.
	// +optional
	Holds int32 `json:"holds,omitempty"`
	// failedChecks counts the failed checks of this rollout.
	// +optional
	FailedChecks int32 `json:"failedChecks,omitempty"`
	// lastCheck is the most recent check, with what it measured and the thresholds it applied.
	// +optional
	LastCheck *CanaryCheck `json:"lastCheck,omitempty"`
	// message says what happens next, or what the team should do.
	// +optional
	Message string `json:"message,omitempty"`
}

// CanaryCheck is one check of the candidate: what was measured, against what, and the verdict.
type CanaryCheck struct {
	// time the check was made; it measured the window before it.
	Time metav1.MicroTime `json:"time"`
	// window is the span measured, e.g. 1m.
	Window string `json:"window"`
	// weight is the candidate's weight during the window.
	Weight int32 `json:"weight"`
	// result is Passed, Failed, InsufficientTraffic or MetricsUnavailable.
	Result CanaryCheckResult `json:"result"`
	// candidate is what the candidate subset served.
	// +optional
	Candidate *SubsetMeasurement `json:"candidate,omitempty"`
	// stable is what the stable subset served over the same window.
	// +optional
	Stable *SubsetMeasurement `json:"stable,omitempty"`
	// thresholds are the limits the check applied, derived from spec.canary.analysis.
	Thresholds CanaryThresholds `json:"thresholds"`
	// message explains the result: which threshold broke and by how much, or why there was no verdict.
	// +optional
	Message string `json:"message,omitempty"`
}

// SubsetMeasurement is what one subset served during a check's window.
type SubsetMeasurement struct {
	// requests is the number of calls served, rounded (Prometheus extrapolates counter increases).
	Requests int64 `json:"requests"`
	// successRate is the percentage of those calls that did not fail on the server's side, e.g.
	// "99.95%"; empty without requests.
	// +optional
	SuccessRate string `json:"successRate,omitempty"`
	// latency is the checked quantile of response time, e.g. "212ms"; empty when latency is not checked or
	// has no value.
	// +optional
	Latency string `json:"latency,omitempty"`
}

// CanaryThresholds are the limits a check applies, as derived from spec.canary.analysis.
type CanaryThresholds struct {
	// minSuccessRate is the lowest success rate the candidate may have: 100 − maxBurnRate × (100 −
	// objective) percent, e.g. "99.00%".
	MinSuccessRate string `json:"minSuccessRate"`
	// maxErrorRatioOverStable is stableMargin as percentage points, e.g. "0.50pp"; empty when not compared.
	// +optional
	MaxErrorRatioOverStable string `json:"maxErrorRatioOverStable,omitempty"`
	// maxLatency is the latency bound, e.g. "p99 ≤ 300ms"; empty when latency is not checked.
	// +optional
	MaxLatency string `json:"maxLatency,omitempty"`
	// minRequests is the fewest calls the candidate must serve for a verdict.
	MinRequests int32 `json:"minRequests"`
}
