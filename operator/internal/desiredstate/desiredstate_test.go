package desiredstate_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

func build(t *testing.T, p *v1alpha1.TrafficPolicy, d desiredstate.Defaults) *desiredstate.State {
	t.Helper()
	s, err := desiredstate.Build(p, pt.Service(p.Namespace, p.Spec.TargetRef.Name), d)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return s
}

const host = "orders.shop.svc.cluster.local"

// The route's retries block is always explicit: unset retries become the platform default, never Istio's
// hidden one (which also retries 503s).
func TestRetriesAreAlwaysExplicit(t *testing.T) {
	custom := desiredstate.PlatformDefaults()
	*custom.Retries.Attempts = 1
	custom.Retries.RetryOn = []v1alpha1.RetryCondition{"connect-failure"}
	custom.Retries.PerTryTimeout = pt.Duration("2s")
	off := desiredstate.PlatformDefaults()
	*off.Retries.Attempts = 0 // retryOn left at the default: attempts 0 alone disables retries

	tests := []struct {
		name     string
		policy   *v1alpha1.TrafficPolicy
		defaults desiredstate.Defaults
		want     *networkingapi.HTTPRetry
	}{
		{"unset uses platform default", pt.Policy("shop", "orders"), desiredstate.PlatformDefaults(),
			&networkingapi.HTTPRetry{Attempts: 2, RetryOn: "connect-failure,refused-stream,unavailable,cancelled"}},
		{"unset uses configured default", pt.Policy("shop", "orders"), custom,
			&networkingapi.HTTPRetry{Attempts: 1, RetryOn: "connect-failure", PerTryTimeout: durationpb.New(2e9)}},
		{"default of 0 attempts disables", pt.Policy("shop", "orders"), off,
			&networkingapi.HTTPRetry{Attempts: 0}},
		{"explicit 0 attempts", pt.Policy("shop", "orders", pt.Retries(0, "")), desiredstate.PlatformDefaults(),
			&networkingapi.HTTPRetry{Attempts: 0}},
		{"retryOn replaces the default list", pt.Policy("shop", "orders", pt.Timeout("3s"), pt.Retries(3, "1s", "5xx", "503")), desiredstate.PlatformDefaults(),
			&networkingapi.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(1e9), RetryOn: "5xx,503"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := build(t, tt.policy, tt.defaults).VirtualService
			def := vs.Spec.Http[len(vs.Spec.Http)-1]
			if def.Name != "default" || def.Match != nil {
				t.Fatalf("last HTTP route is %q with match %v, want the default route without a match", def.Name, def.Match)
			}
			if diff := cmp.Diff(tt.want, def.Retries, protocmp.Transform()); diff != "" {
				t.Errorf("retries (-want +got):\n%s", diff)
			}
		})
	}
}

// Zeros that mean something must reach the written document even though proto JSON drops them.
func TestExplicitZerosAreWritten(t *testing.T) {
	p := pt.Policy("shop", "orders", pt.Retries(0, ""), pt.MTLS(v1alpha1.MTLSDisable), pt.Allow("gateway"),
		pt.CircuitBreaker(v1alpha1.CircuitBreaker{ConsecutiveErrors: pt.Int32(0)}))
	s := build(t, p, desiredstate.PlatformDefaults())
	tests := []struct {
		obj  string
		path []string
		want any
	}{
		{"VirtualService", []string{"spec", "http", "0", "retries", "attempts"}, int64(0)},
		{"DestinationRule", []string{"spec", "trafficPolicy", "tls", "mode"}, "DISABLE"},
		{"DestinationRule", []string{"spec", "trafficPolicy", "outlierDetection", "consecutive5xxErrors"}, float64(0)},
		{"AuthorizationPolicy", []string{"spec", "action"}, "ALLOW"},
	}
	docs := map[string]*unstructured.Unstructured{}
	for _, obj := range s.Objects() {
		u, err := desiredstate.Unstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		docs[u.GetKind()] = u
	}
	for _, tt := range tests {
		got, ok := lookup(docs[tt.obj].Object, tt.path)
		if !ok || got != tt.want {
			t.Errorf("%s %s = %v (present %v), want %v", tt.obj, strings.Join(tt.path, "."), got, ok, tt.want)
		}
	}
	if _, ok := docs["VirtualService"].Object["status"]; ok {
		t.Errorf("VirtualService document carries status; want spec only")
	}
}

