// Package desiredstate turns a TrafficPolicy and its Service into the Istio objects that implement it, and
// computes the effective policy callers get. It is pure: no client, no clock, no environment. The
// operator, the `meshplane render` CLI and the tests all call Build, so what is rendered offline is what
// the operator applies.
package desiredstate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/operator/api/v1alpha1"
)

// Labels every generated object carries.
const (
	// LabelManagedBy marks objects Meshplane generated (value ManagedBy).
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is the value of LabelManagedBy.
	ManagedBy = "meshplane"
	// LabelPolicy names the TrafficPolicy an object was generated from.
	LabelPolicy = "traffic.meshplane.dev/policy"
)

// Defaults are the platform settings a policy inherits where it says nothing.
type Defaults struct {
	// Retries apply to a policy that leaves spec.retries unset. They are always written into the
	// VirtualService, so Istio's own hidden default (which also retries 503s) never applies.
	Retries v1alpha1.Retries
	// ClusterDomain completes Service hosts: <svc>.<ns>.svc.<ClusterDomain>.
	ClusterDomain string
	// TrustDomain prefixes caller principals: <TrustDomain>/ns/<ns>/sa/<sa>.
	TrustDomain string
}

// DefaultRetryOn are the retry conditions of the platform default: failures where the request never
// reached the application, so retrying cannot repeat a side effect. Unlike Istio's own default, no 503.
var DefaultRetryOn = []v1alpha1.RetryCondition{"connect-failure", "refused-stream", "unavailable", "cancelled"}

// PlatformDefaults returns Meshplane's defaults: 2 retries on DefaultRetryOn, cluster.local domains.
func PlatformDefaults() Defaults {
	attempts := int32(2)
	return Defaults{
		Retries:       v1alpha1.Retries{Attempts: &attempts, RetryOn: slices.Clone(DefaultRetryOn)},
		ClusterDomain: "cluster.local",
		TrustDomain:   "cluster.local",
	}
}

// Validate reports defaults that would generate invalid objects, with the same rules as spec.retries.
func (d Defaults) Validate() error {
	spec := v1alpha1.TrafficPolicySpec{TargetRef: v1alpha1.TargetRef{Name: "defaults"}, Retries: d.retries()}
	var errs []error
	for _, e := range spec.Validate(nil) {
		errs = append(errs, fmt.Errorf("default %s", e.Error()))
	}
	if d.ClusterDomain == "" {
		errs = append(errs, errors.New("cluster domain is empty"))
	}
	if d.TrustDomain == "" {
		errs = append(errs, errors.New("trust domain is empty"))
	}
	return errors.Join(errs...)
}

// retries returns the default retry policy; with 0 attempts the conditions and per-try timeout mean
// nothing, so `--default-retry-attempts=0` alone disables retries.
func (d Defaults) retries() *v1alpha1.Retries {
	r := d.Retries
	if r.Attempts != nil && *r.Attempts == 0 {
		r.RetryOn, r.PerTryTimeout = nil, nil
	}
	return &r
}

// State is the Istio configuration one TrafficPolicy asks for. Nil objects are not wanted: a policy
// without circuitBreaker, split or mtls STRICT or DISABLE needs no DestinationRule (an empty one would still
// shadow DestinationRules for the host elsewhere), without mtls no PeerAuthentication, without allow no
// AuthorizationPolicy.
type State struct {
	DestinationRule     *networkingv1.DestinationRule
	VirtualService      *networkingv1.VirtualService
	PeerAuthentication  *securityv1.PeerAuthentication
	AuthorizationPolicy *securityv1.AuthorizationPolicy
	// Effective is the behaviour callers get, defaults included.
	Effective v1alpha1.EffectivePolicy
}

// Spec returns the proto spec of a generated Istio object, to compare with proto.Equal (never
// reflect.DeepEqual, which trips over protobuf internals); nil for any other object.
func Spec(obj client.Object) proto.Message {
	switch o := obj.(type) {
	case *networkingv1.VirtualService:
		return &o.Spec
	case *networkingv1.DestinationRule:
		return &o.Spec
	case *securityv1.PeerAuthentication:
		return &o.Spec
	case *securityv1.AuthorizationPolicy:
		return &o.Spec
	}
	return nil
}

// Host returns the fully qualified host of a Service: Istio resolves short names against the namespace
// of the rule that uses them, so generated objects always spell hosts out.
func Host(service, namespace, clusterDomain string) string {
	return service + "." + namespace + ".svc." + clusterDomain
}

// InvalidError is Build's error when the policy cannot produce valid objects: every problem, each with
// the field path it concerns.
type InvalidError struct {
	Errs field.ErrorList
}

