package scenario

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"meshplane.dev/operator/api/v1alpha1"
)

// Policy returns the service's TrafficPolicy with spec set by the options, ready for kubectl apply.
// Every step applies a whole policy, so what an earlier step set does not linger.
func (m *Mesh) Policy(opts ...func(*v1alpha1.TrafficPolicySpec)) *v1alpha1.TrafficPolicy {
	p := &v1alpha1.TrafficPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "TrafficPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: m.Service, Namespace: m.Namespace},
		Spec:       v1alpha1.TrafficPolicySpec{TargetRef: v1alpha1.TargetRef{Kind: "Service", Name: m.Service}},
	}
	for _, o := range opts {
		o(&p.Spec)
	}
	return p
}

// NoRetries sets retries.attempts: 0, so calls show the routing alone.
func NoRetries(s *v1alpha1.TrafficPolicySpec) {
	s.Retries = &v1alpha1.Retries{Attempts: ptr.To[int32](0)}
}

// WithRetries sets retries.attempts and retryOn.
func WithRetries(attempts int32, on ...v1alpha1.RetryCondition) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) {
		s.Retries = &v1alpha1.Retries{Attempts: ptr.To(attempts), RetryOn: on}
	}
}

// WithTimeout sets timeout.
func WithTimeout(d time.Duration) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) { s.Timeout = ptr.To(APIDuration(d)) }
}

// APIDuration writes d the way the TrafficPolicy API takes durations (Gateway API style: 300ms, 2s,
// never fractions such as 2.5s), to the millisecond.
func APIDuration(d time.Duration) v1alpha1.Duration {
	if d%time.Second == 0 {
		return v1alpha1.Duration(fmt.Sprintf("%ds", d/time.Second))
	}
	return v1alpha1.Duration(fmt.Sprintf("%dms", d.Milliseconds()))
}

// WithSplit routes weight percent to subset a (version label a) and the rest to subset b.
func WithSplit(a, b string, weight int32) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) {
		s.Split = []v1alpha1.Subset{
			{Subset: a, Labels: map[string]v1alpha1.LabelValue{"version": v1alpha1.LabelValue(a)}, Weight: ptr.To(weight)},
			{Subset: b, Labels: map[string]v1alpha1.LabelValue{"version": v1alpha1.LabelValue(b)}, Weight: ptr.To(100 - weight)},
		}
	}
}

// WithCircuitBreaker sets circuitBreaker.
func WithCircuitBreaker(cb v1alpha1.CircuitBreaker) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) { s.CircuitBreaker = &cb }
}

// Tolerance is the half-width of the band a binomial proportion p observed over n trials stays in
// except about once in 15,000 runs (4 standard deviations); never below one trial's worth.
func Tolerance(p float64, n int) float64 {
	if n == 0 {
		return 1
	}
	return max(4*math.Sqrt(p*(1-p)/float64(n)), 1/float64(n))
}

func within(field, what string, got, want, tol float64) Prediction {
	p := Prediction{Expected: fmt.Sprintf("%s %.3f ± %.3f", what, want, tol), Measured: fmt.Sprintf("%s %.3f", what, got)}
	if math.Abs(got-want) > tol {
		p.Err = fmt.Errorf("%s: %s %.3f, want %.3f ± %.3f", field, what, got, want, tol)
	}
	return p
}

// CanarySplit shows VirtualService route weights: first no split (round robin over both instances),
// then weight percent to subset a and the rest to b, over calls calls each.
func (m *Mesh) CanarySplit(a, b string, weight int32, calls int) Scenario {
	const field = "VirtualService http[].route[].weight (DestinationRule subsets)"
	share := func(want float64) func(Observed) Prediction {
		return func(o Observed) Prediction {
			return within(field, a+" share", o.Share(m.Instances, a), want, Tolerance(want, o.Calls))
		}
	}
	return Scenario{Name: "canary split", Field: field, Steps: []Step{
		{Label: "no split", Policy: m.Policy(NoRetries), Calls: calls, Concurrency: 4, Predict: share(0.5)},
		{Label: fmt.Sprintf("split %s=%d %s=%d", a, weight, b, 100-weight), Policy: m.Policy(NoRetries, WithSplit(a, b, weight)),
			Calls: calls, Concurrency: 4, Predict: share(float64(weight) / 100)},
	}}
}

