package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficPolicy declares how traffic to one Service in the policy's namespace behaves: timeouts, retries,
// circuit breaking, mTLS, a weighted subset split and which callers may connect. The Meshplane operator
// turns it into Istio VirtualService, DestinationRule, PeerAuthentication and AuthorizationPolicy objects
// and reports in status what is in force.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tp,categories=meshplane
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Timeout",type=string,JSONPath=`.status.effective.timeout`
// +kubebuilder:printcolumn:name="Retries",type=integer,JSONPath=`.status.effective.attempts`
// +kubebuilder:printcolumn:name="mTLS",type=string,JSONPath=`.spec.mtls.mode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the traffic behaviour the service team wants.
	// +required
	Spec TrafficPolicySpec `json:"spec"`
	// status is what the operator generated and what is in force.
	// +optional
	Status TrafficPolicyStatus `json:"status,omitempty"`
}

// TrafficPolicyList is a list of TrafficPolicies.
//
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}

// TrafficPolicySpec is the desired traffic behaviour for one Service.
//
// Its CEL rules (here and on split) stay silent about a value another rule already rejects, so each problem
// gets one message: perTryTimeout is compared with timeout only when both are well-formed durations of at
// least 1ms (converting a malformed one would add CEL's "type conversion error"), and split's weights are
// summed only when the list is not empty and every weight is set and within 0 to 100. Messages that carry
// values are built with format(): the API server's cost estimator takes string(int), + on strings of
// unknown length and join() as unbounded and would reject the CRD.
//
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || !has(self.retries) || !has(self.retries.perTryTimeout) || !self.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.retries.perTryTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.timeout) < duration('1ms') || duration(self.retries.perTryTimeout) < duration('1ms') || duration(self.retries.perTryTimeout) <= duration(self.timeout)",messageExpression="'spec.retries.perTryTimeout (%s) must not exceed spec.timeout (%s): each attempt must fit in the whole request'.format([self.retries.perTryTimeout, self.timeout])",fieldPath=".retries.perTryTimeout",reason=FieldValueInvalid
type TrafficPolicySpec struct {
	// targetRef names the Service in the policy's namespace this policy governs. One Service has at most
	// one policy in force: when two target the same Service, the older wins and the newer reports
	// TargetConflict.
	// +required
	TargetRef TargetRef `json:"targetRef"`

	// timeout bounds the whole request, retries included (VirtualService http[].timeout). Unset means no
	// route timeout. A duration such as 3s, 500ms or 1m30s, at least 1ms.
	// +optional
	Timeout *Duration `json:"timeout,omitempty"`

	// retries is how callers' proxies retry failed requests. Unset means the platform default (2 retries
	// on connect-failure, refused-stream, unavailable and cancelled; never on 5xx responses), written out
	// explicitly so Istio's hidden default never applies by accident.
	// +optional
	Retries *Retries `json:"retries,omitempty"`

	// circuitBreaker limits connections and requests to the Service and ejects failing endpoints
	// (DestinationRule connectionPool and outlierDetection).
	// +optional
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`

	// mtls sets the mutual TLS mode the Service's workloads accept (PeerAuthentication). Unset inherits the
	// namespace or mesh setting.
	// +optional
	MTLS *MTLS `json:"mtls,omitempty"`

	// split routes traffic to subsets of the Service's pods by label, with weights that sum to 100, e.g. for
	// a canary. Subsets reach the DestinationRule before the VirtualService routes to them.
	// +optional
	// +listType=map
	// +listMapKey=subset
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:XValidation:rule="size(self) == 0 || self.exists(s, !has(s.weight) || s.weight < 0 || s.weight > 100) || self.map(s, s.weight).sum() == 100",messageExpression="'spec.split weights must sum to 100, not %d'.format([self.map(s, s.weight).sum()])"
	Split []Subset `json:"split,omitempty"`

	// allow lists the only callers allowed to reach the Service, by service account (AuthorizationPolicy
	// with action ALLOW). Callers are identified by their mTLS certificates, so use it with mtls STRICT.
	// Unset allows every caller.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Allow []Caller `json:"allow,omitempty"`
}

// TargetRef names the Service a policy governs.
type TargetRef struct {
	// kind of the target; only Service is supported.
	// +optional
	// +kubebuilder:default=Service
	// +kubebuilder:validation:Enum=Service
	Kind string `json:"kind,omitempty"`

	// name of the Service, in the policy's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
}

// Duration is a length of time written as in Gateway API (GEP-2257): one to four groups of up to five
// digits followed by h, m, s or ms, such as 3s, 500ms or 1m30s.
//
// The pattern rejects a malformed value; the rule converts only values the pattern accepts, so a malformed
// value gets the pattern's message alone, not also CEL's "type conversion error" (or "must be at least
// 1ms" for "-1s" and "500us", which CEL's duration() parses but the pattern rejects).
//
// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(h|m|s|ms)){1,4}$`
// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) >= duration('1ms')",message="must be at least 1ms"
type Duration string

// Retries is the retry policy callers' proxies apply (VirtualService http[].retries).
//
// One rule per field that must go when retries are disabled, so each message names the field to remove.
//
// +kubebuilder:validation:XValidation:rule="!has(self.attempts) || self.attempts != 0 || !has(self.perTryTimeout)",message="must be unset when spec.retries.attempts is 0 (retries disabled)",fieldPath=".perTryTimeout",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.attempts) || self.attempts != 0 || !has(self.retryOn)",message="must be unset when spec.retries.attempts is 0 (retries disabled)",fieldPath=".retryOn",reason=FieldValueForbidden
type Retries struct {
	// attempts is the number of retries after the first try, 0 to 10. 0 disables retries explicitly, for
	// callers that retry themselves or requests that must not be repeated. A caller makes at most
	// 1 + attempts requests.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Attempts *int32 `json:"attempts,omitempty"`

	// perTryTimeout bounds each attempt, the first one included. Must not exceed timeout.
	// +optional
	PerTryTimeout *Duration `json:"perTryTimeout,omitempty"`

	// retryOn lists the conditions that trigger a retry, replacing (not extending) the default
	// connect-failure, refused-stream, unavailable, cancelled: Envoy/Istio tokens (5xx, gateway-error,
	// reset, reset-before-request, connect-failure, retriable-4xx, refused-stream, retriable-status-codes,
	// retriable-headers, envoy-ratelimited, http3-post-connect-failure, cancelled, deadline-exceeded,
	// internal, resource-exhausted, unavailable) or 4xx/5xx HTTP status codes such as "503". Retrying 5xx
	// repeats non-idempotent requests: only list them for idempotent APIs.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	RetryOn []RetryCondition `json:"retryOn,omitempty"`
}

// RetryCondition is one Envoy/Istio retry-on token or a 4xx/5xx HTTP status code Istio accepts.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self in ['5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes', 'retriable-headers', 'envoy-ratelimited', 'http3-post-connect-failure', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable'] || (self.matches('^[45][0-9][0-9]$') && int(self) in [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511])",message="must be an Istio retry condition (5xx, gateway-error, reset, reset-before-request, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited, http3-post-connect-failure, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable) or a 4xx/5xx HTTP status code"
type RetryCondition string

// CircuitBreaker limits load on the Service and ejects failing endpoints (DestinationRule trafficPolicy).
// Pool sizes of 0 mean Istio's default, which is unlimited (Istio cannot express a pool of size 0).
//
// +kubebuilder:validation:MinProperties=1
type CircuitBreaker struct {
	// maxConnections caps HTTP/1.1 and TCP connections to the Service (connectionPool.tcp.maxConnections).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// maxPendingRequests caps requests queued while waiting for a connection
	// (connectionPool.http.http1MaxPendingRequests; applies to HTTP/2 too).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`

	// maxRequests caps concurrent requests to the Service (connectionPool.http.http2MaxRequests; applies to
	// HTTP/1.1 too).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRequests *int32 `json:"maxRequests,omitempty"`

	// maxRequestsPerConnection caps requests per connection; 1 disables keep-alive, 0 means unlimited
	// (connectionPool.http.maxRequestsPerConnection).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRequestsPerConnection *int32 `json:"maxRequestsPerConnection,omitempty"`

	// maxRetries caps retries outstanding to the Service at once, across all callers' requests
	// (connectionPool.http.maxRetries): the brake on retry storms.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRetries *int32 `json:"maxRetries,omitempty"`

	// consecutiveErrors ejects an endpoint after this many consecutive 5xx responses or connection failures
	// (outlierDetection.consecutive5xxErrors); 0 disables ejection on errors.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ConsecutiveErrors *int32 `json:"consecutiveErrors,omitempty"`

	// interval between ejection sweeps (outlierDetection.interval).
	// +optional
	Interval *Duration `json:"interval,omitempty"`

	// baseEjectionTime is how long an endpoint stays ejected the first time; it grows with each ejection
	// (outlierDetection.baseEjectionTime).
	// +optional
	BaseEjectionTime *Duration `json:"baseEjectionTime,omitempty"`

	// maxEjectionPercent caps the share of endpoints ejected at once, 1 to 100
	// (outlierDetection.maxEjectionPercent). Istio reads 0 as unset, which means Envoy's 10%, so 0 is
	// rejected: to stop ejecting, set consecutiveErrors to 0.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// MTLSMode is the mutual TLS mode a Service's workloads accept.
//
// +kubebuilder:validation:Enum=STRICT;PERMISSIVE;DISABLE
type MTLSMode string

// The mutual TLS modes.
const (
	// MTLSStrict accepts only mutual TLS connections.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts both mutual TLS and plaintext, for migrations.
	MTLSPermissive MTLSMode = "PERMISSIVE"
	// MTLSDisable accepts plaintext only; callers are told to send plaintext as well.
	MTLSDisable MTLSMode = "DISABLE"
)

// MTLS is the mutual TLS setting of a Service's workloads (PeerAuthentication).
type MTLS struct {
	// mode is STRICT, PERMISSIVE or DISABLE. Move between DISABLE and STRICT through PERMISSIVE.
	// +required
	Mode MTLSMode `json:"mode"`
}

// Subset is one weighted part of a split: the Service's pods carrying labels get weight percent of the
// traffic.
type Subset struct {
	// subset is the DestinationRule subset name, a DNS label unique within the split.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Subset string `json:"subset"`

	// labels select the subset's pods among the Service's pods, e.g. {version: v2}.
	// +required
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=8
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.indexOf('/') <= 253))",messageExpression="'invalid label keys %s: a key is an optional DNS subdomain prefix and /, then a name of up to 63 alphanumerics, -, _ or . that starts and ends with an alphanumeric'.format([self.filter(k, !(k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && (!k.contains('/') || k.indexOf('/') <= 253)))])"
	Labels map[string]LabelValue `json:"labels"`

	// weight is the percentage of requests this subset receives, 0 to 100. A subset with weight 0 is
	// defined but gets no traffic, which stages a canary.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Weight *int32 `json:"weight,omitempty"`
}

