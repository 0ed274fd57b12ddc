package v1alpha1

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// valid is a policy using every field.
func valid() *TrafficPolicy {
	return &TrafficPolicy{Spec: TrafficPolicySpec{
		TargetRef: TargetRef{Kind: "Service", Name: "orders"},
		Timeout:   ptr(Duration("3s")),
		Retries:   &Retries{Attempts: ptr(int32(2)), PerTryTimeout: ptr(Duration("1s")), RetryOn: []RetryCondition{"connect-failure", "503"}},
		CircuitBreaker: &CircuitBreaker{MaxConnections: ptr(int32(100)), ConsecutiveErrors: ptr(int32(0)),
			Interval: ptr(Duration("10s")), MaxEjectionPercent: ptr(int32(50))},
		MTLS: &MTLS{Mode: MTLSStrict},
		Split: []Subset{
			{Subset: "v1", Labels: map[string]LabelValue{"version": "v1"}, Weight: ptr(int32(90))},
			{Subset: "v2", Labels: map[string]LabelValue{"version": "v2"}, Weight: ptr(int32(10))},
		},
		Allow: []Caller{{ServiceAccount: "gateway"}, {ServiceAccount: "loadgen", Namespace: "tools"}},
		Fault: &Fault{Delay: &FaultDelay{FixedDelay: "100ms", Percentage: ptr(int32(10))}},
		Routes: []Route{
			{Name: "charge", Match: RouteMatch{GRPC: &GRPCMatch{Method: "Charge"}}, Retries: &Retries{Attempts: ptr(int32(0))}},
			{Name: "orders", Match: RouteMatch{HTTP: &HTTPMatch{Path: &PathMatch{Type: PathPrefix, Value: "/v1/orders"}, Method: ptr(HTTPMethod("POST"))}},
				Timeout: ptr(Duration("5s")), Fault: &Fault{Abort: &FaultAbort{Percentage: ptr(int32(5)), Code: "503"}}},
		},
	}}
}