// Retries shows a retry policy against a failure rate: every instance fails errorRate of calls with
// UNAVAILABLE; with attempts: 0 the success rate is 1-errorRate, with n retries 1-errorRate^(n+1)
// (gRPC allows at most 4 retries).
func (m *Mesh) Retries(errorRate float64, attempts int32, calls int) Scenario {
	const field = "VirtualService http[].retries.attempts / retryOn unavailable"
	faults := map[string]string{"*": fmt.Sprintf(`[{"target":%q,"errorRate":%g,"grpcCode":"UNAVAILABLE"}]`, m.Method, errorRate)}
	rate := func(retries int32) func(Observed) Prediction {
		want := 1 - math.Pow(errorRate, float64(min(retries, 4)+1))
		return func(o Observed) Prediction {
			return within(field, "success rate", o.SuccessRate(), want, Tolerance(want, o.Calls))
		}
	}
	return Scenario{Name: "retries", Field: field, Steps: []Step{
		{Label: "retries.attempts: 0", Policy: m.Policy(NoRetries), Faults: faults, Calls: calls, Concurrency: 4, Predict: rate(0)},
		{Label: fmt.Sprintf("retries.attempts: %d on unavailable", attempts), Policy: m.Policy(WithRetries(attempts, "unavailable")),
			Faults: faults, Calls: calls, Concurrency: 4, Predict: rate(attempts)},
	}}
}

// TimeoutTolerance is how late after the policy timeout a call may end and still count as cut off by
// it: the client's own scheduling on a busy machine.
const TimeoutTolerance = 500 * time.Millisecond

// Timeout shows a route timeout: every instance answers after delay; with timeout above delay every
// call succeeds after about delay, with timeout below it every call ends DEADLINE_EXCEEDED after
// timeout (within TimeoutTolerance), long before the answer would come. The callers' own deadline is
// well above both.
func (m *Mesh) Timeout(delay, timeout time.Duration, calls int) Scenario {
	const field = "VirtualService http[].timeout (xDS max_stream_duration)"
	faults := map[string]string{"*": fmt.Sprintf(`[{"target":%q,"delay":%q}]`, m.Method, delay)}
	generous := delay + time.Second
	return Scenario{Name: "timeout", Field: field, Steps: []Step{
		{Label: "timeout: " + string(APIDuration(generous)), Policy: m.Policy(NoRetries, WithTimeout(generous)), Faults: faults,
			Calls: calls, Concurrency: calls, Deadline: 3 * generous, Predict: func(o Observed) Prediction {
				p := Prediction{Expected: fmt.Sprintf("all OK after ≥ %s", delay)}
				if o.OK != o.Calls || o.Quantile(0) < delay {
					p.Err = fmt.Errorf("%s: %d of %d OK, fastest %s; want all OK, none faster than the %s delay", field, o.OK, o.Calls, o.Quantile(0), delay)
				}
				return p
			}},
		{Label: "timeout: " + string(APIDuration(timeout)), Policy: m.Policy(NoRetries, WithTimeout(timeout)), Faults: faults,
			Calls: calls, Concurrency: calls, Deadline: 3 * generous, Predict: func(o Observed) Prediction {
				p := Prediction{Expected: fmt.Sprintf("all DEADLINE_EXCEEDED in [%s, %s]", timeout, timeout+TimeoutTolerance)}
				switch {
				case o.Codes[codes.DeadlineExceeded] != o.Calls:
					p.Err = fmt.Errorf("%s: codes %v, want all %d DEADLINE_EXCEEDED", field, o.Codes, o.Calls)
				case o.Quantile(0) < timeout || o.Quantile(1) > timeout+TimeoutTolerance:
					p.Err = fmt.Errorf("%s: calls ended after %s to %s, want %s to %s", field, o.Quantile(0), o.Quantile(1), timeout, timeout+TimeoutTolerance)
				}
				return p
			}},
	}}
}