// LabelValue is a Kubernetes label value: up to 63 alphanumerics, '-', '_' or '.', starting and ending with
// an alphanumeric, or empty.
//
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue string

// Caller is a workload identity allowed to call the Service.
type Caller struct {
	// serviceAccount is the caller's Kubernetes service account name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccount string `json:"serviceAccount"`

	// namespace of the service account; defaults to the policy's namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// TrafficPolicyStatus is what the operator generated and what is in force.
type TrafficPolicyStatus struct {
	// observedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted (the policy is valid and in force for its Service, or why not: HostConflict,
	// TargetConflict, ServiceNotFound, Invalid), Ready (every generated object is applied and matches) and
	// CallGraph (False when the policy takes part in a problem of the policies together along the call
	// graph, such as retries multiplying down a chain; the reason names the problem, the message the path,
	// the fields and the fix; a warning only: it never changes Accepted or Ready).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// generated lists the Istio objects this policy produced, in apply order.
	// +optional
	// +listType=atomic
	Generated []GeneratedObject `json:"generated,omitempty"`

	// effective is the traffic behaviour in force, platform defaults included.
	// +optional
	Effective *EffectivePolicy `json:"effective,omitempty"`
}

// GeneratedObject names one object the operator wrote for a policy.
type GeneratedObject struct {
	// apiVersion of the object, e.g. networking.istio.io/v1.
	APIVersion string `json:"apiVersion"`
	// kind of the object, e.g. VirtualService.
	Kind string `json:"kind"`
	// name of the object, in the policy's namespace.
	Name string `json:"name"`
}

// EffectivePolicy is the traffic behaviour callers of a Service get, platform defaults included, and its
// worst cases.
type EffectivePolicy struct {
	// host is the Service's fully qualified name the generated objects match.
	Host string `json:"host"`
	// timeout bounds the whole request; empty means no route timeout.
	// +optional
	Timeout string `json:"timeout,omitempty"`
	// attempts is the number of retries after the first try.
	Attempts int32 `json:"attempts"`
	// perTryTimeout bounds each attempt; empty means only timeout does.
	// +optional
	PerTryTimeout string `json:"perTryTimeout,omitempty"`
	// retryOn lists the conditions that trigger a retry.
	// +optional
	RetryOn []string `json:"retryOn,omitempty"`
	// defaultRetries is true when the policy left retries unset and the platform default applies.
	// +optional
	DefaultRetries bool `json:"defaultRetries,omitempty"`
	// worstCaseAttempts is the most requests one call can cause: 1 + attempts.
	WorstCaseAttempts int32 `json:"worstCaseAttempts"`
	// worstCaseWait is the longest a caller can wait: min(timeout, worstCaseAttempts × perTryTimeout) from
	// what is known, backoff between attempts aside; empty means unbounded.
	// +optional
	WorstCaseWait string `json:"worstCaseWait,omitempty"`
}

// Condition types a TrafficPolicy reports.
const (
	// ConditionAccepted is True when the policy is valid and in force for its Service.
	ConditionAccepted = "Accepted"
	// ConditionReady is True when every generated object is applied and matches the policy.
	ConditionReady = "Ready"
	// ConditionCallGraph is False when the policy takes part in a call-graph finding of warning or error
	// severity (`meshplane check`); its reason is the finding's kind (Amplification, TimeoutBelowCallee,
	// NonIdempotentRetry, ...). It is a warning: Accepted and Ready do not depend on it.
	ConditionCallGraph = "CallGraph"
)

// Condition reasons a TrafficPolicy reports.
const (
	// ReasonAccepted: the policy is in force for its Service.
	ReasonAccepted = "Accepted"
	// ReasonHostConflict: a VirtualService or DestinationRule Meshplane does not own already configures
	// the Service's host, so nothing is written for that kind.
	ReasonHostConflict = "HostConflict"
	// ReasonTargetConflict: an older TrafficPolicy governs the same Service.
	ReasonTargetConflict = "TargetConflict"
	// ReasonServiceNotFound: the target Service does not exist.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonInvalid: the spec breaks a rule the API server should have enforced (e.g. an older CRD).
	ReasonInvalid = "Invalid"
	// ReasonApplied: every generated object is applied and matches.
	ReasonApplied = "Applied"
	// ReasonApplyFailed: writing a generated object failed.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonNotAccepted: nothing is applied because the policy is not accepted.
	ReasonNotAccepted = "NotAccepted"
	// ReasonChecked: the call-graph analysis found nothing of warning severity involving the policy.
	ReasonChecked = "Checked"
	// ReasonNotInForce: the policy is not the one governing its Service, so the call-graph analysis
	// leaves it out.
	ReasonNotInForce = "NotInForce"
)
