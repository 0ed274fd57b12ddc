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
// +kubebuilder:printcolumn:name="Canary",type=string,JSONPath=`.status.canary.phase`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.status.canary.weight`
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
// The canary's rules stay silent while spec.split is missing (one message says so) and name the subset
// a canary refers to only when split has it; the stable subset's weight is checked only when every
// weight of the split is valid.
//
// +kubebuilder:validation:XValidation:rule="!has(self.canary) || has(self.split)",message="spec.canary needs spec.split, which defines its stable and candidate subsets",fieldPath=".split",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.canary) || !has(self.split) || !has(self.canary.stable) || self.split.exists(s, s.subset == self.canary.stable)",messageExpression="'%s is not a subset of spec.split'.format([self.canary.stable])",fieldPath=".canary.stable",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.canary) || !has(self.split) || !has(self.canary.candidate) || self.split.exists(s, s.subset == self.canary.candidate)",messageExpression="'%s is not a subset of spec.split'.format([self.canary.candidate])",fieldPath=".canary.candidate",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.canary) || !has(self.split) || !has(self.canary.stable) || !self.split.all(s, has(s.weight) && s.weight >= 0 && s.weight <= 100) || !self.split.exists(s, s.subset == self.canary.stable) || self.split.exists(s, s.subset == self.canary.stable && s.weight == 100)",messageExpression="'the stable subset %s has weight %d: while spec.canary is set it must have 100 (every other subset 0), where a rollback or an abort returns; the canary moves the weights'.format([self.canary.stable, self.split.filter(s, s.subset == self.canary.stable)[0].weight])",fieldPath=".split",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || !has(self.routes) || !self.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.timeout) < duration('1ms') || self.routes.all(r, has(r.timeout) || !has(r.retries) || !has(r.retries.perTryTimeout) || !r.retries.perTryTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(r.retries.perTryTimeout) < duration('1ms') || duration(r.retries.perTryTimeout) <= duration(self.timeout))",messageExpression="'routes %s set retries.perTryTimeout above spec.timeout (%s), which they inherit: each attempt must fit in the whole request; give them a timeout of their own or a shorter perTryTimeout'.format([self.routes.filter(r, !has(r.timeout) && has(r.retries) && has(r.retries.perTryTimeout) && r.retries.perTryTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') && duration(r.retries.perTryTimeout) >= duration('1ms') && duration(r.retries.perTryTimeout) > duration(self.timeout)).map(r, r.name), self.timeout])",fieldPath=".routes",reason=FieldValueInvalid
// +kubebuilder:validation:XValidation:rule="!has(self.retries) || !has(self.retries.perTryTimeout) || !has(self.routes) || !self.retries.perTryTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.retries.perTryTimeout) < duration('1ms') || self.routes.all(r, !has(r.timeout) || has(r.retries) || !r.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(r.timeout) < duration('1ms') || duration(self.retries.perTryTimeout) <= duration(r.timeout))",messageExpression="'routes %s set a timeout below spec.retries.perTryTimeout (%s), which they inherit: each attempt must fit in the whole request; give them retries of their own'.format([self.routes.filter(r, has(r.timeout) && !has(r.retries) && r.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') && duration(r.timeout) >= duration('1ms') && duration(self.retries.perTryTimeout) > duration(r.timeout)).map(r, r.name), self.retries.perTryTimeout])",fieldPath=".routes",reason=FieldValueInvalid
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

	// fault injects failures into callers' requests on purpose, for chaos testing: a delay, an abort, or
	// both (VirtualService http[].fault). Callers' proxies inject them before the request leaves, so the
	// Service never sees an aborted call. Unset injects nothing.
	// +optional
	Fault *Fault `json:"fault,omitempty"`

	// routes give some calls their own timeout, retries and fault: gRPC calls by method or service, HTTP
	// requests by path, method and headers. Each becomes a VirtualService http[] route, most specific
	// first (exact paths and gRPC methods, then gRPC method names, then longer prefixes, then routes that
	// also match a method, then those with more headers; equally specific routes in list order), before
	// the default route, which takes every other call with the top-level fields. A route's timeout,
	// retries and fault replace the top-level ones for its calls; what it leaves unset it inherits.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, (!has(a.match) || has(a.match.grpc) == has(a.match.http)) || self.exists_one(b, has(a.match) && has(b.match) && ((has(a.match.grpc) && has(b.match.grpc) && a.match.grpc == b.match.grpc) || (has(a.match.http) && has(b.match.http) && (!has(a.match.http.path) || (has(a.match.http.path.type) && a.match.http.path.type == 'Prefix' && has(a.match.http.path.value) && a.match.http.path.value == '/')) == (!has(b.match.http.path) || (has(b.match.http.path.type) && b.match.http.path.type == 'Prefix' && has(b.match.http.path.value) && b.match.http.path.value == '/')) && ((!has(a.match.http.path) || (has(a.match.http.path.type) && a.match.http.path.type == 'Prefix' && has(a.match.http.path.value) && a.match.http.path.value == '/')) || a.match.http.path == b.match.http.path) && (has(a.match.http.method) ? has(b.match.http.method) && a.match.http.method == b.match.http.method : !has(b.match.http.method)) && (has(a.match.http.headers) ? has(b.match.http.headers) && size(a.match.http.headers) == size(b.match.http.headers) && a.match.http.headers.all(h, h in b.match.http.headers) : !has(b.match.http.headers))))))",messageExpression="'routes %s match the same calls: only the first would ever apply; merge them or tell their matches apart'.format([self.filter(a, !(!has(a.match) || has(a.match.grpc) == has(a.match.http)) && !self.exists_one(b, has(a.match) && has(b.match) && ((has(a.match.grpc) && has(b.match.grpc) && a.match.grpc == b.match.grpc) || (has(a.match.http) && has(b.match.http) && (!has(a.match.http.path) || (has(a.match.http.path.type) && a.match.http.path.type == 'Prefix' && has(a.match.http.path.value) && a.match.http.path.value == '/')) == (!has(b.match.http.path) || (has(b.match.http.path.type) && b.match.http.path.type == 'Prefix' && has(b.match.http.path.value) && b.match.http.path.value == '/')) && ((!has(a.match.http.path) || (has(a.match.http.path.type) && a.match.http.path.type == 'Prefix' && has(a.match.http.path.value) && a.match.http.path.value == '/')) || a.match.http.path == b.match.http.path) && (has(a.match.http.method) ? has(b.match.http.method) && a.match.http.method == b.match.http.method : !has(b.match.http.method)) && (has(a.match.http.headers) ? has(b.match.http.headers) && size(a.match.http.headers) == size(b.match.http.headers) && a.match.http.headers.all(h, h in b.match.http.headers) : !has(b.match.http.headers)))))).map(a, a.name)])"
	Routes []Route `json:"routes,omitempty"`

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

	// canary rolls traffic from one subset of split to another in steps, each judged by the service's SLO
	// on live metrics from Prometheus: promoted when every step passes, rolled back at once when checks
	// fail. It owns the weights of its two subsets while it is set, so split must give the stable subset
	// weight 100 (and so every other subset 0): that is where a rollback or an abort returns.
	// +optional
	Canary *Canary `json:"canary,omitempty"`

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
// MaxLength bounds the string for CEL's cost estimator (the rules that compare durations run once per
// route); the pattern allows at most 28 characters anyway.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(h|m|s|ms)){1,4}$`
// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) >= duration('1ms')",message="must be at least 1ms"
type Duration string

