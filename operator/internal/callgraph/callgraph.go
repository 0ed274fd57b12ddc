// Package callgraph checks timeouts and retries across a call graph, not one policy at a time: retries
// multiply along a chain of calls, a caller that gives up before its callee's retries can finish only
// adds load, two layers retrying the same failure repeat each other's work, and a retry anywhere above a
// call that must not be repeated can repeat it.
//
// It is pure, like desiredstate beside it: policies and a graph in, a Report out; no client, no clock, no
// environment. `meshplane check`, `meshplane render --explain` and the operator's call-graph controller
// all call Analyze, and the graph comes from wherever the caller found it (FromAllow, ParseFile,
// FromObserved, merged with Merge).
package callgraph

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
)

// DefaultMaxAmplification is the default limit on worst-case attempts one request entering the graph
// may cause at a single service. Three layers of the platform default (3 attempts each) reach 27 and
// are reported; two layers (9) are not: retrying at two layers is common, at three it is a retry storm.
const DefaultMaxAmplification = 10

// DefaultMaxPaths bounds how many paths the analysis walks, so a dense graph cannot make it run for
// ever; past it the report says it was truncated.
const DefaultMaxPaths = 10000

// Service is a node of the call graph: a Kubernetes Service, or a caller that has none (a job's service
// account, an ingress, a test client), by namespace and name.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (s Service) String() string { return s.Namespace + "/" + s.Name }

func (s Service) compare(o Service) int {
	return cmp.Or(cmp.Compare(s.Namespace, o.Namespace), cmp.Compare(s.Name, o.Name))
}

// ParseService reads "name" (in namespace) or "namespace/name".
func ParseService(s, namespace string) (Service, error) {
	svc := Service{Namespace: namespace, Name: s}
	if ns, name, ok := strings.Cut(s, "/"); ok {
		svc = Service{Namespace: ns, Name: name}
	}
	if errs := validation.IsDNS1123Label(svc.Namespace); len(errs) > 0 {
		return Service{}, fmt.Errorf("%q: namespace %q: %s", s, svc.Namespace, errs[0])
	}
	if errs := validation.IsDNS1123Label(svc.Name); len(errs) > 0 {
		return Service{}, fmt.Errorf("%q: name %q: %s", s, svc.Name, errs[0])
	}
	return svc, nil
}

// ParseTarget reads SERVICE, NAMESPACE/SERVICE, SERVICE/Method or NAMESPACE/SERVICE/Method. A method
// starts with an upper-case letter (PlaceOrder), which no Kubernetes name does: that tells SERVICE/Method
// from NAMESPACE/SERVICE.
func ParseTarget(s, namespace string) (Target, error) {
	parts := strings.Split(s, "/")
	var method string
	if n := len(parts); n >= 2 && parts[n-1] != "" && unicode.IsUpper(rune(parts[n-1][0])) {
		method, parts = parts[n-1], parts[:n-1]
	}
	if len(parts) > 2 {
		return Target{}, fmt.Errorf("%q: want SERVICE, NAMESPACE/SERVICE, SERVICE/Method or NAMESPACE/SERVICE/Method", s)
	}
	svc, err := ParseService(strings.Join(parts, "/"), namespace)
	if err != nil {
		return Target{}, err
	}
	return Target{Service: svc, Method: method}, nil
}

// Target is a Service, or one method of it, that a property such as idempotency applies to. Policies
// apply per Service today; when per-method routes exist, a route's policy will be looked up by Target
// and fall back to the Service's.
type Target struct {
	Service Service `json:"service"`
	// Method is a gRPC method or HTTP route name; "" means every method.
	Method string `json:"method,omitempty"`
}

func (t Target) String() string {
	if t.Method == "" {
		return t.Service.String()
	}
	return t.Service.String() + "/" + t.Method
}

