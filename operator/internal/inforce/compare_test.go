package inforce

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"meshplane.dev/operator/api/v1alpha1"
)

const testHost = "payments.shop.svc.cluster.local"

// grpcRoute is a route as istiod generates it for a proxyless client.
func grpcRoute(t *testing.T, name string, match *routev3.RouteMatch, timeout time.Duration, retries uint32, f *faultv3.HTTPFault) *routev3.Route {
	t.Helper()
	action := &routev3.RouteAction{
		ClusterSpecifier:  &routev3.RouteAction_Cluster{Cluster: "outbound|9030||" + testHost},
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(timeout)},
	}
	if retries > 0 {
		action.RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: wrapperspb.UInt32(retries)}
	}
	r := &routev3.Route{Name: name, Match: match, Action: &routev3.Route_Route{Route: action}}
	if f != nil {
		cfg, err := anypb.New(f)
		if err != nil {
			t.Fatal(err)
		}
		r.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: cfg}
	}
	return r
}

// A route the client still holds from an earlier policy differs: the policy is not in force until it
// is gone (a stale abort would otherwise fail calls after the policy that removed it is "in force").
func TestCompareStaleRoute(t *testing.T) {
	rc := &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{
		Domains: []string{testHost + ":9030"},
		Routes: []*routev3.Route{
			grpcRoute(t, "chaos", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/[^/]+/GetCharge"}}}, 0, 0, nil),
			grpcRoute(t, "default", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, 0, 0, nil),
		},
	}}}
	received := &Received{Proxy: Proxy{ID: "caller.shop"}, Routes: routes(rc, testHost, 9030), FaultFilter: true}
	received.Route = defaultRoute(received.Routes)
	p := &v1alpha1.TrafficPolicy{}
	p.Status.Effective = &v1alpha1.EffectivePolicy{WorstCaseAttempts: 1}
	rows := Compare(p, nil, received)
	if err := Converged(received, rows); err == nil || !strings.Contains(err.Error(), "routes[chaos]") {
		t.Errorf("Converged = %v, want an error naming routes[chaos]", err)
	}
}

// Every declared route is set next to the client's route of the same name: its match as received,
// timeout, retries and fault; a route that matches on :method is for HTTP callers only.
func TestCompareRoutes(t *testing.T) {
	abort := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14},
		Percentage: &typev3.FractionalPercent{Numerator: 250000, Denominator: typev3.FractionalPercent_MILLION},
	}, Delay: &faultcommonv3.FaultDelay{
		FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(time.Second)},
		Percentage:         &typev3.FractionalPercent{Numerator: 10, Denominator: typev3.FractionalPercent_HUNDRED},
	}}
	rc := &routev3.RouteConfiguration{Name: "outbound|9030||" + testHost, VirtualHosts: []*routev3.VirtualHost{{
		Domains: []string{testHost + ":9030"},
		Routes: []*routev3.Route{
			grpcRoute(t, "charge", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/meshplane.payments.v1.PaymentService/Charge"}}, 2*time.Second, 0, abort),
			grpcRoute(t, "get-charge", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/[^/]+/GetCharge"}}}, time.Second, 2, nil),
			grpcRoute(t, "default.non-idempotent", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "POST|PATCH"}}}}}}}, 2*time.Second, 0, nil),
			grpcRoute(t, "default", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, 2*time.Second, 0, nil),
		},
	}}}
	received := &Received{Proxy: Proxy{ID: "caller.shop"}, Routes: routes(rc, testHost, 9030), FaultFilter: true}
	received.Route = defaultRoute(received.Routes)
	p := &v1alpha1.TrafficPolicy{Spec: v1alpha1.TrafficPolicySpec{Timeout: ptr(v1alpha1.Duration("2s"))}}
	p.Status.Effective = &v1alpha1.EffectivePolicy{Timeout: "2s", Attempts: 0, WorstCaseAttempts: 1, Routes: []v1alpha1.EffectiveRoute{
		{Name: "charge", Match: "gRPC /meshplane.payments.v1.PaymentService/Charge", Timeout: "2s", Fault: "delay 1s to 10%, abort UNAVAILABLE to 25%"},
		{Name: "get-charge", Match: "gRPC /*/GetCharge", Timeout: "300ms", Attempts: 2, RetryOn: []string{"unavailable"}},
		{Name: "default.non-idempotent", Match: "HTTP POST|PATCH without Idempotency-Key", Timeout: "2s"},
		{Name: "refund", Match: "gRPC /*/Refund", Timeout: "2s"},
		{Name: "default", Match: "every other call", Timeout: "2s"},
	}}
	type verdict struct{ Received, Verdict string }
	got := map[string]verdict{}
	for _, row := range Compare(p, nil, received) {
		got[row.Field] = verdict{row.Received, string(row.Verdict)}
	}
	want := map[string]verdict{
		"timeout":                             {"route max_stream_duration=2s", "in force"},
		"retries.attempts":                    {"route retry_policy: none", "in force"},
		"split":                               {"route weighted_clusters (all)=100", "in force"},
		"routes[charge]":                      {"route #1 path=/meshplane.payments.v1.PaymentService/Charge", "in force"},
		"routes[charge].timeout":              {"route max_stream_duration=2s", "in force"},
		"routes[charge].retries.attempts":     {"route retry_policy: none", "in force"},
		"routes[charge].fault":                {"route typed_per_filter_config fault: delay 1s to 10%, abort UNAVAILABLE to 25%", "in force"},
		"routes[get-charge]":                  {"route #2 regex=/[^/]+/GetCharge", "in force"},
		"routes[get-charge].timeout":          {"route max_stream_duration=1s", "DIFFERS"},
		"routes[get-charge].retries.attempts": {"route num_retries=2", "in force"},
		"routes[get-charge].retries.retryOn":  {"route retry_on=unavailable", "in force"},
		"routes[default.non-idempotent]":      {"route #3 header :method=~POST|PATCH", "HTTP only"},
		"routes[refund]":                      {"no route of that name", "DIFFERS"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}

func ptr[T any](v T) *T { return &v }