// Retries is the retry policy callers' proxies apply (VirtualService http[].retries).
//
// One rule per field that must go when retries are disabled, so each message names the field to remove.
//
// +kubebuilder:validation:XValidation:rule="!has(self.attempts) || self.attempts != 0 || !has(self.perTryTimeout)",message="must be unset when retries.attempts is 0 (retries disabled)",fieldPath=".perTryTimeout",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.attempts) || self.attempts != 0 || !has(self.retryOn)",message="must be unset when retries.attempts is 0 (retries disabled)",fieldPath=".retryOn",reason=FieldValueForbidden
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

// Route gives the calls its match selects their own timeout, retries and fault.
//
// +kubebuilder:validation:XValidation:rule="has(self.timeout) || has(self.retries) || has(self.fault) || has(self.idempotent)",message="sets nothing of its own: give it a timeout, retries, fault or idempotent, or remove it",fieldPath=".name",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || !has(self.retries) || !has(self.retries.perTryTimeout) || !self.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.retries.perTryTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.timeout) < duration('1ms') || duration(self.retries.perTryTimeout) < duration('1ms') || duration(self.retries.perTryTimeout) <= duration(self.timeout)",messageExpression="'retries.perTryTimeout (%s) must not exceed the timeout of the route (%s): each attempt must fit in the whole request'.format([self.retries.perTryTimeout, self.timeout])",fieldPath=".retries.perTryTimeout",reason=FieldValueInvalid
type Route struct {
	// name identifies the route in status, `meshplane render --explain` and `meshplane inforce`, and
	// names its VirtualService http[] route: a DNS label unique within the policy. "default" is the
	// name of the route that takes every other call.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self != 'default'",message="default is the name of the route that takes every other call; choose another"
	Name string `json:"name"`

	// match selects the calls: gRPC calls by method or service, or HTTP requests by path, method and
	// headers.
	// +required
	Match RouteMatch `json:"match"`

	// timeout bounds each matched call, retries included, in place of spec.timeout (it may be longer or
	// shorter). Unset inherits spec.timeout.
	// +optional
	Timeout *Duration `json:"timeout,omitempty"`

	// retries replaces spec.retries (as a whole) for matched calls; attempts: 0 turns retries off, as for
	// a method that must not be repeated. Unset inherits spec.retries, or the platform default.
	// +optional
	Retries *Retries `json:"retries,omitempty"`

	// fault replaces spec.fault for matched calls. Unset inherits spec.fault.
	// +optional
	Fault *Fault `json:"fault,omitempty"`

	// idempotent overrides the safe-retry rule for matched calls. Unset: HTTP POST and PATCH requests
	// without an Idempotency-Key header are retried only where the request cannot have reached the
	// Service (connect-failure, refused-stream, reset-before-request, http3-post-connect-failure,
	// envoy-ratelimited), whatever retryOn says; other methods and gRPC calls get retryOn as written.
	// true: every matched call may be repeated, so retryOn applies to all of them. false: no matched
	// call may be repeated once it reached the Service, gRPC calls and GET included, unless it carries an
	// Idempotency-Key header.
	// +optional
	Idempotent *bool `json:"idempotent,omitempty"`
}

