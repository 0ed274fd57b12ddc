package desiredstate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"

	"meshplane.dev/operator/api/v1alpha1"
)

// IdempotencyKeyHeader is the request header that marks a request as safe to repeat: the server
// deduplicates it by the key (the shop's convention, as in IETF draft-ietf-httpapi-idempotency-key).
const IdempotencyKeyHeader = "idempotency-key"

// Suffixes of the routes the safe-retry rule adds before a route (route names are DNS labels, so a
// dotted name never collides with one a team chose).
const (
	// SuffixNonIdempotent names the route that takes a route's POST and PATCH requests without an
	// Idempotency-Key, retried only where the request cannot have reached the Service.
	SuffixNonIdempotent = ".non-idempotent"
	// SuffixIdempotencyKey names the route that takes a route's calls with an Idempotency-Key when the
	// route says idempotent: false: those may be retried as declared.
	SuffixIdempotencyKey = ".idempotency-key"
)

// BeforeTheServer are the retry conditions under which the request cannot have reached the
// application: no connection, a stream the server refused, a reset before any byte was sent, an
// HTTP/3 connect failure, or a rate limiter in front of the Service saying no. Retrying on them cannot
// repeat a side effect.
var BeforeTheServer = []v1alpha1.RetryCondition{"connect-failure", "refused-stream", "reset-before-request",
	"http3-post-connect-failure", "envoy-ratelimited"}