// The sources a call can be learned from.
const (
	// SourceAllow: a policy's allow list names the caller's service account.
	SourceAllow = "allow"
	// SourceFile: a graph file lists the call.
	SourceFile = "file"
	// SourceIstiod: istiod serves the callee's routes to the caller (its /debug/adsz).
	SourceIstiod = "istiod"
)

// Call is one edge of the graph: From calls To.
type Call struct {
	From Service `json:"from"`
	To   Service `json:"to"`
	// Method is the method of To that From calls; "" means any (or unknown).
	Method string `json:"method,omitempty"`
	// Idempotent, when set, says whether this call may be repeated; unset defers to Graph.NonIdempotent.
	Idempotent *bool `json:"idempotent,omitempty"`
	// Sources says where the call was learned (SourceAllow, SourceFile, SourceIstiod), sorted.
	Sources []string `json:"sources"`
}

func (c Call) key() string { return c.From.String() + ">" + c.To.String() + "#" + c.Method }

func (c Call) String() string {
	s := c.From.String() + " → " + c.To.String()
	if c.Method != "" {
		s += " (" + c.Method + ")"
	}
	return s
}

// Graph is who calls whom, and what must not be repeated.
type Graph struct {
	Calls []Call `json:"calls"`
	// NonIdempotent lists Services (Method "") and methods whose calls must not be repeated.
	NonIdempotent []Target `json:"nonIdempotent,omitempty"`
	// Services are declared in a graph file: known to exist even without a Service object or a policy
	// (callers such as a job or an ingress).
	Services []Service `json:"services,omitempty"`
}

// Merge joins graphs: one call per caller, callee and method with the union of their sources; a call
// declared non-idempotent anywhere stays so; a call of any method is dropped where the same caller's
// calls to the same callee name their methods (its sources go to them).
func Merge(graphs ...Graph) Graph {
	index := map[string]int{}
	var out Graph
	for _, g := range graphs {
		for _, c := range g.Calls {
			i, seen := index[c.key()]
			if !seen {
				c.Sources = slices.Clone(c.Sources)
				if c.Idempotent != nil {
					c.Idempotent = ptrTo(*c.Idempotent)
				}
				index[c.key()] = len(out.Calls)
				out.Calls = append(out.Calls, c)
				continue
			}
			prev := &out.Calls[i]
			for _, s := range c.Sources {
				if !slices.Contains(prev.Sources, s) {
					prev.Sources = append(prev.Sources, s)
				}
			}
			if c.Idempotent != nil && (prev.Idempotent == nil || !*c.Idempotent) {
				prev.Idempotent = ptrTo(*c.Idempotent)
			}
		}
		out.NonIdempotent = append(out.NonIdempotent, g.NonIdempotent...)
		out.Services = append(out.Services, g.Services...)
	}
	// A call of any method is subsumed by the calls of the same pair that name their methods: an allow
	// list says who may call, a graph file which methods.
	named := map[string]bool{}
	for _, c := range out.Calls {
		if c.Method != "" {
			named[c.From.String()+">"+c.To.String()] = true
		}
	}
	calls := out.Calls[:0]
	var anyMethod []Call
	for _, c := range out.Calls {
		if c.Method == "" && named[c.From.String()+">"+c.To.String()] {
			anyMethod = append(anyMethod, c)
			continue
		}
		calls = append(calls, c)
	}
	out.Calls = calls
	for _, a := range anyMethod {
		for i := range out.Calls {
			c := &out.Calls[i]
			if c.From != a.From || c.To != a.To {
				continue
			}
			for _, s := range a.Sources {
				if !slices.Contains(c.Sources, s) {
					c.Sources = append(c.Sources, s)
				}
			}
			if a.Idempotent != nil && c.Idempotent == nil {
				c.Idempotent = ptrTo(*a.Idempotent)
			}
		}
	}
	for i := range out.Calls {
		slices.Sort(out.Calls[i].Sources)
	}
	slices.SortFunc(out.Calls, func(a, b Call) int { return strings.Compare(a.key(), b.key()) })
	slices.SortFunc(out.NonIdempotent, func(a, b Target) int { return strings.Compare(a.String(), b.String()) })
	out.NonIdempotent = slices.Compact(out.NonIdempotent)
	slices.SortFunc(out.Services, Service.compare)
	out.Services = slices.Compact(out.Services)
	return out
}