func lookup(m any, path []string) (any, bool) {
	for _, k := range path {
		switch v := m.(type) {
		case map[string]any:
			m = v[k]
		case []any:
			if k != "0" || len(v) == 0 {
				return nil, false
			}
			m = v[0]
		default:
			return nil, false
		}
		if m == nil {
			return nil, false
		}
	}
	return m, true
}

func TestObjectsWanted(t *testing.T) {
	tests := []struct {
		name   string
		policy *v1alpha1.TrafficPolicy
		want   []string // kinds in apply order
	}{
		{"timeout only needs no DestinationRule", pt.Policy("shop", "orders", pt.Timeout("1s")), []string{"VirtualService"}},
		{"STRICT tells callers too", pt.Policy("shop", "orders", pt.MTLS(v1alpha1.MTLSStrict)), []string{"DestinationRule", "VirtualService", "PeerAuthentication"}},
		{"PERMISSIVE leaves callers to auto-mTLS", pt.Policy("shop", "orders", pt.MTLS(v1alpha1.MTLSPermissive)), []string{"VirtualService", "PeerAuthentication"}},
		{"DISABLE tells callers too", pt.Policy("shop", "orders", pt.MTLS(v1alpha1.MTLSDisable)), []string{"DestinationRule", "VirtualService", "PeerAuthentication"}},
		{"split", pt.Policy("shop", "orders", pt.Split("v1", 90, "v2", 10)), []string{"DestinationRule", "VirtualService"}},
		{"circuit breaker", pt.Policy("shop", "orders", pt.CircuitBreaker(v1alpha1.CircuitBreaker{MaxRetries: pt.Int32(3)})), []string{"DestinationRule", "VirtualService"}},
		{"allow", pt.Policy("shop", "orders", pt.Allow("gateway")), []string{"VirtualService", "AuthorizationPolicy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, obj := range build(t, tt.policy, desiredstate.PlatformDefaults()).Objects() {
				got = append(got, obj.GetObjectKind().GroupVersionKind().Kind)
				if obj.GetName() != "orders" || obj.GetNamespace() != "shop" {
					t.Errorf("%T named %s/%s, want shop/orders", obj, obj.GetNamespace(), obj.GetName())
				}
				want := map[string]string{"app.kubernetes.io/managed-by": "meshplane", "traffic.meshplane.dev/policy": "orders"}
				if diff := cmp.Diff(want, obj.GetLabels()); diff != "" {
					t.Errorf("%T labels (-want +got):\n%s", obj, diff)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
		})
	}
}

// What callers are told for each mode of the servers' mTLS: STRICT makes every caller use mTLS, proxyless
// gRPC ones included (istiod gives them mTLS only from an explicit ISTIO_MUTUAL); PERMISSIVE keeps
// auto-mTLS and its plaintext fallback; DISABLE stops callers offering mTLS. Subsets inherit it.
func TestCallersTLSFollowsMTLSMode(t *testing.T) {
	tests := []struct {
		mode v1alpha1.MTLSMode
		want networkingapi.ClientTLSSettings_TLSmode
		set  bool
	}{
		{v1alpha1.MTLSStrict, networkingapi.ClientTLSSettings_ISTIO_MUTUAL, true},
		{v1alpha1.MTLSPermissive, 0, false},
		{v1alpha1.MTLSDisable, networkingapi.ClientTLSSettings_DISABLE, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			dr := build(t, pt.Policy("shop", "orders", pt.MTLS(tt.mode), pt.Split("v1", 90, "v2", 10)), desiredstate.PlatformDefaults()).DestinationRule
			tls := dr.Spec.GetTrafficPolicy().GetTls()
			if (tls != nil) != tt.set || tls.GetMode() != tt.want {
				t.Errorf("DestinationRule tls = %v, want mode %v (set %v)", tls, tt.want, tt.set)
			}
			for _, ss := range dr.Spec.Subsets {
				if ss.TrafficPolicy != nil {
					t.Errorf("subset %s has its own traffic policy %v; want it to inherit the top-level tls", ss.Name, ss.TrafficPolicy)
				}
			}
		})
	}
}

