package scenario

import (
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"k8s.io/utils/ptr"

	"meshplane.dev/operator/api/v1alpha1"
)

// The route scenarios set two methods of one service side by side: Mesh.Method (payments' Charge) and
// another (GetCharge), each counted on the servers by grpc_server_handled_total{grpc_method}. Routes
// match Mesh.Method by service/method (an exact path) and the other method by its bare name (a path
// regex), so proxyless gRPC shows both kinds of match working.

// WithRoutes sets routes.
func WithRoutes(routes ...v1alpha1.Route) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) { s.Routes = routes }
}

// methodRoute is a route named name for method: by its bare name, or by service/method when service
// is set.
func methodRoute(name, service, method string) v1alpha1.Route {
	if service != "" {
		method = service + "/" + method
	}
	return v1alpha1.Route{Name: name, Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: method}}}
}

// faultsOn returns fault rules (JSON, for the admin API) giving each method rule.
func faultsOn(rule string, methods ...string) string {
	out := "["
	for i, m := range methods {
		if i > 0 {
			out += ","
		}
		out += fmt.Sprintf(`{"target":%q,%s}`, m, rule)
	}
	return out + "]"
}

// RouteTimeouts shows two methods with different timeouts: every instance answers both after delay.
// The top-level timeout (delay + 1s) lets both through; a route gives other a timeout below delay, so
// its calls end DEADLINE_EXCEEDED at that timeout while Mesh.Method's calls still succeed.
func (m *Mesh) RouteTimeouts(other string, delay, timeout time.Duration, calls int) Scenario {
	const field = "VirtualService http[].timeout per route (xDS route max_stream_duration)"
	faults := map[string]string{"*": faultsOn(fmt.Sprintf(`"delay":%q`, delay), m.Method, other)}
	generous := delay + time.Second
	route := methodRoute("slow-cut", "", other)
	route.Timeout = ptr.To(APIDuration(timeout))
	withRoute := m.Policy(NoRetries, WithTimeout(generous), WithRoutes(route))
	allOK := func(method string) func(Observed) Prediction {
		return func(o Observed) Prediction {
			p := Prediction{Expected: fmt.Sprintf("all OK after ≥ %s", delay)}
			if o.OK != o.Calls || o.Quantile(0) < delay {
				p.Err = fmt.Errorf("%s: %s: %d of %d OK, fastest %s; want all OK, none faster than the %s delay", field, method, o.OK, o.Calls, o.Quantile(0), delay)
			}
			return p
		}
	}
	return Scenario{Name: "route timeouts", Field: field, Steps: []Step{
		{Label: fmt.Sprintf("%s, timeout: %s, no routes", other, APIDuration(generous)), Method: other,
			Policy: m.Policy(NoRetries, WithTimeout(generous)), Faults: faults, Calls: calls, Concurrency: calls, Deadline: 3 * generous,
			Predict: allOK(other)},
		{Label: fmt.Sprintf("%s, routes[slow-cut].timeout: %s", other, APIDuration(timeout)), Method: other, Policy: withRoute, Faults: faults,
			Calls: calls, Concurrency: calls, Deadline: 3 * generous, Predict: func(o Observed) Prediction {
				p := Prediction{Expected: fmt.Sprintf("all DEADLINE_EXCEEDED in [%s, %s]", timeout, timeout+TimeoutTolerance)}
				switch {
				case o.Codes[codes.DeadlineExceeded] != o.Calls:
					p.Err = fmt.Errorf("%s: %s: codes %v, want all %d DEADLINE_EXCEEDED", field, other, o.Codes, o.Calls)
				case o.Quantile(0) < timeout || o.Quantile(1) > timeout+TimeoutTolerance:
					p.Err = fmt.Errorf("%s: %s: calls ended after %s to %s, want %s to %s", field, other, o.Quantile(0), o.Quantile(1), timeout, timeout+TimeoutTolerance)
				}
				return p
			}},
		{Label: fmt.Sprintf("%s, same policy (top-level timeout %s)", m.Method, APIDuration(generous)), Policy: withRoute, Faults: faults,
			Calls: calls, Concurrency: calls, Deadline: 3 * generous, Predict: allOK(m.Method)},
	}}
}

// expectedAttempts is the mean and variance of the attempts one call makes when each attempt fails
// with probability p and up to retries retries follow a failure: attempt k+1 happens with
// probability p^k.
func expectedAttempts(p float64, retries int32) (mean, variance float64) {
	var m2 float64
	for k := range int(retries) + 1 {
		// P(attempts ≥ k+1) = p^k, so E[A] = Σ p^k and E[A²] = Σ (2k+1) p^k.
		mean += math.Pow(p, float64(k))
		m2 += float64(2*k+1) * math.Pow(p, float64(k))
	}
	return mean, m2 - mean*mean
}