// RouteMatch selects calls: set exactly one of grpc and http.
//
// +kubebuilder:validation:XValidation:rule="has(self.grpc) != has(self.http)",message="set exactly one of grpc (gRPC calls by method or service) and http (HTTP requests by path, method and headers)"
type RouteMatch struct {
	// grpc matches gRPC calls by method or service.
	// +optional
	GRPC *GRPCMatch `json:"grpc,omitempty"`

	// http matches HTTP requests by path, method and headers; every condition set must hold.
	// +optional
	HTTP *HTTPMatch `json:"http,omitempty"`
}

// GRPCMatch selects gRPC calls by their method, written as users know it, or by service: set exactly
// one of method and service. gRPC calls are HTTP/2 requests to /package.Service/Method, so the match is
// a path match callers' proxies and proxyless gRPC clients both apply.
//
// +kubebuilder:validation:XValidation:rule="has(self.method) != has(self.service)",message="set exactly one of method (Charge, or package.Service/Charge) and service (package.Service)"
type GRPCMatch struct {
	// method is a method name, e.g. Charge, which matches that method of every service the Service
	// serves (a regular expression on the path, /[^/]+/Charge), or service/method, e.g.
	// meshplane.payments.v1.PaymentService/Charge, which matches exactly that path.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^([A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*/)?[A-Za-z_][A-Za-z0-9_]*$`
	Method string `json:"method,omitempty"`

	// service is a full service name, e.g. meshplane.payments.v1.PaymentService, which matches every
	// method of it (the path prefix /meshplane.payments.v1.PaymentService/).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*$`
	Service string `json:"service,omitempty"`
}

// HTTPMethod is an HTTP request method.
//
// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;OPTIONS;PATCH
type HTTPMethod string

// HTTPMatch selects HTTP requests. A match that would select every request (no method, no headers and
// no path or the prefix /) is rejected: that is what the top-level fields are for.
//
// +kubebuilder:validation:XValidation:rule="has(self.method) || has(self.headers) || (has(self.path) && !(has(self.path.type) && self.path.type == 'Prefix' && has(self.path.value) && self.path.value == '/'))",message="matches every request: set a path other than the prefix /, a method or headers, or set these fields at the top level of spec"
type HTTPMatch struct {
	// path matches the request path, without the query string.
	// +optional
	Path *PathMatch `json:"path,omitempty"`

	// method matches the request method.
	// +optional
	Method *HTTPMethod `json:"method,omitempty"`

	// headers must all be present with exactly these values.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	Headers []HeaderMatch `json:"headers,omitempty"`
}

// PathMatchType says how a path is compared.
//
// +kubebuilder:validation:Enum=Exact;Prefix
type PathMatchType string

// The path match types.
const (
	// PathExact matches exactly the path.
	PathExact PathMatchType = "Exact"
	// PathPrefix matches paths that start with the value, character by character as Istio's uri.prefix
	// does: /v1 matches /v1/orders and /v1beta; end the value with / to match whole segments.
	PathPrefix PathMatchType = "Prefix"
)

// PathMatch matches the request path.
type PathMatch struct {
	// type is Exact or Prefix.
	// +required
	Type PathMatchType `json:"type"`

	// value is the path or prefix; it starts with / and holds no spaces, query (?) or fragment (#).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^/[^\s?#]*$`
	Value string `json:"value"`
}