func TestSplitRoutesOnlyToDefinedSubsets(t *testing.T) {
	s := build(t, pt.Policy("shop", "orders", pt.Split("v1", 100, "v2", 0)), desiredstate.PlatformDefaults())
	wantSubsets := []*networkingapi.Subset{
		{Name: "v1", Labels: map[string]string{"version": "v1"}},
		{Name: "v2", Labels: map[string]string{"version": "v2"}},
	}
	if diff := cmp.Diff(wantSubsets, s.DestinationRule.Spec.Subsets, protocmp.Transform()); diff != "" {
		t.Errorf("subsets (-want +got):\n%s", diff)
	}
	// The weight-0 subset is staged in the DestinationRule but gets no route.
	wantRoute := []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: host, Subset: "v1"}, Weight: 100}}
	if diff := cmp.Diff(wantRoute, s.VirtualService.Spec.Http[0].Route, protocmp.Transform()); diff != "" {
		t.Errorf("route (-want +got):\n%s", diff)
	}
	if s.DestinationRule.Spec.Host != host || s.VirtualService.Spec.Hosts[0] != host {
		t.Errorf("hosts %q and %q, want the FQDN %q", s.DestinationRule.Spec.Host, s.VirtualService.Spec.Hosts, host)
	}
}

func TestAllowListsPrincipals(t *testing.T) {
	d := desiredstate.PlatformDefaults()
	d.TrustDomain = "corp.example"
	s := build(t, pt.Policy("shop", "orders", pt.Allow("gateway", "tools/loadgen", "shop/gateway")), d)
	want := &securityapi.AuthorizationPolicy{
		Selector: s.AuthorizationPolicy.Spec.Selector,
		Action:   securityapi.AuthorizationPolicy_ALLOW,
		Rules: []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{
			// Sorted and unique: the policy's namespace is the default, so gateway and shop/gateway are one.
			Principals: []string{"corp.example/ns/shop/sa/gateway", "corp.example/ns/tools/sa/loadgen"},
		}}}}},
	}
	if diff := cmp.Diff(want, &s.AuthorizationPolicy.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("AuthorizationPolicy (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"app": "orders"}, s.AuthorizationPolicy.Spec.Selector.MatchLabels); diff != "" {
		t.Errorf("selector is not the Service's (-want +got):\n%s", diff)
	}
}