// attemptsWithin checks the servers' attempts per call against what retries predict, within 4
// standard deviations of the mean over the step's calls.
func attemptsWithin(field string, o Observed, p float64, retries int32) Prediction {
	mean, variance := expectedAttempts(p, min(retries, 4))
	tol := 4 * math.Sqrt(variance/float64(max(o.Calls, 1)))
	got := float64(o.Attempts()) / float64(max(o.Calls, 1))
	pr := Prediction{Expected: fmt.Sprintf("%.3f ± %.3f attempts per call", mean, tol), Measured: fmt.Sprintf("%.3f attempts per call", got)}
	if math.Abs(got-mean) > tol {
		pr.Err = fmt.Errorf("%s: servers saw %.3f attempts per call, want %.3f ± %.3f", field, got, mean, tol)
	}
	return pr
}

// both joins two predictions: expected texts side by side, the first error.
func both(a, b Prediction) Prediction {
	p := Prediction{Expected: a.Expected + "; " + b.Expected, Measured: a.Measured + "; " + b.Measured, Err: a.Err}
	if p.Err == nil {
		p.Err = b.Err
	}
	return p
}

// RouteRetries shows per-method retries: every instance fails both methods errorRate of the time with
// UNAVAILABLE. With the platform's default retries (2 on unavailable among others) and no routes,
// Mesh.Method (Charge) is repeated: success 1-errorRate³, and the servers see more attempts than
// calls. With a route that sets its retries to 0 it succeeds 1-errorRate and the servers see exactly
// one attempt per call; other, with a route of attempts retries on unavailable, succeeds
// 1-errorRate^(attempts+1) (gRPC allows at most 4 retries).
func (m *Mesh) RouteRetries(service, other string, errorRate float64, attempts int32, calls int) Scenario {
	const field = "VirtualService http[].retries per route (xDS route retry_policy)"
	faults := map[string]string{"*": faultsOn(fmt.Sprintf(`"errorRate":%g,"grpcCode":"UNAVAILABLE"`, errorRate), m.Method, other)}
	noRetry := methodRoute("no-retry", service, m.Method)
	noRetry.Retries = &v1alpha1.Retries{Attempts: ptr.To[int32](0)}
	retried := methodRoute("retried", "", other)
	retried.Retries = &v1alpha1.Retries{Attempts: ptr.To(attempts), RetryOn: []v1alpha1.RetryCondition{"unavailable"}}
	withRoutes := m.Policy(WithRoutes(noRetry, retried))
	const platformRetries = 2 // desiredstate.PlatformDefaults, which retries on unavailable
	rate := func(retries int32) float64 { return 1 - math.Pow(errorRate, float64(min(retries, 4)+1)) }
	success := func(o Observed, retries int32) Prediction {
		want := rate(retries)
		return within(field, "success rate", o.SuccessRate(), want, Tolerance(want, o.Calls))
	}
	return Scenario{Name: "route retries", Field: field, Steps: []Step{
		{Label: fmt.Sprintf("%s, platform default retries, no routes", m.Method), Policy: m.Policy(), Faults: faults,
			Calls: calls, Concurrency: 4, Predict: func(o Observed) Prediction {
				return both(success(o, platformRetries), attemptsWithin(field, o, errorRate, platformRetries))
			}},
		{Label: fmt.Sprintf("%s, routes[no-retry].retries.attempts: 0", m.Method), Policy: withRoutes, Faults: faults,
			Calls: calls, Concurrency: 4, Predict: func(o Observed) Prediction {
				p := success(o, 0)
				p.Expected += "; exactly 1 attempt per call"
				p.Measured += fmt.Sprintf("; %d attempts for %d calls", o.Attempts(), o.Calls)
				if p.Err == nil && o.Attempts() != o.Calls {
					p.Err = fmt.Errorf("%s: servers saw %d attempts for %d calls, want exactly one each", field, o.Attempts(), o.Calls)
				}
				return p
			}},
		{Label: fmt.Sprintf("%s, routes[retried].retries.attempts: %d on unavailable", other, attempts), Method: other, Policy: withRoutes,
			Faults: faults, Calls: calls, Concurrency: 4, Predict: func(o Observed) Prediction {
				return both(success(o, attempts), attemptsWithin(field, o, errorRate, attempts))
			}},
	}}
}

