package callgraph

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
)

// SafeRetryOn are the retry conditions that fire only before a request reached the server, so retrying
// on them cannot repeat what the server did, nor anything it would have called: a refused connection or
// stream, a reset before the request was sent. Every other condition answers a response or a failure
// after the request was sent (5xx, unavailable, cancelled, reset, ...), which a server may cause after
// it ran the request and called others: orders answers UNAVAILABLE when payments fails.
var SafeRetryOn = []string{"connect-failure", "refused-stream", "reset-before-request"}

// GRPCRetryOn are the conditions that match a gRPC status; on a Service that speaks plain HTTP only
// (Input.PlainHTTP) they never fire.
var GRPCRetryOn = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// IstioDefaultRetryOn are the conditions Istio retries on when a route sets attempts but no retryOn.
var IstioDefaultRetryOn = []string{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}

// Analyze computes, for every path of the graph, the worst-case attempts reaching each service and the
// worst-case wait of each call, and reports what is wrong with them together. It never fails on the
// graph's shape or contents (cycles, unknown services, invalid policies are findings); only invalid
// defaults are an error.
func Analyze(in Input) (*Report, error) {
	if err := in.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("invalid defaults: %w", err)
	}
	a := &analysis{
		in: in, maxAmplification: in.Options.MaxAmplification, maxPaths: in.Options.MaxPaths,
		exists: map[Service]bool{}, declared: map[Service]bool{}, plainHTTP: map[Service]bool{}, policies: map[Service]*callee{},
		missing: map[Service]bool{}, defaults: map[Service]*callee{}, out: map[Service][]int{},
		into: map[Service][]int{}, nonIdempotent: map[Target]bool{}, reached: map[Service]bool{},
		worst: map[Service]Path{}, seen: map[string]bool{}, cycles: map[string]bool{},
		routes: map[Service][]v1alpha1.EffectiveRoute{}, routeCallees: map[string]*callee{},
	}
	if a.maxAmplification <= 0 {
		a.maxAmplification = DefaultMaxAmplification
	}
	if a.maxPaths <= 0 {
		a.maxPaths = DefaultMaxPaths
	}
	if err := a.readPolicies(); err != nil {
		return nil, err
	}
	a.readCalls()
	a.walk()
	for _, c := range a.calls {
		a.checkTimeout(c)
		a.checkNonIdempotent(c)
	}
	a.checkRedundant()
	a.checkAboveNonIdempotent()
	a.checkAmplification()
	if a.truncated {
		a.add(Finding{Kind: KindTruncated,
			Message: fmt.Sprintf("the graph has more than %d paths (or %d steps); the analysis stopped there, so amplification may be understated", a.maxPaths, a.maxSteps()),
			Fix:     "check parts of the graph separately (fewer -f or --graph inputs)"})
	}
	slices.SortFunc(a.findings, func(x, y Finding) int {
		if x.Severity != y.Severity {
			return int(y.Severity - x.Severity)
		}
		if k := kindOrder(x.Kind) - kindOrder(y.Kind); k != 0 {
			return k
		}
		if p := strings.Compare(joinServices(x.Path), joinServices(y.Path)); p != 0 {
			return p
		}
		return strings.Compare(x.Message, y.Message)
	})
	return &Report{Calls: a.calls, Paths: a.paths, Findings: a.findings, MaxAmplification: a.maxAmplification}, nil
}

func kindOrder(k Kind) int {
	for i, ks := range Kinds {
		if ks.Kind == k {
			return i
		}
	}
	return len(Kinds)
}

type analysis struct {
	in                 Input
	maxAmplification   int64
	maxPaths           int
	exists, declared   map[Service]bool
	plainHTTP          map[Service]bool
	policies, defaults map[Service]*callee
	// routes are the routes of each policy in the order callers try them; routeCallees their callees.
	routes        map[Service][]v1alpha1.EffectiveRoute
	routeCallees  map[string]*callee
	missing       map[Service]bool // targets of policies whose Service does not exist
	calls         []Call
	out, into     map[Service][]int // call indices by caller, by callee
	nonIdempotent map[Target]bool
	reached       map[Service]bool
	worst         map[Service]Path // the path with the most attempts reaching each service
	paths         []Path
	steps         int
	truncated     bool
	findings      []Finding
	seen          map[string]bool // findings already added, so parallel calls report once
	cycles        map[string]bool // loops already reported
}

func (a *analysis) maxSteps() int { return 10 * a.maxPaths }