func TestEffectivePolicy(t *testing.T) {
	tests := []struct {
		name   string
		policy *v1alpha1.TrafficPolicy
		want   v1alpha1.EffectivePolicy
	}{
		{"nothing set", pt.Policy("shop", "orders"), v1alpha1.EffectivePolicy{
			Attempts: 2, RetryOn: []string{"connect-failure", "refused-stream", "unavailable", "cancelled"}, DefaultRetries: true,
			WorstCaseAttempts: 3}},
		{"timeout only", pt.Policy("shop", "orders", pt.Timeout("3s"), pt.Retries(2, "")), v1alpha1.EffectivePolicy{
			Timeout: "3s", Attempts: 2, WorstCaseAttempts: 3, WorstCaseWait: "3s"}},
		{"per-try only", pt.Policy("shop", "orders", pt.Retries(2, "500ms")), v1alpha1.EffectivePolicy{
			Attempts: 2, PerTryTimeout: "500ms", WorstCaseAttempts: 3, WorstCaseWait: "1.5s"}},
		{"timeout cuts the retry chain", pt.Policy("shop", "orders", pt.Timeout("2s"), pt.Retries(3, "1s")), v1alpha1.EffectivePolicy{
			Timeout: "2s", Attempts: 3, PerTryTimeout: "1s", WorstCaseAttempts: 4, WorstCaseWait: "2s"}},
		{"retry chain within timeout", pt.Policy("shop", "orders", pt.Timeout("1m30s"), pt.Retries(1, "10s", "connect-failure")), v1alpha1.EffectivePolicy{
			Timeout: "1m30s", Attempts: 1, PerTryTimeout: "10s", RetryOn: []string{"connect-failure"}, WorstCaseAttempts: 2, WorstCaseWait: "20s"}},
		{"retries on responses split off POST and PATCH", pt.Policy("shop", "orders", pt.Timeout("1m30s"), pt.Retries(1, "10s", "connect-failure", "reset")), v1alpha1.EffectivePolicy{
			Timeout: "1m30s", Attempts: 1, PerTryTimeout: "10s", RetryOn: []string{"connect-failure", "reset"}, WorstCaseAttempts: 2, WorstCaseWait: "20s",
			Routes: []v1alpha1.EffectiveRoute{
				{Name: "default.non-idempotent", Match: "HTTP POST|PATCH without Idempotency-Key", Timeout: "1m30s", Attempts: 1, PerTryTimeout: "10s",
					RetryOn: []string{"connect-failure"}, WorstCaseAttempts: 2, WorstCaseWait: "20s",
					Note: "safe-retry rule: a non-idempotent request is retried only where it cannot have reached the Service"},
				{Name: "default", Match: "every other call", Timeout: "1m30s", Attempts: 1, PerTryTimeout: "10s", RetryOn: []string{"connect-failure", "reset"},
					WorstCaseAttempts: 2, WorstCaseWait: "20s"},
			}}},
		{"retries off", pt.Policy("shop", "orders", pt.Timeout("2s"), pt.Retries(0, "")), v1alpha1.EffectivePolicy{
			Timeout: "2s", Attempts: 0, WorstCaseAttempts: 1, WorstCaseWait: "2s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Host = host
			got := build(t, tt.policy, desiredstate.PlatformDefaults()).Effective
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("effective policy (-want +got):\n%s", diff)
			}
			// Effective alone, as the call-graph analysis uses it, agrees with Build.
			alone, err := desiredstate.Effective(tt.policy, desiredstate.PlatformDefaults())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, alone); diff != "" {
				t.Errorf("Effective (-want +got):\n%s", diff)
			}
		})
	}
}

// Effective needs no Service, even for a policy whose mtls and allow would need its selector, and
// rejects what Build rejects.
func TestEffectiveWithoutService(t *testing.T) {
	p := pt.Policy("shop", "orders", pt.Timeout("2s"), pt.MTLS(v1alpha1.MTLSStrict), pt.Allow("gateway"))
	got, err := desiredstate.Effective(p, desiredstate.PlatformDefaults())
	if err != nil {
		t.Fatalf("Effective: %v", err)
	}
	if got.Timeout != "2s" || got.WorstCaseAttempts != 3 {
		t.Errorf("Effective = %+v, want timeout 2s and 3 worst-case attempts", got)
	}
	_, err = desiredstate.Effective(pt.Policy("shop", "orders", pt.Retries(11, "")), desiredstate.PlatformDefaults())
	if _, ok := errors.AsType[*desiredstate.InvalidError](err); !ok {
		t.Errorf("Effective of 11 attempts: %v, want *InvalidError", err)
	}
}