// HeaderMatch requires a request header with an exact value.
type HeaderMatch struct {
	// name is the header name in lowercase, e.g. x-tenant. Istio ignores matches on the names method,
	// uri, scheme and authority (use match.http.method or the path instead), so they are rejected.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[a-z0-9][-a-z0-9_.]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['method', 'uri', 'scheme', 'authority'])",message="Istio ignores header matches on method, uri, scheme and authority: use match.http.method or match.http.path"
	Name string `json:"name"`

	// value the header must have, exactly.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Value string `json:"value"`
}

// Fault injects failures into calls on purpose. Callers' proxies (Envoy's fault filter, or gRPC's own
// for proxyless clients, gRFC A33) apply it before the call leaves: an aborted call never reaches the
// Service and is not retried.
//
// +kubebuilder:validation:MinProperties=1
type Fault struct {
	// delay holds a share of calls back before sending them.
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`

	// abort fails a share of calls at once with a status code.
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds a percentage of calls back for a fixed time.
type FaultDelay struct {
	// fixedDelay is how long a delayed call waits before it is sent, at least 1ms. It counts against the
	// timeout.
	// +required
	FixedDelay Duration `json:"fixedDelay"`

	// percentage of calls delayed, 0 to 100.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percentage *int32 `json:"percentage,omitempty"`
}

// AbortCode is what aborted calls fail with: a gRPC code other than OK for gRPC callers, e.g.
// UNAVAILABLE, or an HTTP status from 400 to 599 for HTTP callers, written as a string ("503") as in
// retryOn. One field for both, so an abort always has exactly one code.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self in ['CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'] || self.matches('^[45][0-9][0-9]$')",messageExpression="'%s is not a gRPC code other than OK (CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED) nor an HTTP status from 400 to 599 such as 503, written as a string'.format([self])"
type AbortCode string

// FaultAbort fails a percentage of calls at once with a code.
type FaultAbort struct {
	// percentage of calls aborted, 0 to 100.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percentage *int32 `json:"percentage,omitempty"`

	// code aborted calls fail with: a gRPC code such as UNAVAILABLE for gRPC callers, or an HTTP status
	// such as "503" for HTTP callers (a gRPC client reads an HTTP status as the matching code: 503 is
	// UNAVAILABLE).
	// +required
	Code AbortCode `json:"code"`
}

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
	// the fields and the fix; a warning only: it never changes Accepted or Ready) and, with spec.canary,
	// Canary (True once promoted, False when rolled back or unable to move, Unknown while progressing).
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

	// canary is where the rollout of spec.canary stands: phase, the candidate's weight in force, and the
	// last check with its values. Unlike the rest of status it is the rollout's memory: the operator
	// resumes from it.
	// +optional
	Canary *CanaryStatus `json:"canary,omitempty"`
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
	// fault is the fault callers inject, in words; empty means none.
	// +optional
	Fault string `json:"fault,omitempty"`
	// routes are the VirtualService http[] routes in the order callers try them, the default route (the
	// fields above) last. Set when the policy has routes or the safe-retry rule splits a route.
	// +optional
	// +listType=atomic
	Routes []EffectiveRoute `json:"routes,omitempty"`
}

// EffectiveRoute is what the calls one generated route takes get.
type EffectiveRoute struct {
	// name of the VirtualService http[] route: the spec route's name, default, or one of them followed by
	// .non-idempotent or .idempotency-key for the routes the safe-retry rule adds.
	Name string `json:"name"`
	// match says which calls the route takes, e.g. "gRPC /meshplane.payments.v1.PaymentService/Charge".
	Match string `json:"match"`
	// timeout bounds each call; empty means no route timeout.
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
	// worstCaseAttempts is the most requests one call can cause: 1 + attempts.
	WorstCaseAttempts int32 `json:"worstCaseAttempts"`
	// worstCaseWait is the longest a caller can wait, as for the policy; empty means unbounded.
	// +optional
	WorstCaseWait string `json:"worstCaseWait,omitempty"`
	// fault is the fault callers inject, in words; empty means none.
	// +optional
	Fault string `json:"fault,omitempty"`
	// inherited lists the fields the route takes from the top level (timeout, retries, fault).
	// +optional
	Inherited []string `json:"inherited,omitempty"`
	// note says why the route exists or differs from what the spec route asks, e.g. the safe-retry rule.
	// +optional
	Note string `json:"note,omitempty"`
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
	// ConditionCanary is where spec.canary's rollout stands: True once promoted, False when rolled back or
	// unable to move (PrometheusNotConfigured, HostConflict, ...), Unknown while it progresses; the reason
	// and message say which and why.
	ConditionCanary = "Canary"
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