// MaxRequests shows the circuit breaker's request limit: concurrent calls to slow instances; without a
// limit all succeed, with circuitBreaker.maxRequests n at most n do and gRPC fails the rest at once
// with UNAVAILABLE.
func (m *Mesh) MaxRequests(limit int32, delay time.Duration, concurrent int) Scenario {
	const field = "DestinationRule connectionPool.http.http2MaxRequests (xDS circuit_breakers max_requests)"
	faults := map[string]string{"*": fmt.Sprintf(`[{"target":%q,"delay":%q}]`, m.Method, delay)}
	return Scenario{Name: "max requests", Field: field, Steps: []Step{
		{Label: "no limit", Policy: m.Policy(NoRetries), Faults: faults, Calls: concurrent, Concurrency: concurrent,
			Predict: func(o Observed) Prediction {
				p := Prediction{Expected: fmt.Sprintf("all %d OK", concurrent)}
				if o.OK != o.Calls {
					p.Err = fmt.Errorf("%s: %d of %d OK without a limit (codes %v)", field, o.OK, o.Calls, o.Codes)
				}
				return p
			}},
		{Label: fmt.Sprintf("circuitBreaker.maxRequests: %d", limit),
			Policy: m.Policy(NoRetries, WithCircuitBreaker(v1alpha1.CircuitBreaker{MaxRequests: ptr.To(limit)})),
			Faults: faults, Calls: concurrent, Concurrency: concurrent, Predict: func(o Observed) Prediction {
				p := Prediction{Expected: fmt.Sprintf("1 to %d OK, the rest UNAVAILABLE", limit)}
				if o.OK < 1 || o.OK > int(limit) || o.OK+o.Codes[codes.Unavailable] != o.Calls {
					p.Err = fmt.Errorf("%s: %d OK, codes %v; want 1 to %d OK and the rest UNAVAILABLE", field, o.OK, o.Codes, limit)
				}
				return p
			}},
	}}
}

// OutlierDetection shows what proxyless gRPC does with outlier detection: instance bad fails every
// call with UNAVAILABLE; the policy asks to eject after consecutiveErrors errors, which an Envoy
// sidecar would do within a handful of calls, but istiod sends gRPC no outlier detection, so the bad
// instance keeps its round-robin share (the prediction checked). Then the bad instance is marked
// unhealthy in the registry, as a failed health check would: istiod stops sending its endpoint and all
// traffic moves to the others.
func (m *Mesh) OutlierDetection(bad string, consecutiveErrors int32, calls int) Scenario {
	const field = "DestinationRule trafficPolicy.outlierDetection.consecutive5xxErrors"
	faults := map[string]string{bad: fmt.Sprintf(`[{"target":%q,"errorRate":1,"grpcCode":"UNAVAILABLE"}]`, m.Method)}
	policy := m.Policy(NoRetries, WithCircuitBreaker(v1alpha1.CircuitBreaker{
		ConsecutiveErrors: ptr.To(consecutiveErrors), Interval: ptr.To(v1alpha1.Duration("1s")),
		BaseEjectionTime: ptr.To(v1alpha1.Duration("1m")), MaxEjectionPercent: ptr.To[int32](50),
	}))
	healthy := 1 - 1/float64(len(m.Instances))
	return Scenario{Name: "outlier detection", Field: field, Steps: []Step{
		{Label: fmt.Sprintf("consecutiveErrors: %d, %s failing", consecutiveErrors, bad), Policy: policy, Faults: faults,
			Calls: calls, Concurrency: 1, Predict: func(o Observed) Prediction {
				p := within(field+" (not sent to proxyless gRPC)", "success rate", o.SuccessRate(), healthy, Tolerance(healthy, o.Calls))
				p.Expected += fmt.Sprintf(" (not ejected; an Envoy sidecar would eject %s after %d errors)", bad, consecutiveErrors)
				return p
			}},
		{Label: bad + " unhealthy (WorkloadEntry Healthy=False)", Policy: policy, Faults: faults, Unhealthy: []string{bad},
			Calls: calls, Concurrency: 1, Predict: func(o Observed) Prediction {
				p := Prediction{Expected: "success rate 1.000, " + bad + " serves nothing"}
				if o.OK != o.Calls || o.Served[bad] != 0 {
					p.Err = fmt.Errorf("WorkloadEntry health (EDS): %d of %d OK, %s served %d; want all OK and none", o.OK, o.Calls, bad, o.Served[bad])
				}
				return p
			}},
	}}
}