// FaultAbort shows a route's abort: with no fault every call of method succeeds; with an abort of
// percent percent with code, that share of calls fails with code (within the binomial band) and the
// servers never see them — they handle exactly the calls that succeeded. Retries are off, so the
// figures are the abort's alone.
func (m *Mesh) FaultAbort(method string, percent int32, code codes.Code, calls int) Scenario {
	const field = "VirtualService http[].fault.abort (gRPC fault filter, gRFC A33)"
	abort := methodRoute("chaos", "", method)
	abort.Fault = &v1alpha1.Fault{Abort: &v1alpha1.FaultAbort{Percentage: ptr.To(percent), Code: v1alpha1.AbortCode(codeName(code))}}
	share := float64(percent) / 100
	return Scenario{Name: "fault abort", Field: field, Steps: []Step{
		{Label: method + ", no fault", Method: method, Policy: m.Policy(NoRetries), Calls: calls, Concurrency: 4,
			Predict: func(o Observed) Prediction {
				p := Prediction{Expected: "all OK, one attempt each"}
				if o.OK != o.Calls || o.Attempts() != o.Calls {
					p.Err = fmt.Errorf("%s: %d of %d OK, servers saw %d; want all OK and one attempt each", field, o.OK, o.Calls, o.Attempts())
				}
				return p
			}},
		{Label: fmt.Sprintf("%s, routes[chaos].fault.abort: %d%% %s", method, percent, codeName(code)), Method: method,
			Policy: m.Policy(NoRetries, WithRoutes(abort)), Calls: calls, Concurrency: 4, Predict: func(o Observed) Prediction {
				p := within(field, codeName(code)+" share", float64(o.Codes[code])/float64(max(o.Calls, 1)), share, Tolerance(share, o.Calls))
				p.Expected += "; servers see only the calls that succeeded"
				p.Measured += fmt.Sprintf("; servers saw %d", o.Attempts())
				if p.Err == nil && o.OK+o.Codes[code] != o.Calls {
					p.Err = fmt.Errorf("%s: codes %v, want only OK and %s", field, o.Codes, codeName(code))
				}
				if p.Err == nil && o.Attempts() != o.OK {
					p.Err = fmt.Errorf("%s: servers saw %d calls, want exactly the %d that succeeded", field, o.Attempts(), o.OK)
				}
				return p
			}},
	}}
}

// FaultDelay shows a route's delay: with no fault no call of method takes as long as delay; with a
// delay of percent percent, that share of calls (within the binomial band) takes at least delay in
// the caller, and all still succeed.
func (m *Mesh) FaultDelay(method string, delay time.Duration, percent int32, calls int) Scenario {
	const field = "VirtualService http[].fault.delay (gRPC fault filter, gRFC A33)"
	slow := methodRoute("chaos", "", method)
	slow.Fault = &v1alpha1.Fault{Delay: &v1alpha1.FaultDelay{FixedDelay: APIDuration(delay), Percentage: ptr.To(percent)}}
	share := float64(percent) / 100
	delayed := func(o Observed) int {
		n := 0
		for _, l := range o.Latency {
			if l >= delay {
				n++
			}
		}
		return n
	}
	return Scenario{Name: "fault delay", Field: field, Steps: []Step{
		{Label: method + ", no fault", Method: method, Policy: m.Policy(NoRetries), Calls: calls, Concurrency: 10,
			Predict: func(o Observed) Prediction {
				p := Prediction{Expected: fmt.Sprintf("all OK, none as slow as %s", delay)}
				if o.OK != o.Calls || delayed(o) > 0 {
					p.Err = fmt.Errorf("%s: %d of %d OK, %d took ≥ %s; want all OK and none", field, o.OK, o.Calls, delayed(o), delay)
				}
				return p
			}},
		{Label: fmt.Sprintf("%s, routes[chaos].fault.delay: %s to %d%%", method, APIDuration(delay), percent), Method: method,
			Policy: m.Policy(NoRetries, WithRoutes(slow)), Calls: calls, Concurrency: 10, Predict: func(o Observed) Prediction {
				p := within(field, "share ≥ "+delay.String(), float64(delayed(o))/float64(max(o.Calls, 1)), share, Tolerance(share, o.Calls))
				p.Expected += "; all OK"
				if p.Err == nil && o.OK != o.Calls {
					p.Err = fmt.Errorf("%s: %d of %d OK, want all", field, o.OK, o.Calls)
				}
				return p
			}},
	}}
}

// codeName writes a gRPC code as the TrafficPolicy API does: UNAVAILABLE.
func codeName(c codes.Code) string {
	name := ""
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			name += "_"
		}
		name += string(r)
	}
	if c == codes.Canceled {
		return "CANCELLED"
	}
	return strings.ToUpper(name)
}