// gRPCStatusConditions fire only on responses that carry a grpc-status, so never on plain HTTP.
var gRPCStatusConditions = []v1alpha1.RetryCondition{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// istioDefaultRetryOn is what Istio retries on when retryOn is empty (pilot's retry.DefaultPolicy; no
// status codes are listed, so retriable-status-codes matches nothing).
var istioDefaultRetryOn = []v1alpha1.RetryCondition{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}

// nonIdempotentMethods are the HTTP methods that may change state each time they are repeated
// (RFC 9110 §9.2.2: PUT and DELETE are idempotent).
var nonIdempotentMethods = []v1alpha1.HTTPMethod{"POST", "PATCH"}

// plan is one generated VirtualService http[] route before it becomes Istio's type.
type plan struct {
	name string
	// match is nil for the default route, which takes every call.
	match     *networkingapi.HTTPMatchRequest
	matchText string
	timeout   *v1alpha1.Duration
	// retries are never nil: attempts 0 when off.
	retries   *v1alpha1.Retries
	fault     *v1alpha1.Fault
	inherited []string
	note      string
}

// planRoutes returns the http[] routes of spec in the order callers try them: the spec's routes most
// specific first, then the default route, each preceded by what the safe-retry rule adds.
// defaultRetries are the retries of the top level (the platform default when spec.retries is unset).
func planRoutes(spec *v1alpha1.TrafficPolicySpec, defaultRetries *v1alpha1.Retries) []plan {
	var out []plan
	for _, r := range Ordered(spec.Routes) {
		p := plan{name: r.Name, timeout: r.Timeout, retries: r.Retries, fault: r.Fault}
		p.match, p.matchText = istioMatch(r.Match)
		// Inherited lists what the route takes from the top level that is there to take; retries always
		// are, the platform default when spec.retries is unset.
		if p.timeout == nil {
			p.timeout = spec.Timeout
			if p.timeout != nil {
				p.inherited = append(p.inherited, "timeout")
			}
		}
		if p.retries == nil {
			p.retries = defaultRetries
			p.inherited = append(p.inherited, "retries")
		}
		if p.fault == nil {
			p.fault = spec.Fault
			if p.fault != nil {
				p.inherited = append(p.inherited, "fault")
			}
		}
		out = append(out, safeRetries(p, r.Match, r.Idempotent)...)
	}
	def := plan{name: v1alpha1.DefaultRouteName, matchText: "every other call", timeout: spec.Timeout, retries: defaultRetries, fault: spec.Fault}
	return append(out, safeRetries(def, v1alpha1.RouteMatch{}, nil)...)
}

// Ordered returns routes most specific first, as Gateway API ranks HTTPRoute rules: an exact path (a
// gRPC service/method is one), then a gRPC method name (any service), then the longest prefix (a gRPC
// service is one), then no path; within those, a route that also matches a method first, then the one
// with more headers; equally specific routes keep their order in the list. A route that is a superset
// of another therefore never comes first, so no route hides one that differs from it.
func Ordered(routes []v1alpha1.Route) []v1alpha1.Route {
	out := slices.Clone(routes)
	slices.SortStableFunc(out, func(a, b v1alpha1.Route) int {
		ka, kb := specificity(a.Match), specificity(b.Match)
		return cmp.Or(cmp.Compare(ka.kind, kb.kind), cmp.Compare(kb.length, ka.length),
			cmp.Compare(kb.method, ka.method), cmp.Compare(kb.headers, ka.headers))
	})
	return out
}

// rank orders routes by specificity: lower kind first, then longer prefix, then method, then headers.
type rank struct {
	// kind: 0 exact path, 1 gRPC method name, 2 prefix, 3 any path.
	kind int
	// length of a prefix; 0 for the other kinds.
	length int
	// method is 1 when the route also matches a method.
	method int
	// headers is the number of headers matched.
	headers int
}

func specificity(m v1alpha1.RouteMatch) rank {
	if g := m.GRPC; g != nil {
		switch {
		case g.Service != "":
			return rank{kind: 2, length: len(g.Service) + 2}
		case strings.Contains(g.Method, "/"):
			return rank{kind: 0}
		default:
			return rank{kind: 1}
		}
	}
	h := m.HTTP
	r := rank{kind: 3, headers: len(h.Headers)}
	if h.Method != nil {
		r.method = 1
	}
	if h.Path != nil && (h.Path.Type != v1alpha1.PathPrefix || h.Path.Value != "/") {
		// Only prefixes overlap by length; exact paths overlap only when equal.
		r.kind, r.length = 2, len(h.Path.Value)
		if h.Path.Type == v1alpha1.PathExact {
			r.kind, r.length = 0, 0
		}
	}
	return r
}

// MatchText says which calls m selects, in the words of status.effective.routes[].match.
func MatchText(m v1alpha1.RouteMatch) string {
	_, text := istioMatch(m)
	return text
}

// istioMatch turns a route's match into Istio's, and into words. A gRPC call is an HTTP/2 POST to
// /package.Service/Method, so a gRPC match is a path match: exact for service/method, a prefix for a
// service, and for a bare method name the regular expression /[^/]+/Method (Envoy and gRPC's xDS
// client, gRFC A28, both match the whole path against safe_regex).
func istioMatch(m v1alpha1.RouteMatch) (*networkingapi.HTTPMatchRequest, string) {
	if g := m.GRPC; g != nil {
		switch {
		case g.Service != "":
			return &networkingapi.HTTPMatchRequest{Uri: prefix("/" + g.Service + "/")}, "gRPC service /" + g.Service + "/*"
		case strings.Contains(g.Method, "/"):
			return &networkingapi.HTTPMatchRequest{Uri: exact("/" + g.Method)}, "gRPC /" + g.Method
		default:
			return &networkingapi.HTTPMatchRequest{Uri: regex("/[^/]+/" + g.Method)}, "gRPC /*/" + g.Method
		}
	}
	h := m.HTTP
	out := &networkingapi.HTTPMatchRequest{}
	words := []string{"HTTP"}
	if h.Method != nil {
		out.Method = exact(string(*h.Method))
		words = append(words, string(*h.Method))
	}
	switch {
	case h.Path == nil || (h.Path.Type == v1alpha1.PathPrefix && h.Path.Value == "/"):
		words = append(words, "(any path)")
	case h.Path.Type == v1alpha1.PathExact:
		out.Uri = exact(h.Path.Value)
		words = append(words, h.Path.Value)
	default:
		out.Uri = prefix(h.Path.Value)
		words = append(words, h.Path.Value+"*")
	}
	if len(h.Headers) > 0 {
		out.Headers = map[string]*networkingapi.StringMatch{}
		var hs []string
		for _, hm := range h.Headers {
			out.Headers[hm.Name] = exact(hm.Value)
			hs = append(hs, hm.Name+"="+hm.Value)
		}
		words = append(words, "with "+strings.Join(hs, ","))
	}
	return out, strings.Join(words, " ")
}

// safeRetries applies the safe-retry rule to p: it returns p, preceded by the route it splits off, if
// any. With idempotent unset, POST and PATCH requests without an Idempotency-Key go to a route of their
// own retried only on BeforeTheServer, when p retries on HTTP responses (5xx, gateway-error, reset,
// status codes …): Envoy cannot make a retry policy depend on the method, so the method has to be a
// route. gRPC calls (every one a POST) are left out by their content-type; a gRPC method's route says
// what it needs. idempotent: false narrows p itself to BeforeTheServer and sends calls with an
// Idempotency-Key to a route retried as declared; idempotent: true leaves p as declared.
func safeRetries(p plan, m v1alpha1.RouteMatch, idempotent *bool) []plan {
	if *p.retries.Attempts == 0 || hasHeader(m, IdempotencyKeyHeader) {
		return []plan{p}
	}
	conditions := p.retries.RetryOn
	if len(conditions) == 0 {
		conditions = istioDefaultRetryOn
	}
	switch {
	case idempotent != nil && *idempotent:
		return []plan{p}
	case idempotent != nil:
		if !slices.ContainsFunc(conditions, func(c v1alpha1.RetryCondition) bool {
			return !slices.Contains(BeforeTheServer, c) && !slices.Contains(inertConditions, c)
		}) {
			return []plan{p}
		}
		keyed := p
		keyed.name += SuffixIdempotencyKey
		keyed.match = cloneMatch(p.match)
		if keyed.match.Headers == nil {
			keyed.match.Headers = map[string]*networkingapi.StringMatch{}
		}
		keyed.match.Headers[IdempotencyKeyHeader] = &networkingapi.StringMatch{} // present
		keyed.matchText = p.matchText + " with Idempotency-Key"
		keyed.note = "idempotent: false, but the caller sent an Idempotency-Key: retried as declared"
		p.retries = beforeTheServer(p.retries, conditions)
		p.note = "idempotent: false: retried only where the call cannot have reached the Service"
		return []plan{keyed, p}
	}
	if !slices.ContainsFunc(conditions, repeatsHTTPRequests) || m.GRPC != nil {
		return []plan{p}
	}
	method := regex(strings.Join(asStrings(nonIdempotentMethods), "|"))
	text := "HTTP POST|PATCH without Idempotency-Key"
	if p.match != nil {
		text = p.matchText + ", POST|PATCH without Idempotency-Key"
	}
	if m.HTTP != nil && m.HTTP.Method != nil {
		if !slices.Contains(nonIdempotentMethods, *m.HTTP.Method) {
			return []plan{p}
		}
		method, text = exact(string(*m.HTTP.Method)), p.matchText+" without Idempotency-Key"
	}
	split := p
	split.name += SuffixNonIdempotent
	split.match = cloneMatch(p.match)
	split.match.Method = method
	split.match.WithoutHeaders = map[string]*networkingapi.StringMatch{
		IdempotencyKeyHeader: {}, // absent
		"content-type":       prefix("application/grpc"),
	}
	split.matchText = text
	split.retries = beforeTheServer(p.retries, conditions)
	split.note = "safe-retry rule: a non-idempotent request is retried only where it cannot have reached the Service"
	return []plan{split, p}
}

// inertConditions never fire as Istio configures Envoy: retriable-status-codes retries only the status
// codes listed beside it (which count on their own), and Istio sets no retriable headers.
var inertConditions = []v1alpha1.RetryCondition{"retriable-status-codes", "retriable-headers"}

// repeatsHTTPRequests reports whether c retries an HTTP request after the Service may have handled it
// (5xx, gateway-error, reset, retriable-4xx, a status code): not a condition before the server, not one
// that needs a gRPC status, not an inert one.
func repeatsHTTPRequests(c v1alpha1.RetryCondition) bool {
	return !slices.Contains(BeforeTheServer, c) && !slices.Contains(gRPCStatusConditions, c) && !slices.Contains(inertConditions, c)
}

// beforeTheServer returns r retried only on those of conditions that are BeforeTheServer; with none
// left, retries are off.
func beforeTheServer(r *v1alpha1.Retries, conditions []v1alpha1.RetryCondition) *v1alpha1.Retries {
	var kept []v1alpha1.RetryCondition
	for _, c := range conditions {
		if slices.Contains(BeforeTheServer, c) {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		zero := int32(0)
		return &v1alpha1.Retries{Attempts: &zero}
	}
	out := *r
	out.RetryOn = kept
	return &out
}

func hasHeader(m v1alpha1.RouteMatch, name string) bool {
	return m.HTTP != nil && slices.ContainsFunc(m.HTTP.Headers, func(h v1alpha1.HeaderMatch) bool { return h.Name == name })
}

// httpRoute turns a plan into Istio's http[] route, sending to dests.
func httpRoute(p plan, dests []*networkingapi.HTTPRouteDestination) *networkingapi.HTTPRoute {
	route := &networkingapi.HTTPRoute{Name: p.name, Retries: &networkingapi.HTTPRetry{Attempts: *p.retries.Attempts}, Route: dests}
	if p.match != nil {
		route.Match = []*networkingapi.HTTPMatchRequest{p.match}
	}
	if p.timeout != nil {
		route.Timeout = protoDuration(*p.timeout)
	}
	if p.retries.PerTryTimeout != nil {
		route.Retries.PerTryTimeout = protoDuration(*p.retries.PerTryTimeout)
	}
	if len(p.retries.RetryOn) > 0 {
		route.Retries.RetryOn = joinConditions(p.retries.RetryOn)
	}
	if f := p.fault; f != nil {
		route.Fault = &networkingapi.HTTPFaultInjection{}
		if d := f.Delay; d != nil {
			route.Fault.Delay = &networkingapi.HTTPFaultInjection_Delay{
				Percentage:    &networkingapi.Percent{Value: float64(*d.Percentage)},
				HttpDelayType: &networkingapi.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: protoDuration(d.FixedDelay)},
			}
		}
		if a := f.Abort; a != nil {
			route.Fault.Abort = &networkingapi.HTTPFaultInjection_Abort{Percentage: &networkingapi.Percent{Value: float64(*a.Percentage)}}
			if status, ok := a.Code.HTTPStatus(); ok {
				route.Fault.Abort.ErrorType = &networkingapi.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: status}
			} else {
				route.Fault.Abort.ErrorType = &networkingapi.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: string(a.Code)}
			}
		}
	}
	return route
}