func (a *analysis) add(f Finding) {
	f.Severity = severityOf(f.Kind)
	slices.Sort(f.Policies)
	f.Policies = slices.Compact(f.Policies)
	key := string(f.Kind) + "|" + joinServices(f.Path) + "|" + f.Message
	if a.seen[key] {
		return
	}
	a.seen[key] = true
	a.findings = append(a.findings, f)
}

// readPolicies decides which Services exist and computes each policy's effective behaviour.
func (a *analysis) readPolicies() error {
	for _, s := range a.in.Graph.Services {
		a.declared[s] = true
	}
	for _, s := range a.in.PlainHTTP {
		a.plainHTTP[s] = true
	}
	if a.in.ServicesKnown {
		for _, s := range a.in.Services {
			a.exists[s] = true
		}
	}
	policies := slices.Clone(a.in.Policies)
	slices.SortStableFunc(policies, func(x, y *v1alpha1.TrafficPolicy) int {
		return Service{x.Namespace, x.Name}.compare(Service{y.Namespace, y.Name})
	})
	for _, p := range policies {
		target := Service{Namespace: p.Namespace, Name: p.Spec.TargetRef.Name}
		name := p.Namespace + "/" + p.Name
		if _, dup := a.policies[target]; dup || a.missing[target] {
			continue
		}
		if a.in.ServicesKnown && !a.exists[target] {
			a.missing[target] = true
			a.add(Finding{Kind: KindPolicyWithoutService, Path: []Service{target}, Policies: []string{name},
				Message: fmt.Sprintf("TrafficPolicy %s targets Service %s, which does not exist: nothing calls it, so it is left out", name, target),
				Fix:     fmt.Sprintf("create Service %s, or delete TrafficPolicy %s", target, name)})
			continue
		}
		a.exists[target] = true
		eff, err := desiredstate.Effective(p, a.in.Defaults)
		if invalid, ok := errors.AsType[*desiredstate.InvalidError](err); ok {
			a.add(Finding{Kind: KindInvalidPolicy, Path: []Service{target}, Policies: []string{name},
				Message: fmt.Sprintf("TrafficPolicy %s is invalid (%s): %s is analysed with the platform defaults", name, invalid.Error(), target),
				Fix:     "fix the policy: meshplane render -f FILE lists every problem"})
			continue
		}
		if err != nil {
			return err
		}
		a.policies[target] = newCallee(target, name, eff)
		a.routes[target] = eff.Routes
		a.policies[target].plainHTTP = a.plainHTTP[target]
	}
	for _, t := range a.in.Graph.NonIdempotent {
		a.nonIdempotent[t] = true
	}
	return nil
}

// readCalls keeps the calls whose services are known, reporting the others.
func (a *analysis) readCalls() {
	for _, c := range Merge(a.in.Graph).Calls {
		if a.missing[c.To] && !slices.Contains(c.Sources, SourceFile) {
			continue // reported with the policy
		}
		// Only a graph file can misspell a service: allow lists name callers by service account and their
		// policy's target, istiod names what exists.
		if slices.Equal(c.Sources, []string{SourceFile}) {
			var unknown []string
			for _, s := range []Service{c.From, c.To} {
				if !a.known(s) {
					unknown = append(unknown, a.unknownMessage(s))
				}
			}
			if len(unknown) > 0 {
				a.add(Finding{Kind: KindUnknownService, Path: []Service{c.From, c.To},
					Message: fmt.Sprintf("the graph file's call %s names %s; the call is left out", c, strings.Join(unknown, " and ")),
					Fix:     "correct the name, or declare the service under services: in the graph file (callers without a Service, such as a job, must be declared)"})
				continue
			}
		}
		a.calls = append(a.calls, c)
	}
	for i, c := range a.calls {
		a.out[c.From] = append(a.out[c.From], i)
		a.into[c.To] = append(a.into[c.To], i)
	}
}

func (a *analysis) known(s Service) bool { return a.exists[s] || a.declared[s] }

func (a *analysis) unknownMessage(s Service) string {
	what := "a TrafficPolicy's target or a service declared in the graph file"
	if a.in.ServicesKnown {
		what = "a Service or a service declared in the graph file"
	}
	msg := fmt.Sprintf("%s, which is not %s", s, what)
	var near []string
	for k := range maps.Keys(a.exists) {
		if (k.Namespace == s.Namespace && distance(k.Name, s.Name) <= 2) || (k.Name == s.Name && k.Namespace != s.Namespace) {
			near = append(near, k.String())
		}
	}
	for k := range maps.Keys(a.declared) {
		if k.Namespace == s.Namespace && distance(k.Name, s.Name) <= 2 && !slices.Contains(near, k.String()) {
			near = append(near, k.String())
		}
	}
	if len(near) > 0 {
		slices.Sort(near)
		msg += " (did you mean " + strings.Join(near, " or ") + "?)"
	}
	return msg
}