func TestBuildRejects(t *testing.T) {
	noSelector := pt.Service("shop", "orders")
	noSelector.Spec.Selector = nil
	tests := []struct {
		name   string
		policy *v1alpha1.TrafficPolicy
		svc    *corev1.Service
		want   []string
	}{
		{"invalid spec", pt.Policy("shop", "orders", pt.Timeout("0s"), pt.MTLS("ON")), pt.Service("shop", "orders"),
			[]string{"spec.timeout", "spec.mtls.mode"}},
		{"mtls without the Service", pt.Policy("shop", "orders", pt.MTLS(v1alpha1.MTLSStrict)), nil,
			[]string{`spec.targetRef.name: Invalid value: "orders": Service shop/orders not found`}},
		{"allow without a selector", pt.Policy("shop", "orders", pt.Allow("gateway")), noSelector,
			[]string{`Service shop/orders has no selector`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := desiredstate.Build(tt.policy, tt.svc, desiredstate.PlatformDefaults())
			if _, ok := errors.AsType[*desiredstate.InvalidError](err); !ok {
				t.Fatalf("Build error = %v, want *InvalidError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// Without mtls or allow the Service is not needed: its host is enough.
	if _, err := desiredstate.Build(pt.Policy("shop", "orders", pt.Timeout("1s")), nil, desiredstate.PlatformDefaults()); err != nil {
		t.Errorf("Build without Service for a timeout-only policy: %v", err)
	}
}

func TestDefaultsValidate(t *testing.T) {
	d := desiredstate.PlatformDefaults()
	d.Retries.RetryOn = []v1alpha1.RetryCondition{"sometimes"}
	*d.Retries.Attempts = 12
	err := d.Validate()
	if err == nil || !strings.Contains(err.Error(), "retries.attempts") || !strings.Contains(err.Error(), "retries.retryOn[0]") {
		t.Errorf("Validate() = %v, want errors naming retries.attempts and retries.retryOn[0]", err)
	}
	if err := desiredstate.PlatformDefaults().Validate(); err != nil {
		t.Errorf("platform defaults invalid: %v", err)
	}
}

// A canary owns the weights of its two subsets: at weight w the candidate gets w percent on every route
// (the default route and each spec route alike), the stable subset the rest; at 0 and 100 the subset
// without traffic gets no destination, but both stay in the DestinationRule, so moving back and forth
// never waits for a subset to appear.
func TestCanaryWeightsEveryRoute(t *testing.T) {
	p := pt.Policy("shop", "orders", pt.Split("v1", 100, "v2", 0), pt.Canary("v1", "v2", "4s", []int32{10, 50, 100}))
	p.Spec.Routes = []v1alpha1.Route{{Name: "charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: "Charge"}}, Timeout: pt.Duration("1s")}}
	dest := func(subset string, weight int32) *networkingapi.HTTPRouteDestination {
		return &networkingapi.HTTPRouteDestination{Destination: &networkingapi.Destination{Host: host, Subset: subset}, Weight: weight}
	}
	tests := []struct {
		weight int32
		want   []*networkingapi.HTTPRouteDestination
	}{
		{0, []*networkingapi.HTTPRouteDestination{dest("v1", 100)}},
		{25, []*networkingapi.HTTPRouteDestination{dest("v1", 75), dest("v2", 25)}},
		{100, []*networkingapi.HTTPRouteDestination{dest("v2", 100)}},
	}
	for _, tt := range tests {
		s, err := desiredstate.BuildRollout(p, pt.Service("shop", "orders"), desiredstate.PlatformDefaults(), desiredstate.Rollout{CandidateWeight: tt.weight})
		if err != nil {
			t.Fatalf("BuildRollout at %d: %v", tt.weight, err)
		}
		if len(s.VirtualService.Spec.Http) != 2 {
			t.Fatalf("at %d: %d routes, want charge and default", tt.weight, len(s.VirtualService.Spec.Http))
		}
		for _, route := range s.VirtualService.Spec.Http {
			if diff := cmp.Diff(tt.want, route.Route, protocmp.Transform()); diff != "" {
				t.Errorf("at weight %d, route %s destinations (-want +got):\n%s", tt.weight, route.Name, diff)
			}
		}
		if n := len(s.DestinationRule.Spec.Subsets); n != 2 {
			t.Errorf("at weight %d: %d subsets in the DestinationRule, want both", tt.weight, n)
		}
	}
	// Build is the rollout's start: what render shows before the operator moves anything.
	start := build(t, p, desiredstate.PlatformDefaults())
	if diff := cmp.Diff(tests[0].want, start.VirtualService.Spec.Http[1].Route, protocmp.Transform()); diff != "" {
		t.Errorf("Build's default route (-want +got):\n%s", diff)
	}
	if _, err := desiredstate.BuildRollout(pt.Policy("shop", "orders"), nil, desiredstate.PlatformDefaults(), desiredstate.Rollout{CandidateWeight: 10}); err == nil {
		t.Error("BuildRollout of a policy without a canary at weight 10: no error")
	}
}