func ptrTo[T any](v T) *T { return &v }

// Options tune the analysis.
type Options struct {
	// MaxAmplification is the most worst-case attempts one request entering the graph may cause at one
	// service before it is a finding; 0 means DefaultMaxAmplification.
	MaxAmplification int64
	// MaxPaths bounds the paths walked; 0 means DefaultMaxPaths.
	MaxPaths int
}

// Input is what Analyze looks at.
type Input struct {
	// Policies are the TrafficPolicies in force, at most one per Service (for two, the first by
	// namespace/name counts, as `render` reports the second as a problem).
	Policies []*v1alpha1.TrafficPolicy
	// Services are the Services that exist, when ServicesKnown.
	Services []Service
	// PlainHTTP are the Services that speak plain HTTP only (see PlainHTTP), where gRPC retry conditions
	// never fire.
	PlainHTTP []Service
	// ServicesKnown says Services is complete (the operator, or files that include the Services); when
	// false, a policy's target or a Service declared in the graph is taken to exist.
	ServicesKnown bool
	Graph         Graph
	// Defaults apply to Services without a policy and to policies that leave retries unset.
	Defaults desiredstate.Defaults
	Options  Options
}

// Report is the outcome of an analysis.
type Report struct {
	// Calls are the calls analysed (unknown services left out), sorted.
	Calls []Call `json:"calls"`
	// Paths are the maximal paths from each entry (a service no one in the graph calls), with the
	// worst case at every hop.
	Paths []Path `json:"paths"`
	// Findings, most severe first.
	Findings []Finding `json:"findings"`
	// MaxAmplification is the limit applied.
	MaxAmplification int64 `json:"maxAmplification"`
}

// Count returns how many findings are at least as severe as s.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity >= s {
			n++
		}
	}
	return n
}

// Path is a chain of calls from an entry of the graph.
type Path struct {
	Services []Service `json:"services"`
	Hops     []Hop     `json:"hops"`
}

func (p Path) String() string { return joinServices(p.Services) }

// Hop is one call on a path and its worst case.
type Hop struct {
	From   Service `json:"from"`
	To     Service `json:"to"`
	Method string  `json:"method,omitempty"`
	// Policy is the TrafficPolicy (namespace/name) governing calls to To; empty when none does and the
	// platform defaults apply.
	Policy string `json:"policy,omitempty"`
	// Attempts is the most requests this call can make: 1 + retries.
	Attempts int64 `json:"attempts"`
	// Carries is true when this call's retries repeat the calls below it: it is retried on a condition a
	// failure further down can cause (not only on connection failures).
	Carries bool `json:"carries"`
	// Reaching is the most requests reaching To for one request entering the path: Attempts times the
	// Attempts of every call before it that Carries (saturating at the largest int64).
	Reaching int64 `json:"reaching"`
	// Wait is the longest this call can take; 0 means unbounded.
	Wait Wait `json:"wait"`
}

// Wait is a worst-case duration; 0 means unbounded.
type Wait time.Duration

// MarshalText writes the duration as the API does (2s, 900ms), or "unbounded".
func (w Wait) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

func (w Wait) String() string {
	if w == 0 {
		return "unbounded"
	}
	return apiDuration(time.Duration(w))
}

// apiDuration writes d the way TrafficPolicies take durations: whole seconds or milliseconds.
func apiDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func joinServices(ss []Service) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.String()
	}
	return strings.Join(names, " → ")
}

// mul multiplies, saturating at the largest int64: a long chain of retries must not wrap around.
func mul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}