// distance is the Levenshtein distance, for "did you mean".
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// callee is how callers' requests to one Service behave: its policy, or the platform defaults.
type callee struct {
	service Service
	// path is where its fields are in the policy: "" for the top level (spec), spec.routes[NAME] for a
	// route's.
	path string
	// policy is the TrafficPolicy's namespace/name; "" when the platform defaults apply.
	policy string
	// defaultRetries: the retries are the platform default (no policy, or spec.retries unset).
	defaultRetries        bool
	retries               int32
	timeout, perTry, wait time.Duration
	retryOn               []string
	istioRetryOn          bool // retries without retryOn: Istio's default conditions apply
	timeoutSet, perTrySet bool
	// plainHTTP: the Service speaks plain HTTP only, so gRPC conditions never fire.
	plainHTTP bool
}

func newCallee(s Service, policy string, e v1alpha1.EffectivePolicy) *callee {
	c := &callee{service: s, policy: policy, defaultRetries: e.DefaultRetries || policy == "", retries: e.Attempts,
		retryOn: slices.Clone(e.RetryOn)}
	c.timeout, c.timeoutSet = parse(e.Timeout)
	c.perTry, c.perTrySet = parse(e.PerTryTimeout)
	c.wait, _ = parse(e.WorstCaseWait)
	if c.retries > 0 && len(c.retryOn) == 0 {
		c.retryOn, c.istioRetryOn = slices.Clone(IstioDefaultRetryOn), true
	}
	return c
}

// parse reads a duration the effective policy wrote with time.Duration.String.
func parse(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false
	}
	return d, true
}

func (c *callee) attempts() int64 { return 1 + int64(c.retries) }

// calleeOf returns how calls to s behave. Policies are per Service today; per-method routes would be
// looked up by Target here first.
// calleeFor is what callers get on call c: when c names a method and c.To's policy has routes, the first
// route that takes it (as callers try them), else the policy's top level.
func (a *analysis) calleeFor(c Call) *callee {
	base := a.calleeOf(c.To)
	if c.Method == "" {
		return base
	}
	for _, r := range a.routes[c.To] {
		if !routeTakesMethod(r.Match, c.Method) {
			continue
		}
		if r.Name == v1alpha1.DefaultRouteName {
			return base
		}
		key := c.To.String() + "#" + r.Name
		if rc := a.routeCallees[key]; rc != nil {
			return rc
		}
		rc := newCallee(c.To, base.policy, v1alpha1.EffectivePolicy{Timeout: r.Timeout, Attempts: r.Attempts,
			PerTryTimeout: r.PerTryTimeout, RetryOn: r.RetryOn, WorstCaseWait: r.WorstCaseWait,
			DefaultRetries: base.defaultRetries && slices.Contains(r.Inherited, "retries")})
		rc.plainHTTP, rc.path = base.plainHTTP, "spec.routes["+r.Name+"]"
		a.routeCallees[key] = rc
		return rc
	}
	return base
}

// routeTakesMethod says whether a route, by its effective match text ("gRPC /pkg.Service/Method",
// "gRPC /*/Method", "gRPC service /pkg.Service/*", "every other call"), takes calls of method (a bare
// name or Service/Method). A bare method is taken as the callee's: the graph names the Service already.
func routeTakesMethod(match, method string) bool {
	bare := method[strings.LastIndex(method, "/")+1:]
	switch {
	case match == "every other call":
		return true
	case strings.HasPrefix(match, "gRPC service /"):
		svc := strings.TrimSuffix(strings.TrimPrefix(match, "gRPC service /"), "/*")
		return !strings.Contains(method, "/") || strings.HasPrefix(method, svc+"/")
	case strings.HasPrefix(match, "gRPC /*/"):
		return strings.TrimPrefix(match, "gRPC /*/") == bare
	case strings.HasPrefix(match, "gRPC /"):
		full := strings.TrimPrefix(match, "gRPC /")
		if strings.Contains(method, "/") {
			return full == method
		}
		return full[strings.LastIndex(full, "/")+1:] == bare
	}
	return false // an HTTP route: gRPC calls never take it
}