func (e *InvalidError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

// Rollout is where a policy's canary rollout stands, which only the operator knows (it keeps it in the
// policy's status, as the rollout moves on a clock and on live metrics): Build routes CandidateWeight
// percent of calls to spec.canary.candidate and the rest to its stable subset.
type Rollout struct {
	// CandidateWeight is the candidate's share in percent, 0 to 100. 0, where every rollout starts and
	// where a rollback returns, routes exactly as spec.split says.
	CandidateWeight int32
}

// Build returns the Istio objects and effective policy for p. svc is p's target Service; it may be nil
// when the policy needs no workload selector (no mtls, no allow). An invalid policy, or one whose
// Service cannot provide a selector, gets an *InvalidError listing every problem. A canary is built at
// its start, the candidate at weight 0: what `meshplane render` shows; the operator uses BuildRollout.
func Build(p *v1alpha1.TrafficPolicy, svc *corev1.Service, d Defaults) (*State, error) {
	return BuildRollout(p, svc, d, Rollout{})
}

// BuildRollout is Build with the policy's canary at r. Without spec.canary, r must be the zero Rollout.
func BuildRollout(p *v1alpha1.TrafficPolicy, svc *corev1.Service, d Defaults, r Rollout) (*State, error) {
	if r.CandidateWeight < 0 || r.CandidateWeight > 100 || (p.Spec.Canary == nil && r.CandidateWeight != 0) {
		return nil, fmt.Errorf("build TrafficPolicy %s/%s: candidate weight %d, want 0 to 100 with spec.canary, else 0", p.Namespace, p.Name, r.CandidateWeight)
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("invalid defaults: %w", err)
	}
	if errs := p.Validate(); len(errs) > 0 {
		return nil, &InvalidError{Errs: errs}
	}
	spec := &p.Spec
	target := field.NewPath("spec", "targetRef", "name")
	svcKey := p.Namespace + "/" + spec.TargetRef.Name
	if svc != nil && (svc.Name != spec.TargetRef.Name || svc.Namespace != p.Namespace) {
		return nil, fmt.Errorf("build TrafficPolicy %s/%s: given Service %s/%s, want %s", p.Namespace, p.Name, svc.Namespace, svc.Name, svcKey)
	}
	var selector map[string]string
	if spec.MTLS != nil || spec.Allow != nil {
		if svc == nil {
			return nil, &InvalidError{Errs: field.ErrorList{field.Invalid(target, spec.TargetRef.Name,
				"Service "+svcKey+" not found: mtls and allow need its selector to pick the workloads")}}
		}
		// An empty selector would make the PeerAuthentication or AuthorizationPolicy namespace-wide.
		if len(svc.Spec.Selector) == 0 {
			return nil, &InvalidError{Errs: field.ErrorList{field.Invalid(target, spec.TargetRef.Name,
				"Service "+svcKey+" has no selector: mtls and allow need one to pick the workloads")}}
		}
		selector = svc.Spec.Selector
	}

	host := Host(spec.TargetRef.Name, p.Namespace, d.ClusterDomain)
	retries, isDefault := spec.Retries, false
	if retries == nil {
		retries, isDefault = d.retries(), true
	}
	plans := planRoutes(spec, retries)
	s := &State{
		DestinationRule: destinationRule(p, host),
		VirtualService:  virtualService(p, host, plans, r),
		Effective:       effective(spec, host, plans, isDefault),
	}
	if spec.MTLS != nil {
		s.PeerAuthentication = peerAuthentication(p, selector)
	}
	if spec.Allow != nil {
		s.AuthorizationPolicy = authorizationPolicy(p, selector, d.TrustDomain)
	}
	return s, nil
}

// Effective returns the behaviour callers of p's Service get, defaults included, without building any
// object: what the call-graph analysis needs, for policies whose Service may be missing (mtls and allow
// need its selector, the effective policy does not). p may be a bare policy naming only its target, which
// gives the platform defaults a Service without a policy has. An invalid policy gets an *InvalidError.
func Effective(p *v1alpha1.TrafficPolicy, d Defaults) (v1alpha1.EffectivePolicy, error) {
	if err := d.Validate(); err != nil {
		return v1alpha1.EffectivePolicy{}, fmt.Errorf("invalid defaults: %w", err)
	}
	if errs := p.Validate(); len(errs) > 0 {
		return v1alpha1.EffectivePolicy{}, &InvalidError{Errs: errs}
	}
	retries, isDefault := p.Spec.Retries, false
	if retries == nil {
		retries, isDefault = d.retries(), true
	}
	return effective(&p.Spec, Host(p.Spec.TargetRef.Name, p.Namespace, d.ClusterDomain), planRoutes(&p.Spec, retries), isDefault), nil
}

func objectMeta(p *v1alpha1.TrafficPolicy) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      p.Name,
		Namespace: p.Namespace,
		Labels:    map[string]string{LabelManagedBy: ManagedBy, LabelPolicy: p.Name},
	}
}

