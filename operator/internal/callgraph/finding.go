package callgraph

import (
	"fmt"
	"strings"
)

// Severity ranks findings; `meshplane check --fail-on` and the operator's condition compare with it.
type Severity int

// Severities, least severe first.
const (
	// Info is worth knowing but costs nothing by itself (two layers retrying the same failure).
	Info Severity = iota + 1
	// Warning wastes capacity or time under failure: a retry storm, a timeout that cuts a callee's
	// retries short.
	Warning
	// Error can do harm: a request that must not be repeated is retried.
	Error
)

var severityNames = map[Severity]string{Info: "info", Warning: "warning", Error: "error"}

func (s Severity) String() string {
	if n, ok := severityNames[s]; ok {
		return n
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText writes the severity's name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity's name.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSeverity reads info, warning or error.
func ParseSeverity(s string) (Severity, error) {
	for v, n := range severityNames {
		if strings.EqualFold(s, n) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("severity %q: want info, warning or error", s)
}

// Kind is what a finding is about. Each kind has one severity (Kinds).
type Kind string

// The kinds of findings.
const (
	// KindAmplification: retries along a path multiply to more attempts at one service than the limit.
	KindAmplification Kind = "Amplification"
	// KindTimeoutBelowCallee: a caller gives one attempt less time than its callee's calls can take,
	// so the callee's retries (or its wait) cannot complete and only add load.
	KindTimeoutBelowCallee Kind = "TimeoutBelowCallee"
	// KindRedundantRetries: a caller retries a callee that already retries its own call on the same
	// conditions, so one failure deep down is retried at two layers.
	KindRedundantRetries Kind = "RedundantRetries"
	// KindNonIdempotentRetry: a call that must not be repeated is retried on conditions that can fire
	// after the server ran it.
	KindNonIdempotentRetry Kind = "NonIdempotentRetry"
	// KindRetryAboveNonIdempotent: a call upstream of one that must not be repeated is retried on such
	// conditions, and each retry can repeat the call below.
	KindRetryAboveNonIdempotent Kind = "RetryAboveNonIdempotent"
	// KindCycle: calls loop, so a request can circulate and its attempts have no bound.
	KindCycle Kind = "Cycle"
	// KindUnknownService: a graph file names a service that is neither a Service, a policy's target,
	// nor declared; the call is left out.
	KindUnknownService Kind = "UnknownService"
	// KindPolicyWithoutService: a policy targets a Service that does not exist; it is left out.
	KindPolicyWithoutService Kind = "PolicyWithoutService"
	// KindInvalidPolicy: a policy does not validate; its Service is analysed with the platform defaults.
	KindInvalidPolicy Kind = "InvalidPolicy"
	// KindTruncated: the graph has more paths than the analysis walks; amplification may be understated.
	KindTruncated Kind = "Truncated"
)

// Kinds maps every kind to its severity: the metric's label pairs, and the order of the docs' table.
var Kinds = []struct {
	Kind     Kind
	Severity Severity
}{
	{KindNonIdempotentRetry, Error},
	{KindAmplification, Warning},
	{KindTimeoutBelowCallee, Warning},
	{KindRetryAboveNonIdempotent, Warning},
	{KindCycle, Warning},
	{KindUnknownService, Warning},
	{KindRedundantRetries, Info},
	{KindPolicyWithoutService, Info},
	{KindInvalidPolicy, Info},
	{KindTruncated, Info},
}

func severityOf(k Kind) Severity {
	for _, ks := range Kinds {
		if ks.Kind == k {
			return ks.Severity
		}
	}
	return Info
}

// Finding is one problem of the graph as a whole.
type Finding struct {
	Severity Severity `json:"severity"`
	Kind     Kind     `json:"kind"`
	// Path is the chain of services the finding is about; a single call is a path of two.
	Path []Service `json:"path"`
	// Policies are the TrafficPolicies (namespace/name) involved, sorted: the operator reports the
	// finding on each.
	Policies []string `json:"policies,omitempty"`
	// Fields are the settings, with their values, that make the problem.
	Fields []Field `json:"fields,omitempty"`
	// Message says what is wrong, with the numbers.
	Message string `json:"message"`
	// Fix is the smallest change that removes the finding.
	Fix string `json:"fix,omitempty"`
}

// Field is one setting that governs calls to a Service.
type Field struct {
	// Service is the Service whose callers the setting governs.
	Service Service `json:"service"`
	// Policy is the TrafficPolicy (namespace/name); empty when none governs the Service.
	Policy string `json:"policy,omitempty"`
	// Field is the policy's field, e.g. spec.retries.attempts.
	Field string `json:"field"`
	// Value is the value in force, written as in the policy.
	Value string `json:"value"`
	// Default is true when the field is unset and the value is the platform default.
	Default bool `json:"default,omitempty"`
}

func (f Field) String() string {
	switch {
	case f.Policy == "":
		return fmt.Sprintf("%s has no TrafficPolicy: %s=%s (platform default)", f.Service, f.Field, f.Value)
	case f.Default:
		return fmt.Sprintf("TrafficPolicy %s %s=%s (unset: platform default)", f.Policy, f.Field, f.Value)
	}
	return fmt.Sprintf("TrafficPolicy %s %s=%s", f.Policy, f.Field, f.Value)
}