// Each case breaks one rule; the errors must name exactly the offending fields, so a user knows what to
// fix without reading the CRD.
func TestValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name   string
		change func(*TrafficPolicySpec)
		want   []string // "field: type" of every error
	}{
		{"valid", func(*TrafficPolicySpec) {}, nil},
		{"target name missing", func(s *TrafficPolicySpec) { s.TargetRef.Name = "" }, []string{"spec.targetRef.name: Required value"}},
		{"target kind", func(s *TrafficPolicySpec) { s.TargetRef.Kind = "Deployment" }, []string{"spec.targetRef.kind: Unsupported value"}},
		{"timeout below 1ms", func(s *TrafficPolicySpec) { s.Timeout = ptr(Duration("0ms")) }, []string{"spec.timeout: Invalid value"}},
		{"timeout malformed", func(s *TrafficPolicySpec) { s.Timeout = ptr(Duration("2.5s")) }, []string{"spec.timeout: Invalid value"}},
		{"perTryTimeout above timeout", func(s *TrafficPolicySpec) { s.Retries.PerTryTimeout = ptr(Duration("4s")) }, []string{"spec.retries.perTryTimeout: Invalid value"}},
		{"attempts missing", func(s *TrafficPolicySpec) { s.Retries.Attempts = nil }, []string{"spec.retries.attempts: Required value"}},
		{"attempts 11", func(s *TrafficPolicySpec) { s.Retries.Attempts = ptr(int32(11)) }, []string{"spec.retries.attempts: Invalid value"}},
		{"attempts 0 with conditions", func(s *TrafficPolicySpec) { s.Retries.Attempts = ptr(int32(0)) },
			[]string{"spec.retries.perTryTimeout: Forbidden", "spec.retries.retryOn: Forbidden"}},
		{"retryOn token", func(s *TrafficPolicySpec) { s.Retries.RetryOn = []RetryCondition{"reset", "599"} }, []string{"spec.retries.retryOn[1]: Invalid value"}},
		{"retryOn duplicate", func(s *TrafficPolicySpec) { s.Retries.RetryOn = []RetryCondition{"reset", "reset"} }, []string{"spec.retries.retryOn[1]: Duplicate value"}},
		{"circuitBreaker empty", func(s *TrafficPolicySpec) { s.CircuitBreaker = &CircuitBreaker{} }, []string{"spec.circuitBreaker: Required value"}},
		{"pool negative", func(s *TrafficPolicySpec) { s.CircuitBreaker.MaxConnections = ptr(int32(-1)) }, []string{"spec.circuitBreaker.maxConnections: Invalid value"}},
		{"maxEjectionPercent 0", func(s *TrafficPolicySpec) { s.CircuitBreaker.MaxEjectionPercent = ptr(int32(0)) }, []string{"spec.circuitBreaker.maxEjectionPercent: Invalid value"}},
		{"interval 0s", func(s *TrafficPolicySpec) { s.CircuitBreaker.Interval = ptr(Duration("0s")) }, []string{"spec.circuitBreaker.interval: Invalid value"}},
		{"mtls mode", func(s *TrafficPolicySpec) { s.MTLS.Mode = "strict" }, []string{"spec.mtls.mode: Unsupported value"}},
		{"split sum", func(s *TrafficPolicySpec) { s.Split[1].Weight = ptr(int32(20)) }, []string{"spec.split: Invalid value"}},
		{"split duplicate", func(s *TrafficPolicySpec) { s.Split[1].Subset = "v1" }, []string{"spec.split[1].subset: Duplicate value"}},
		{"split subset name", func(s *TrafficPolicySpec) { s.Split[0].Subset = "V1" }, []string{"spec.split[0].subset: Invalid value"}},
		{"split label key", func(s *TrafficPolicySpec) { s.Split[0].Labels = map[string]LabelValue{"-v": "x"} }, []string{"spec.split[0].labels: Invalid value"}},
		{"split weight missing", func(s *TrafficPolicySpec) { s.Split[1].Weight = nil }, []string{"spec.split[1].weight: Required value"}},
		{"allow service account", func(s *TrafficPolicySpec) { s.Allow[1].ServiceAccount = "" }, []string{"spec.allow[1].serviceAccount: Required value"}},
		{"allow namespace", func(s *TrafficPolicySpec) { s.Allow[1].Namespace = "Tools" }, []string{"spec.allow[1].namespace: Invalid value"}},
		{"route named default", func(s *TrafficPolicySpec) { s.Routes[0].Name = "default" }, []string{"spec.routes[0].name: Invalid value"}},
		{"routes same match", func(s *TrafficPolicySpec) { s.Routes[1].Match = s.Routes[0].Match }, []string{"spec.routes: Invalid value"}},
		{"route perTryTimeout above inherited timeout", func(s *TrafficPolicySpec) {
			s.Routes[0].Retries = &Retries{Attempts: ptr(int32(1)), PerTryTimeout: ptr(Duration("4s"))}
		}, []string{"spec.routes: Invalid value"}},
		{"route matches every request", func(s *TrafficPolicySpec) {
			s.Routes[1].Match.HTTP = &HTTPMatch{Path: &PathMatch{Type: PathPrefix, Value: "/"}}
		}, []string{"spec.routes[1].match.http: Invalid value"}},
		{"route gRPC method and service", func(s *TrafficPolicySpec) { s.Routes[0].Match.GRPC.Service = "a.B" }, []string{"spec.routes[0].match.grpc: Invalid value"}},
		{"route sets nothing", func(s *TrafficPolicySpec) { s.Routes[0].Retries = nil }, []string{"spec.routes[0].name: Required value"}},
		{"abort without code", func(s *TrafficPolicySpec) { s.Routes[1].Fault.Abort.Code = "" }, []string{"spec.routes[1].fault.abort.code: Required value"}},
		{"abort code OK", func(s *TrafficPolicySpec) { s.Routes[1].Fault.Abort.Code = "OK" }, []string{"spec.routes[1].fault.abort.code: Invalid value"}},
		{"delay percentage 101", func(s *TrafficPolicySpec) { s.Fault.Delay.Percentage = ptr(int32(101)) }, []string{"spec.fault.delay.percentage: Invalid value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.change(&p.Spec)
			var got []string
			for _, e := range p.Validate() {
				got = append(got, e.Field+": "+e.Type.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate() fields = %q, want %q\nerrors: %v", got, tt.want, p.Validate())
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	p := valid()
	p.Spec.TargetRef.Name = "Orders"
	p.Spec.Timeout = ptr(Duration("soon"))
	p.Spec.MTLS.Mode = "ON"
	p.Spec.Allow[0].ServiceAccount = ""
	errs := p.Validate()
	if len(errs) != 4 {
		t.Fatalf("Validate() = %d errors, want 4 (one per broken field): %v", len(errs), errs)
	}
	msg := errs.ToAggregate().Error()
	for _, want := range []string{"spec.targetRef.name", "spec.timeout", "spec.mtls.mode", "spec.allow[0].serviceAccount"} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors %q do not name %s", msg, want)
		}
	}
}

func TestDurationParse(t *testing.T) {
	tests := []struct {
		in   Duration
		want time.Duration
		ok   bool
	}{
		{"3s", 3 * time.Second, true},
		{"500ms", 500 * time.Millisecond, true},
		{"1m30s", 90 * time.Second, true},
		{"1h2m3s4ms", time.Hour + 2*time.Minute + 3*time.Second + 4*time.Millisecond, true},
		{"1.5s", 0, false},
		{"10us", 0, false},
		{"-1s", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := tt.in.Parse()
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Duration(%q).Parse() = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestRetryConditionValid(t *testing.T) {
	for _, c := range []RetryCondition{"5xx", "connect-failure", "unavailable", "400", "429", "503", "511"} {
		if !c.Valid() {
			t.Errorf("RetryCondition(%q).Valid() = false, want true", c)
		}
	}
	// 599 and 509 are not codes Go (and so Istio) knows; 200 is not an error.
	for _, c := range []RetryCondition{"", "5XX", "599", "509", "200", "5030", "reset,5xx"} {
		if c.Valid() {
			t.Errorf("RetryCondition(%q).Valid() = true, want false", c)
		}
	}
}

// validCanary is a policy with a canary over a staged split and every analysis field.
func validCanary() *TrafficPolicy {
	return &TrafficPolicy{Spec: TrafficPolicySpec{
		TargetRef: TargetRef{Name: "payments"},
		Split: []Subset{
			{Subset: "v1", Labels: map[string]LabelValue{"version": "v1"}, Weight: ptr(int32(100))},
			{Subset: "v2", Labels: map[string]LabelValue{"version": "v2"}, Weight: ptr(int32(0))},
		},
		Canary: &Canary{Stable: "v1", Candidate: "v2", Steps: []int32{10, 25, 50, 100}, Interval: "1m",
			Analysis: CanaryAnalysis{Objective: "99.9", MaxBurnRate: "10", StableMargin: ptr(Decimal("0.5")),
				Latency:     &LatencyBound{Quantile: "0.99", Max: "300ms"},
				MinRequests: ptr(int32(100)), MaxHolds: ptr(int32(3)), FailureThreshold: ptr(int32(2)), ScrapeInterval: ptr(Duration("15s"))}},
	}}
}

// Each case breaks one rule of spec.canary; the errors name exactly the field to change.
func TestValidateCanaryNamesTheField(t *testing.T) {
	tests := []struct {
		name   string
		change func(*TrafficPolicySpec)
		want   []string
	}{
		{"valid", func(*TrafficPolicySpec) {}, nil},
		{"no split", func(s *TrafficPolicySpec) { s.Split = nil }, []string{"spec.split: Required value"}},
		{"unknown stable", func(s *TrafficPolicySpec) { s.Canary.Stable = "v0" }, []string{"spec.canary.stable: Invalid value"}},
		{"unknown candidate", func(s *TrafficPolicySpec) { s.Canary.Candidate = "v3" }, []string{"spec.canary.candidate: Invalid value"}},
		{"stable is candidate", func(s *TrafficPolicySpec) { s.Canary.Candidate = "v1" }, []string{"spec.canary.candidate: Invalid value"}},
		{"stable weight 90", func(s *TrafficPolicySpec) { *s.Split[0].Weight, *s.Split[1].Weight = 90, 10 }, []string{"spec.split: Invalid value"}},
		{"steps not increasing", func(s *TrafficPolicySpec) { s.Canary.Steps = []int32{10, 50, 25, 100} }, []string{"spec.canary.steps: Invalid value"}},
		{"steps not ending at 100", func(s *TrafficPolicySpec) { s.Canary.Steps = []int32{10, 50} }, []string{"spec.canary.steps: Invalid value"}},
		{"step out of range", func(s *TrafficPolicySpec) { s.Canary.Steps = []int32{0, 100} }, []string{"spec.canary.steps[0]: Invalid value"}},
		{"interval below twice the scrape", func(s *TrafficPolicySpec) { s.Canary.Interval = "29s" }, []string{"spec.canary.interval: Invalid value"}},
		{"objective 100", func(s *TrafficPolicySpec) { s.Canary.Analysis.Objective = "100" }, []string{"spec.canary.analysis.objective: Invalid value"}},
		{"objective 0", func(s *TrafficPolicySpec) { s.Canary.Analysis.Objective = "0" }, []string{"spec.canary.analysis.objective: Invalid value"}},
		{"burn allows every failure", func(s *TrafficPolicySpec) { s.Canary.Analysis.MaxBurnRate = "1000" }, []string{"spec.canary.analysis.maxBurnRate: Invalid value"}},
		{"quantile 0", func(s *TrafficPolicySpec) { s.Canary.Analysis.Latency.Quantile = "0.0" }, []string{"spec.canary.analysis.latency.quantile: Invalid value"}},
		{"minRequests missing", func(s *TrafficPolicySpec) { s.Canary.Analysis.MinRequests = nil }, []string{"spec.canary.analysis.minRequests: Required value"}},
		{"failureThreshold 0", func(s *TrafficPolicySpec) { s.Canary.Analysis.FailureThreshold = ptr(int32(0)) }, []string{"spec.canary.analysis.failureThreshold: Invalid value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validCanary()
			tt.change(&p.Spec)
			var got []string
			for _, e := range p.Validate() {
				got = append(got, e.Field+": "+e.Type.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate() fields = %q, want %q\nerrors: %v", got, tt.want, p.Validate())
			}
		})
	}
}