// virtualService routes every planned route to the Service, or to its split's subsets, with the weights
// the canary's rollout r puts in place of the split's for its two subsets.
func virtualService(p *v1alpha1.TrafficPolicy, host string, plans []plan, r Rollout) *networkingv1.VirtualService {
	var dests []*networkingapi.HTTPRouteDestination
	if p.Spec.Split == nil {
		dests = []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: host}}}
	}
	for _, s := range p.Spec.Split {
		weight := *s.Weight
		if c := p.Spec.Canary; c != nil {
			// Validation keeps the stable subset at 100 in the split, so every other subset is at 0.
			switch s.Subset {
			case c.Stable:
				weight = 100 - r.CandidateWeight
			case c.Candidate:
				weight = r.CandidateWeight
			}
		}
		// A weight-0 subset is staged in the DestinationRule but not routed to.
		if weight == 0 {
			continue
		}
		dests = append(dests, &networkingapi.HTTPRouteDestination{
			Destination: &networkingapi.Destination{Host: host, Subset: s.Subset},
			Weight:      weight,
		})
	}
	vs := &networkingv1.VirtualService{ObjectMeta: objectMeta(p)}
	vs.SetGroupVersionKind(networkingv1.SchemeGroupVersion.WithKind(KindVirtualService))
	vs.Spec.Hosts = []string{host}
	for _, pl := range plans {
		// Each route gets its own destinations: Istio's objects are not meant to share messages.
		vs.Spec.Http = append(vs.Spec.Http, httpRoute(pl, cloneDestinations(dests)))
	}
	return vs
}

func cloneDestinations(dests []*networkingapi.HTTPRouteDestination) []*networkingapi.HTTPRouteDestination {
	out := make([]*networkingapi.HTTPRouteDestination, len(dests))
	for i, d := range dests {
		out[i] = proto.Clone(d).(*networkingapi.HTTPRouteDestination)
	}
	return out
}

func destinationRule(p *v1alpha1.TrafficPolicy, host string) *networkingv1.DestinationRule {
	spec := &p.Spec
	policy := &networkingapi.TrafficPolicy{}
	if cb := spec.CircuitBreaker; cb != nil {
		tcp := &networkingapi.ConnectionPoolSettings_TCPSettings{MaxConnections: deref(cb.MaxConnections)}
		http := &networkingapi.ConnectionPoolSettings_HTTPSettings{
			Http1MaxPendingRequests:  deref(cb.MaxPendingRequests),
			Http2MaxRequests:         deref(cb.MaxRequests),
			MaxRequestsPerConnection: deref(cb.MaxRequestsPerConnection),
			MaxRetries:               deref(cb.MaxRetries),
		}
		// A pool size of 0 is Istio's default (unlimited), so an all-zero section is left out rather
		// than written as an empty block.
		pool := &networkingapi.ConnectionPoolSettings{}
		if tcp.MaxConnections > 0 {
			pool.Tcp = tcp
		}
		if http.Http1MaxPendingRequests > 0 || http.Http2MaxRequests > 0 || http.MaxRequestsPerConnection > 0 || http.MaxRetries > 0 {
			pool.Http = http
		}
		if pool.Tcp != nil || pool.Http != nil {
			policy.ConnectionPool = pool
		}
		outlier := &networkingapi.OutlierDetection{MaxEjectionPercent: deref(cb.MaxEjectionPercent)}
		if cb.ConsecutiveErrors != nil {
			// A wrapper, so an explicit 0 (stop ejecting on errors) survives.
			outlier.Consecutive_5XxErrors = wrapperspb.UInt32(uint32(*cb.ConsecutiveErrors))
		}
		if cb.Interval != nil {
			outlier.Interval = protoDuration(*cb.Interval)
		}
		if cb.BaseEjectionTime != nil {
			outlier.BaseEjectionTime = protoDuration(*cb.BaseEjectionTime)
		}
		if cb.ConsecutiveErrors != nil || cb.Interval != nil || cb.BaseEjectionTime != nil || cb.MaxEjectionPercent != nil {
			policy.OutlierDetection = outlier
		}
	}
	if spec.MTLS != nil {
		policy.Tls = callerTLS(spec.MTLS.Mode)
	}
	var subsets []*networkingapi.Subset
	for _, s := range spec.Split {
		labels := make(map[string]string, len(s.Labels))
		for k, v := range s.Labels {
			labels[k] = string(v)
		}
		subsets = append(subsets, &networkingapi.Subset{Name: s.Subset, Labels: labels})
	}
	if policy.ConnectionPool == nil && policy.OutlierDetection == nil && policy.Tls == nil && subsets == nil {
		return nil
	}
	dr := &networkingv1.DestinationRule{ObjectMeta: objectMeta(p)}
	dr.SetGroupVersionKind(networkingv1.SchemeGroupVersion.WithKind(KindDestinationRule))
	dr.Spec.Host = host
	if policy.ConnectionPool != nil || policy.OutlierDetection != nil || policy.Tls != nil {
		dr.Spec.TrafficPolicy = policy
	}
	dr.Spec.Subsets = subsets
	return dr
}