func (a *analysis) calleeOf(s Service) *callee {
	if c := a.policies[s]; c != nil {
		return c
	}
	if c := a.defaults[s]; c != nil {
		return c
	}
	bare := &v1alpha1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
		Spec: v1alpha1.TrafficPolicySpec{TargetRef: v1alpha1.TargetRef{Name: s.Name}}}
	e, err := desiredstate.Effective(bare, a.in.Defaults)
	if err != nil {
		// The defaults were validated and a bare policy has nothing else to get wrong; a name that is not
		// a DNS label (from a hand-built graph) still gets the defaults' numbers.
		r := a.in.Defaults.Retries
		e = v1alpha1.EffectivePolicy{DefaultRetries: true}
		if r.Attempts != nil {
			e.Attempts = *r.Attempts
		}
		for _, on := range r.RetryOn {
			e.RetryOn = append(e.RetryOn, string(on))
		}
		if r.PerTryTimeout != nil && e.Attempts > 0 {
			if d, perr := r.PerTryTimeout.Parse(); perr == nil {
				e.PerTryTimeout = d.String()
				e.WorstCaseWait = (time.Duration(1+e.Attempts) * d).String()
			}
		}
		if e.Attempts == 0 {
			e.RetryOn = nil
		}
	}
	c := newCallee(s, "", e)
	c.plainHTTP = a.plainHTTP[s]
	a.defaults[s] = c
	return c
}

// at returns a spec field's path for this callee: under its route's, when it is a route.
func (c *callee) at(name string) string {
	if c.path == "" {
		return name
	}
	return c.path + strings.TrimPrefix(name, "spec")
}

func (c *callee) field(name, value string, isDefault bool) Field {
	name = c.at(name)
	return Field{Service: c.service, Policy: c.policy, Field: name, Value: value, Default: isDefault}
}

func (c *callee) attemptsField() Field {
	return c.field("spec.retries.attempts", fmt.Sprint(c.retries), c.defaultRetries)
}

func (c *callee) timeoutField() Field {
	v := "none"
	if c.timeoutSet {
		v = apiDuration(c.timeout)
	}
	return c.field("spec.timeout", v, false)
}

func (c *callee) perTryField() Field {
	v := "none"
	if c.perTrySet {
		v = apiDuration(c.perTry)
	}
	return c.field("spec.retries.perTryTimeout", v, c.defaultRetries)
}

func (c *callee) retryOnField() Field {
	v := "[" + strings.Join(c.retryOn, ", ") + "]"
	if c.istioRetryOn {
		v = "unset, so Istio's default " + v
	}
	return c.field("spec.retries.retryOn", v, c.defaultRetries)
}

// waitText explains the worst-case wait: how it follows from the fields.
func (c *callee) waitText() string {
	switch {
	case c.timeoutSet && c.perTrySet:
		return fmt.Sprintf("min(timeout %s, %d attempts × perTryTimeout %s)", apiDuration(c.timeout), c.attempts(), apiDuration(c.perTry))
	case c.timeoutSet:
		return "timeout " + apiDuration(c.timeout)
	case c.perTrySet:
		return fmt.Sprintf("%d attempts × perTryTimeout %s", c.attempts(), apiDuration(c.perTry))
	}
	return "no timeout"
}

// set says how to change one field of the callee's policy, or to add a policy when there is none.
func (c *callee) set(field, value, from string) string {
	field = c.at(field)
	if c.policy == "" {
		return fmt.Sprintf("add a TrafficPolicy for Service %s with %s: %s", c.service, field, value)
	}
	if from == "" {
		return fmt.Sprintf("set TrafficPolicy %s %s to %s", c.policy, field, value)
	}
	return fmt.Sprintf("set TrafficPolicy %s %s to %s (from %s)", c.policy, field, value, from)
}

// active returns the retry conditions that can fire: all of them, but the gRPC ones on a plain HTTP
// Service.
func (c *callee) active() []string {
	if !c.plainHTTP {
		return c.retryOn
	}
	var out []string
	for _, on := range c.retryOn {
		if !slices.Contains(GRPCRetryOn, on) {
			out = append(out, on)
		}
	}
	return out
}

// unsafeRetryOn returns the conditions the callee's calls are retried on that can fire after the server
// ran the request; nil when its calls are not retried or only before the request was sent.
func (c *callee) unsafeRetryOn() []string {
	if c.retries == 0 {
		return nil
	}
	var out []string
	for _, on := range c.active() {
		if !slices.Contains(SafeRetryOn, on) {
			out = append(out, on)
		}
	}
	return out
}

// carries says whether retrying this call repeats the calls its server makes: it retries on a condition
// a failure further down can cause. A call retried only on connection failures repeats nothing below.
func (c *callee) carries() bool { return len(c.unsafeRetryOn()) > 0 }

// factor is how many times a failure further down can be tried through this call.
func (c *callee) factor() int64 {
	if c.carries() {
		return c.attempts()
	}
	return 1
}

func (c *callee) safeRetryOn() []string {
	var out []string
	for _, on := range c.retryOn {
		if slices.Contains(SafeRetryOn, on) {
			out = append(out, on)
		}
	}
	return out
}