// effectiveRoute is what the calls p takes get, in the status's words.
func effectiveRoute(p plan) v1alpha1.EffectiveRoute {
	b := behaviour(p.timeout, p.retries)
	return v1alpha1.EffectiveRoute{
		Name: p.name, Match: p.matchText, Timeout: b.Timeout, Attempts: b.Attempts, PerTryTimeout: b.PerTryTimeout,
		RetryOn: b.RetryOn, WorstCaseAttempts: b.WorstCaseAttempts, WorstCaseWait: b.WorstCaseWait,
		Fault: FaultText(p.fault), Inherited: p.inherited, Note: p.note,
	}
}

// FaultText says what f injects, e.g. "delay 2s to 10%, abort UNAVAILABLE to 5%"; empty for none.
func FaultText(f *v1alpha1.Fault) string {
	if f == nil {
		return ""
	}
	var parts []string
	if d := f.Delay; d != nil {
		parts = append(parts, fmt.Sprintf("delay %s to %d%%", mustParse(d.FixedDelay), *d.Percentage))
	}
	if a := f.Abort; a != nil {
		parts = append(parts, fmt.Sprintf("abort %s to %d%%", a.Code, *a.Percentage))
	}
	return strings.Join(parts, ", ")
}

// behaviour is the timeout and retries of one route with its worst cases: without a per-try timeout an
// attempt is bounded only by the route timeout; with both, the route timeout cuts the retry chain
// short (istio/istio#21137).
func behaviour(timeoutD *v1alpha1.Duration, r *v1alpha1.Retries) v1alpha1.EffectivePolicy {
	e := v1alpha1.EffectivePolicy{Attempts: *r.Attempts, WorstCaseAttempts: 1 + *r.Attempts}
	for _, c := range r.RetryOn {
		e.RetryOn = append(e.RetryOn, string(c))
	}
	var timeout, perTry time.Duration
	if timeoutD != nil {
		timeout = mustParse(*timeoutD)
		e.Timeout = timeout.String()
	}
	if r.PerTryTimeout != nil && *r.Attempts > 0 {
		perTry = mustParse(*r.PerTryTimeout)
		e.PerTryTimeout = perTry.String()
	}
	var wait time.Duration
	switch {
	case timeout > 0 && perTry > 0:
		wait = min(timeout, time.Duration(e.WorstCaseAttempts)*perTry)
	case timeout > 0:
		wait = timeout
	case perTry > 0:
		wait = time.Duration(e.WorstCaseAttempts) * perTry
	}
	if wait > 0 {
		e.WorstCaseWait = wait.String()
	}
	return e
}

func exact(s string) *networkingapi.StringMatch {
	return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *networkingapi.StringMatch {
	return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: s}}
}

func regex(s string) *networkingapi.StringMatch {
	return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: s}}
}

// cloneMatch returns a copy of m (an empty match for nil) whose header maps can be changed.
func cloneMatch(m *networkingapi.HTTPMatchRequest) *networkingapi.HTTPMatchRequest {
	out := &networkingapi.HTTPMatchRequest{}
	if m != nil {
		out.Uri, out.Method = m.Uri, m.Method
		if m.Headers != nil {
			out.Headers = map[string]*networkingapi.StringMatch{}
			for k, v := range m.Headers {
				out.Headers[k] = v
			}
		}
	}
	return out
}

func asStrings[S ~string](s []S) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}