// callerTLS is what the Service's callers are told to use for a mode of the Service's own mTLS.
//
// STRICT: ISTIO_MUTUAL. The servers take nothing but mTLS, so the plaintext fallback of auto-mTLS can
// only reach an endpoint that has no sidecar — one STRICT cannot protect — and proxyless gRPC callers
// get no auto-mTLS at all: istiod gives them mTLS only from an explicit ISTIO_MUTUAL (grpcgen's
// applyTLS). Saying it makes every caller, Envoy or gRPC, use mTLS, and a caller of an endpoint without
// a sidecar fails instead of talking to it in plaintext.
//
// PERMISSIVE: nothing. Auto-mTLS keeps its plaintext fallback for Envoy callers; proxyless gRPC calls
// plaintext, which a PERMISSIVE gRPC server takes (istiod gives it no TLS under PERMISSIVE either).
//
// DISABLE: DISABLE, so Envoy callers stop offering mTLS the servers would no longer accept.
func callerTLS(mode v1alpha1.MTLSMode) *networkingapi.ClientTLSSettings {
	switch mode {
	case v1alpha1.MTLSStrict:
		return &networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_ISTIO_MUTUAL}
	case v1alpha1.MTLSDisable:
		return &networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_DISABLE}
	}
	return nil
}

func peerAuthentication(p *v1alpha1.TrafficPolicy, selector map[string]string) *securityv1.PeerAuthentication {
	modes := map[v1alpha1.MTLSMode]securityapi.PeerAuthentication_MutualTLS_Mode{
		v1alpha1.MTLSStrict:     securityapi.PeerAuthentication_MutualTLS_STRICT,
		v1alpha1.MTLSPermissive: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE,
		v1alpha1.MTLSDisable:    securityapi.PeerAuthentication_MutualTLS_DISABLE,
	}
	pa := &securityv1.PeerAuthentication{ObjectMeta: objectMeta(p)}
	pa.SetGroupVersionKind(securityv1.SchemeGroupVersion.WithKind(KindPeerAuthentication))
	pa.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: cloneMap(selector)}
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: modes[p.Spec.MTLS.Mode]}
	return pa
}

func authorizationPolicy(p *v1alpha1.TrafficPolicy, selector map[string]string, trustDomain string) *securityv1.AuthorizationPolicy {
	var principals []string
	for _, c := range p.Spec.Allow {
		ns := cmp.Or(c.Namespace, p.Namespace)
		principals = append(principals, trustDomain+"/ns/"+ns+"/sa/"+c.ServiceAccount)
	}
	// Sorted and unique, so reordering the allow list in Git changes nothing in the cluster.
	slices.Sort(principals)
	principals = slices.Compact(principals)
	ap := &securityv1.AuthorizationPolicy{ObjectMeta: objectMeta(p)}
	ap.SetGroupVersionKind(securityv1.SchemeGroupVersion.WithKind(KindAuthorizationPolicy))
	ap.Spec.Selector = &typeapi.WorkloadSelector{MatchLabels: cloneMap(selector)}
	ap.Spec.Action = securityapi.AuthorizationPolicy_ALLOW
	ap.Spec.Rules = []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: principals}}}}}
	return ap
}

// effective is the behaviour of the default route (the last plan), and of every route when there is
// more than one.
func effective(spec *v1alpha1.TrafficPolicySpec, host string, plans []plan, isDefault bool) v1alpha1.EffectivePolicy {
	def := plans[len(plans)-1]
	e := behaviour(def.timeout, def.retries)
	e.Host, e.DefaultRetries, e.Fault = host, isDefault, FaultText(spec.Fault)
	if len(plans) > 1 {
		for _, p := range plans {
			e.Routes = append(e.Routes, effectiveRoute(p))
		}
	}
	return e
}

func joinConditions(cs []v1alpha1.RetryCondition) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

// mustParse parses a duration Validate has accepted.
func mustParse(d v1alpha1.Duration) time.Duration {
	v, err := d.Parse()
	if err != nil {
		panic(fmt.Sprintf("duration %q passed validation but does not parse: %v", d, err))
	}
	return v
}

func protoDuration(d v1alpha1.Duration) *durationpb.Duration {
	return durationpb.New(mustParse(d))
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