// walk enumerates the paths from every entry of the graph, depth first, tracking the worst path to
// each service and the loops it meets.
func (a *analysis) walk() {
	var starts, all []Service
	for s := range a.out {
		all = append(all, s)
		if len(a.into[s]) == 0 {
			starts = append(starts, s)
		}
	}
	slices.SortFunc(starts, Service.compare)
	slices.SortFunc(all, Service.compare)
	for _, s := range starts {
		a.walkFrom(s)
	}
	// Loops that no entry reaches start at their first service by name.
	for _, s := range all {
		if !a.reached[s] {
			a.walkFrom(s)
		}
	}
}

func (a *analysis) walkFrom(start Service) {
	path := []Service{start}
	var hops []Hop
	onPath := map[Service]bool{start: true}
	a.reached[start] = true
	// carried is how many times the calls so far can repeat the next one: the product of their factors.
	var visit func(carried int64)
	visit = func(carried int64) {
		last := path[len(path)-1]
		extended := false
		for _, i := range a.out[last] {
			if a.truncated {
				return
			}
			c := a.calls[i]
			if a.steps++; a.steps > a.maxSteps() {
				a.truncated = true
				return
			}
			if onPath[c.To] {
				a.cycle(path, c.To)
				continue
			}
			cl := a.calleeFor(c)
			h := Hop{From: last, To: c.To, Method: c.Method, Policy: cl.policy, Attempts: cl.attempts(),
				Reaching: mul(carried, cl.attempts()), Carries: cl.carries(), Wait: Wait(cl.wait)}
			extended = true
			path, hops = append(path, c.To), append(hops, h)
			onPath[c.To], a.reached[c.To] = true, true
			if w, ok := a.worst[c.To]; !ok || h.Reaching > w.Hops[len(w.Hops)-1].Reaching {
				a.worst[c.To] = Path{Services: slices.Clone(path), Hops: slices.Clone(hops)}
			}
			visit(mul(carried, cl.factor()))
			path, hops = path[:len(path)-1], hops[:len(hops)-1]
			delete(onPath, c.To)
		}
		if !extended && len(hops) > 0 && !a.truncated {
			if len(a.paths) >= a.maxPaths {
				a.truncated = true
				return
			}
			a.paths = append(a.paths, Path{Services: slices.Clone(path), Hops: slices.Clone(hops)})
		}
	}
	visit(1)
}

// cycle reports the loop that closes where path meets to again, once however it is entered.
func (a *analysis) cycle(path []Service, to Service) {
	i := slices.Index(path, to)
	loop := slices.Clone(path[i:])
	first := 0
	for j, s := range loop {
		if s.compare(loop[first]) < 0 {
			first = j
		}
	}
	loop = append(loop[first:], loop[:first]...)
	loop = append(loop, loop[0])
	key := joinServices(loop)
	if a.cycles[key] {
		return
	}
	a.cycles[key] = true
	var policies, retried []string
	var fields []Field
	turn := int64(1)
	for _, s := range loop[1:] {
		c := a.calleeOf(s)
		turn = mul(turn, c.factor())
		if c.carries() {
			retried = append(retried, c.service.String())
			fields = append(fields, c.attemptsField())
			if c.policy != "" {
				policies = append(policies, c.policy)
			}
		}
	}
	msg := fmt.Sprintf("calls loop: %s; a request can go round, so its attempts have no bound", joinServices(loop))
	fix := "break the loop, or remove the call that closes it from the graph if it never happens"
	if len(retried) > 0 {
		msg += fmt.Sprintf(", and retries multiply each turn by up to %d", turn)
		var retrying *callee
		for _, s := range loop[1:] {
			if c := a.calleeOf(s); c.carries() && retrying == nil {
				retrying = c
			}
		}
		fix += "; at least " + retrying.set("spec.retries.attempts", "0", fmt.Sprint(retrying.retries)) + " so a turn does not multiply"
	}
	a.add(Finding{Kind: KindCycle, Path: loop, Policies: policies, Fields: fields, Message: msg, Fix: fix})
}

// checkTimeout: a caller that gives an attempt less time than its callee's calls can take.
func (a *analysis) checkTimeout(c Call) {
	caller := a.calleeOf(c.From)
	// Without a policy and without callers in the graph, nothing bounds c.From's own requests.
	if caller.policy == "" && len(a.into[c.From]) == 0 {
		return
	}
	bound, boundField := caller.timeout, caller.timeoutField()
	if caller.perTrySet {
		bound, boundField = caller.perTry, caller.perTryField()
	}
	if bound == 0 {
		return
	}
	callee := a.calleeFor(c)
	if callee.wait != 0 && callee.wait <= bound {
		return
	}
	fields := []Field{boundField, callee.timeoutField()}
	if callee.retries > 0 {
		fields = append(fields, callee.attemptsField())
	}
	if callee.perTrySet {
		fields = append(fields, callee.perTryField())
	}
	boundName := "timeout"
	if caller.perTrySet {
		boundName = "perTryTimeout"
	}
	var msg string
	if callee.wait == 0 {
		msg = fmt.Sprintf("an attempt at %s is cut after %s (%s), but its calls to %s have no timeout: the callers of %s give up while %s still works and retries, which only adds load",
			c.From, apiDuration(bound), boundName, c.To, c.From, c.To)
	} else {
		msg = fmt.Sprintf("an attempt at %s is cut after %s (%s), but its call to %s can take %s (%s): the callers of %s give up while %s still works and retries, so waiting beyond %s only adds load",
			c.From, apiDuration(bound), boundName, c.To, apiDuration(callee.wait), callee.waitText(), c.From, c.To, apiDuration(bound))
	}
	a.add(Finding{Kind: KindTimeoutBelowCallee, Path: []Service{c.From, c.To},
		Policies: nonEmpty(caller.policy, callee.policy), Fields: fields, Message: msg, Fix: timeoutFix(caller, callee, bound)})
}

// timeoutFix suggests lowering the callee's timeout to the caller's bound or raising the caller's bound to
// the callee's wait, the change with fewer fields first (the callee's on a tie: it shortens waits).
func timeoutFix(caller, callee *callee, bound time.Duration) string {
	var lower []string
	from := "none"
	if callee.timeoutSet {
		from = apiDuration(callee.timeout)
	}
	lower = append(lower, callee.set("spec.timeout", apiDuration(bound), from))
	if callee.perTrySet && callee.perTry > bound {
		lower = append(lower, callee.set("spec.retries.perTryTimeout", apiDuration(bound), apiDuration(callee.perTry)))
	}
	options := [][]string{lower}
	if callee.wait != 0 && caller.policy != "" {
		var raise []string
		if caller.perTrySet {
			raise = append(raise, caller.set("spec.retries.perTryTimeout", apiDuration(callee.wait), apiDuration(caller.perTry)))
			if caller.timeoutSet && caller.timeout < callee.wait {
				raise = append(raise, caller.set("spec.timeout", apiDuration(callee.wait), apiDuration(caller.timeout)))
			}
		} else {
			raise = append(raise, caller.set("spec.timeout", apiDuration(callee.wait), apiDuration(caller.timeout)))
		}
		if len(raise) < len(lower) {
			options = [][]string{raise, lower}
		} else {
			options = append(options, raise)
		}
	}
	var out []string
	for _, o := range options {
		out = append(out, strings.Join(o, " and "))
	}
	return strings.Join(out, ", or ")
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// nonIdempotentCall says whether c must not be repeated: its own flag, else its method or its Service
// declared so. A call of unknown method to a Service with any non-idempotent method may be that method.
func (a *analysis) nonIdempotentCall(c Call) bool {
	if c.Idempotent != nil {
		return !*c.Idempotent
	}
	if a.nonIdempotent[Target{Service: c.To}] || (c.Method != "" && a.nonIdempotent[Target{Service: c.To, Method: c.Method}]) {
		return true
	}
	if c.Method == "" {
		for t := range a.nonIdempotent {
			if t.Service == c.To {
				return true
			}
		}
	}
	return false
}

// retryFix suggests keeping only the safe conditions, or turning retries off when none are left.
func retryFix(c *callee) string {
	if safe := c.safeRetryOn(); len(safe) > 0 && !c.istioRetryOn {
		return c.set("spec.retries.retryOn", "["+strings.Join(safe, ", ")+"]", "["+strings.Join(c.retryOn, ", ")+"]") +
			", keeping only failures before the request reached the server, or its spec.retries.attempts to 0"
	}
	return c.set("spec.retries.attempts", "0", fmt.Sprint(c.retries))
}

func (a *analysis) checkNonIdempotent(c Call) {
	if !a.nonIdempotentCall(c) {
		return
	}
	callee := a.calleeFor(c)
	unsafe := callee.unsafeRetryOn()
	if len(unsafe) == 0 {
		return
	}
	what := c.To.String()
	if c.Method != "" {
		what += " " + c.Method
	}
	a.add(Finding{Kind: KindNonIdempotentRetry, Path: []Service{c.From, c.To}, Policies: nonEmpty(callee.policy),
		Fields: []Field{callee.attemptsField(), callee.retryOnField()},
		Message: fmt.Sprintf("%s must not be repeated, but calls from %s are retried up to %d times on %s, which can fire after the server ran the request",
			what, c.From, callee.retries, strings.Join(unsafe, ", ")),
		Fix: retryFix(callee)})
}

// checkAboveNonIdempotent: a retry on a call upstream of a non-idempotent one re-runs the caller, which
// makes the call again.
func (a *analysis) checkAboveNonIdempotent() {
	for _, n := range a.calls {
		if !a.nonIdempotentCall(n) {
			continue
		}
		// Every service from which n.From can be reached, with the next step towards it.
		next := map[Service]Service{n.From: n.From}
		queue := []Service{n.From}
		for len(queue) > 0 {
			s := queue[0]
			queue = queue[1:]
			for _, i := range a.into[s] {
				if from := a.calls[i].From; !hasKey(next, from) {
					next[from] = s
					queue = append(queue, from)
				}
			}
		}
		for _, e := range a.calls {
			if e.key() == n.key() || !hasKey(next, e.To) {
				continue
			}
			// A call that is safe to repeat as a whole (an idempotency key makes the callee replay its
			// first answer) re-runs nothing when retried.
			if e.Idempotent != nil && *e.Idempotent {
				continue
			}
			callee := a.calleeFor(e)
			unsafe := callee.unsafeRetryOn()
			if len(unsafe) == 0 {
				continue
			}
			path := []Service{e.From, e.To}
			for s := e.To; s != n.From; {
				s = next[s]
				path = append(path, s)
			}
			path = append(path, n.To)
			what := n.To.String()
			if n.Method != "" {
				what += " " + n.Method
			}
			a.add(Finding{Kind: KindRetryAboveNonIdempotent, Path: path, Policies: nonEmpty(callee.policy),
				Fields: []Field{callee.attemptsField(), callee.retryOnField()},
				Message: fmt.Sprintf("calls from %s to %s are retried up to %d times on %s; a retry runs %s again, and with it the call %s → %s, which must not be repeated",
					e.From, e.To, callee.retries, strings.Join(unsafe, ", "), e.To, n.From, what),
				Fix: retryFix(callee) + fmt.Sprintf("; or make the call %s → %s safe to repeat (an idempotency key) and mark it idempotent: true", n.From, n.To)})
		}
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

// responseConditions maps retry conditions that match a response (which a service can pass on to its
// own caller) to the statuses they match. Connection-level conditions (connect-failure, reset, ...)
// happen on one hop and are never passed on as such.
func responseConditions(on string) []string {
	switch on {
	case "5xx":
		var out []string
		for code := 500; code <= 599; code++ {
			out = append(out, fmt.Sprint(code))
		}
		return out
	case "gateway-error":
		return []string{"502", "503", "504"}
	case "retriable-4xx":
		return []string{"409"}
	case "retriable-status-codes":
		return []string{"503"} // Istio's default list's status code
	case "unavailable", "cancelled", "deadline-exceeded", "internal", "resource-exhausted":
		return []string{"grpc " + on}
	}
	if len(on) == 3 && (on[0] == '4' || on[0] == '5') {
		return []string{on}
	}
	return nil
}

// sharedConditions returns outer's conditions that match a status one of inner's conditions matches.
func sharedConditions(outer, inner []string) []string {
	innerStatuses := map[string]bool{}
	for _, on := range inner {
		for _, s := range responseConditions(on) {
			innerStatuses[s] = true
		}
	}
	var out []string
	for _, on := range outer {
		for _, s := range responseConditions(on) {
			if innerStatuses[s] {
				out = append(out, on)
				break
			}
		}
	}
	return out
}

// checkRedundant: A retries B on conditions B's own retried calls to C can end with.
func (a *analysis) checkRedundant() {
	for _, e1 := range a.calls {
		outer := a.calleeFor(e1)
		if outer.retries == 0 {
			continue
		}
		for _, i := range a.out[e1.To] {
			e2 := a.calls[i]
			if e2.To == e1.To {
				continue
			}
			inner := a.calleeFor(e2)
			if inner.retries == 0 {
				continue
			}
			shared := sharedConditions(outer.active(), inner.active())
			if len(shared) == 0 {
				continue
			}
			a.add(Finding{Kind: KindRedundantRetries, Path: []Service{e1.From, e1.To, e2.To},
				Policies: nonEmpty(outer.policy, inner.policy),
				Fields:   []Field{outer.attemptsField(), outer.retryOnField(), inner.attemptsField(), inner.retryOnField()},
				Message: fmt.Sprintf("calls from %s to %s are retried on %s, and %s's calls to %s already are on %s: a failure of %s that %s passes on is tried %d × %d = %d times",
					e1.From, e1.To, strings.Join(shared, ", "), e1.To, e2.To, strings.Join(sharedConditions(inner.active(), outer.active()), ", "),
					e2.To, e1.To, outer.attempts(), inner.attempts(), mul(outer.attempts(), inner.attempts())),
				Fix: "retry at one layer: " + redundantFix(outer, shared)})
		}
	}
}

// redundantFix suggests removing the shared conditions from the outer layer, or its retries.
func redundantFix(c *callee, shared []string) string {
	off := c.set("spec.retries.attempts", "0", fmt.Sprint(c.retries))
	if remove := removeFix(c, shared); remove != off {
		return remove + ", or " + off
	}
	return off
}

func removeFix(c *callee, remove []string) string {
	var keep []string
	for _, on := range c.retryOn {
		if !slices.Contains(remove, on) {
			keep = append(keep, on)
		}
	}
	if len(keep) == 0 {
		return c.set("spec.retries.attempts", "0", fmt.Sprint(c.retries))
	}
	return c.set("spec.retries.retryOn", "["+strings.Join(keep, ", ")+"]", "["+strings.Join(c.retryOn, ", ")+"]")
}

// checkAmplification reports each service whose worst path brings more attempts than the limit.
func (a *analysis) checkAmplification() {
	services := slices.SortedFunc(maps.Keys(a.worst), Service.compare)
	for _, s := range services {
		w := a.worst[s]
		last := w.Hops[len(w.Hops)-1]
		if last.Reaching <= a.maxAmplification {
			continue
		}
		var factors []string
		var fields []Field
		var policies []string
		var callees []*callee
		var counted []int64
		for i, h := range w.Hops {
			c := a.calleeFor(Call{To: h.To, Method: h.Method})
			callees = append(callees, c)
			f := c.factor()
			if i == len(w.Hops)-1 {
				f = h.Attempts
			}
			counted = append(counted, f)
			if f > 1 {
				factors = append(factors, fmt.Sprint(f))
				fields = append(fields, c.attemptsField())
				if c.policy != "" {
					policies = append(policies, c.policy)
				}
			}
		}
		a.add(Finding{Kind: KindAmplification, Path: w.Services, Policies: policies, Fields: fields,
			Message: fmt.Sprintf("%s can receive %s attempts for one request entering at %s (%s along the path), above the limit of %d",
				s, count(last.Reaching), w.Services[0], strings.Join(factors, " × "), a.maxAmplification),
			Fix: amplificationFix(callees, counted, last.Reaching, a.maxAmplification)})
	}
}

func count(n int64) string {
	if n == 1<<63-1 {
		return "more than 9.2e18"
	}
	return fmt.Sprint(n)
}

// amplificationFix finds the smallest change of attempts that brings the path within the limit: one
// hop's retries lowered so that as many attempts as the limit allows remain, else retries turned off on
// the hops that multiply most until it fits. factors are what each hop multiplies by.
func amplificationFix(callees []*callee, factors []int64, total, limit int64) string {
	best, bestAttempts, bestAfter := -1, int64(0), int64(0)
	for i, f := range factors {
		if f <= 1 || total == 1<<63-1 {
			continue
		}
		rest := total / f
		allowed := limit / rest
		if allowed < 1 {
			continue
		}
		// The change that keeps the most attempts (the most retrying capacity), then the one that lowers
		// fewer retries, then the hop nearest the entry.
		after := rest * allowed
		if best < 0 || after > bestAfter || (after == bestAfter && f-allowed < factors[best]-bestAttempts) {
			best, bestAttempts, bestAfter = i, allowed, after
		}
	}
	if best >= 0 {
		c := callees[best]
		return fmt.Sprintf("%s: %d attempts at most", c.set("spec.retries.attempts", fmt.Sprint(bestAttempts-1), fmt.Sprint(c.retries)), bestAfter)
	}
	order := make([]int, len(factors))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		if factors[x] != factors[y] {
			if factors[x] > factors[y] {
				return -1
			}
			return 1
		}
		return x - y
	})
	product := slices.Clone(factors)
	var changes []string
	for _, i := range order {
		if factors[i] <= 1 {
			continue
		}
		rest := int64(1)
		for j, p := range product {
			if j != i {
				rest = mul(rest, p)
			}
		}
		allowed := min(max(limit/rest, 1), factors[i])
		changes = append(changes, callees[i].set("spec.retries.attempts", fmt.Sprint(allowed-1), fmt.Sprint(callees[i].retries)))
		product[i] = allowed
		if mul(rest, allowed) <= limit {
			break
		}
	}
	return strings.Join(changes, " and ")
}
