package desiredstate_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

// policy decodes a spec written as JSON, as a team writes it, for the Service orders in shop.
func policy(t *testing.T, spec string) *v1alpha1.TrafficPolicy {
	t.Helper()
	p, err := pt.Decode(pt.Document("shop", "orders", spec))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func routeNames(vs []*networkingapi.HTTPRoute) []string {
	var names []string
	for _, r := range vs {
		names = append(names, r.Name)
	}
	return names
}

// Routes are tried most specific first whatever their order in the spec, the default route last:
// exact paths and gRPC service/method, then gRPC method names, then longer prefixes and gRPC services,
// then no path; a method match and more headers before fewer conditions; ties in list order.
func TestRoutesMostSpecificFirst(t *testing.T) {
	p := policy(t, `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
		{"name":"any-post","match":{"http":{"method":"POST"}},"timeout":"1s"},
		{"name":"v1","match":{"http":{"path":{"type":"Prefix","value":"/v1/"}}},"timeout":"1s"},
		{"name":"v1-gold","match":{"http":{"path":{"type":"Prefix","value":"/v1/"},"headers":[{"name":"x-tenant","value":"gold"}]}},"timeout":"1s"},
		{"name":"v1-get","match":{"http":{"path":{"type":"Prefix","value":"/v1/"},"method":"GET"}},"timeout":"1s"},
		{"name":"v1-orders","match":{"http":{"path":{"type":"Prefix","value":"/v1/orders"}}},"timeout":"1s"},
		{"name":"catalog","match":{"grpc":{"service":"meshplane.catalog.v1.CatalogService"}},"timeout":"1s"},
		{"name":"charge","match":{"grpc":{"method":"Charge"}},"timeout":"1s"},
		{"name":"exact-charge","match":{"grpc":{"method":"meshplane.payments.v1.PaymentService/Charge"}},"timeout":"1s"},
		{"name":"health","match":{"http":{"path":{"type":"Exact","value":"/healthz"}}},"timeout":"1s"}
	]}`)
	vs := build(t, p, desiredstate.PlatformDefaults()).VirtualService
	want := []string{"exact-charge", "health", "charge", "catalog", "v1-orders", "v1-get", "v1-gold", "v1", "any-post", "default"}
	if diff := cmp.Diff(want, routeNames(vs.Spec.Http)); diff != "" {
		t.Errorf("route order (-want +got):\n%s", diff)
	}
}

// Each match becomes the Istio match callers apply; a gRPC method name is a regular expression over
// every service's path, which Envoy and gRPC's xDS client both match against the whole path.
func TestRouteMatches(t *testing.T) {
	tests := []struct {
		name, match string
		want        *networkingapi.HTTPMatchRequest
	}{
		{"gRPC method name", `{"grpc":{"method":"Charge"}}`,
			&networkingapi.HTTPMatchRequest{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: "/[^/]+/Charge"}}}},
		{"gRPC service/method", `{"grpc":{"method":"meshplane.payments.v1.PaymentService/Charge"}}`,
			&networkingapi.HTTPMatchRequest{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: "/meshplane.payments.v1.PaymentService/Charge"}}}},
		{"gRPC service", `{"grpc":{"service":"meshplane.catalog.v1.CatalogService"}}`,
			&networkingapi.HTTPMatchRequest{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/meshplane.catalog.v1.CatalogService/"}}}},
		{"HTTP everything", `{"http":{"path":{"type":"Exact","value":"/v1/orders"},"method":"GET","headers":[{"name":"x-tenant","value":"gold"}]}}`,
			&networkingapi.HTTPMatchRequest{
				Uri:     &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: "/v1/orders"}},
				Method:  &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: "GET"}},
				Headers: map[string]*networkingapi.StringMatch{"x-tenant": {MatchType: &networkingapi.StringMatch_Exact{Exact: "gold"}}},
			}},
		{"HTTP prefix / is any path", `{"http":{"path":{"type":"Prefix","value":"/"},"method":"GET"}}`,
			&networkingapi.HTTPMatchRequest{Method: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: "GET"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy(t, `{"targetRef":{"name":"orders"},"routes":[{"name":"r","match":`+tt.match+`,"retries":{"attempts":0}}]}`)
			vs := build(t, p, desiredstate.PlatformDefaults()).VirtualService
			if len(vs.Spec.Http) != 2 || len(vs.Spec.Http[0].Match) != 1 {
				t.Fatalf("routes %v, want r with one match and default", routeNames(vs.Spec.Http))
			}
			if diff := cmp.Diff(tt.want, vs.Spec.Http[0].Match[0], protocmp.Transform()); diff != "" {
				t.Errorf("match (-want +got):\n%s", diff)
			}
		})
	}
}

// A route's timeout, retries and fault replace the top level's for its calls; what it leaves unset it
// inherits, and status says which.
func TestRoutesInherit(t *testing.T) {
	p := policy(t, `{"targetRef":{"name":"orders"},"timeout":"2s",
		"retries":{"attempts":2,"perTryTimeout":"500ms","retryOn":["unavailable"]},
		"fault":{"delay":{"fixedDelay":"10ms","percentage":5}},
		"routes":[
			{"name":"list","match":{"grpc":{"method":"ListProducts"}},"timeout":"3s"},
			{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"200ms","retries":{"attempts":3,"retryOn":["unavailable","cancelled"]},
			 "fault":{"abort":{"percentage":50,"code":"UNAVAILABLE"}}}
		]}`)
	s := build(t, p, desiredstate.PlatformDefaults())
	want := []v1alpha1.EffectiveRoute{
		{Name: "list", Match: "gRPC /*/ListProducts", Timeout: "3s", Attempts: 2, PerTryTimeout: "500ms", RetryOn: []string{"unavailable"},
			WorstCaseAttempts: 3, WorstCaseWait: "1.5s", Fault: "delay 10ms to 5%", Inherited: []string{"retries", "fault"}},
		{Name: "get", Match: "gRPC /*/GetProduct", Timeout: "200ms", Attempts: 3, RetryOn: []string{"unavailable", "cancelled"},
			WorstCaseAttempts: 4, WorstCaseWait: "200ms", Fault: "abort UNAVAILABLE to 50%"},
		{Name: "default", Match: "every other call", Timeout: "2s", Attempts: 2, PerTryTimeout: "500ms", RetryOn: []string{"unavailable"},
			WorstCaseAttempts: 3, WorstCaseWait: "1.5s", Fault: "delay 10ms to 5%"},
	}
	if diff := cmp.Diff(want, s.Effective.Routes); diff != "" {
		t.Errorf("status.effective.routes (-want +got):\n%s", diff)
	}
	get := s.VirtualService.Spec.Http[1]
	wantGet := &networkingapi.HTTPRoute{
		Name:    "get",
		Match:   []*networkingapi.HTTPMatchRequest{{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: "/[^/]+/GetProduct"}}}},
		Route:   []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: host}}},
		Timeout: durationpb.New(2e8),
		Retries: &networkingapi.HTTPRetry{Attempts: 3, RetryOn: "unavailable,cancelled"},
		Fault: &networkingapi.HTTPFaultInjection{Abort: &networkingapi.HTTPFaultInjection_Abort{
			Percentage: &networkingapi.Percent{Value: 50},
			ErrorType:  &networkingapi.HTTPFaultInjection_Abort_GrpcStatus{GrpcStatus: "UNAVAILABLE"},
		}},
	}
	if diff := cmp.Diff(wantGet, get, protocmp.Transform()); diff != "" {
		t.Errorf("route get (-want +got):\n%s", diff)
	}
}

// The safe-retry rule: where retries act on HTTP responses, POST and PATCH requests without an
// Idempotency-Key get a route of their own retried only before the server; gRPC calls and the other
// methods keep what was declared; idempotent overrides it either way.
func TestSafeRetries(t *testing.T) {
	tests := []struct {
		name, spec string
		// want lists every route: name, match in words, retries as written.
		want []string
	}{
		{"platform default retries split nothing", `{"targetRef":{"name":"orders"}}`,
			[]string{"default: every other call: 2 on connect-failure,refused-stream,unavailable,cancelled"}},
		{"retryOn before the server splits nothing", `{"targetRef":{"name":"orders"},"retries":{"attempts":2,"retryOn":["connect-failure","reset-before-request","unavailable"]}}`,
			[]string{"default: every other call: 2 on connect-failure,reset-before-request,unavailable"}},
		{"Istio's default retryOn splits nothing", `{"targetRef":{"name":"orders"},"retries":{"attempts":2}}`,
			[]string{"default: every other call: 2 on "}},
		{"5xx splits the default route", `{"targetRef":{"name":"orders"},"retries":{"attempts":2,"retryOn":["connect-failure","5xx"]}}`,
			[]string{
				"default.non-idempotent: HTTP POST|PATCH without Idempotency-Key: 2 on connect-failure",
				"default: every other call: 2 on connect-failure,5xx",
			}},
		{"a status code alone leaves POST unretried", `{"targetRef":{"name":"orders"},"retries":{"attempts":2,"retryOn":["503"]}}`,
			[]string{
				"default.non-idempotent: HTTP POST|PATCH without Idempotency-Key: 0 on ",
				"default: every other call: 2 on 503",
			}},
		{"a GET route is not split", `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
			{"name":"reads","match":{"http":{"path":{"type":"Prefix","value":"/v1/"},"method":"GET"}},"retries":{"attempts":3,"retryOn":["5xx"]}}]}`,
			[]string{"reads: HTTP GET /v1/*: 3 on 5xx", "default: every other call: 0 on "}},
		{"a POST route is split on its own method", `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
			{"name":"place","match":{"http":{"path":{"type":"Exact","value":"/v1/orders"},"method":"POST"}},"retries":{"attempts":3,"retryOn":["gateway-error","refused-stream"]}}]}`,
			[]string{
				"place.non-idempotent: HTTP POST /v1/orders without Idempotency-Key: 3 on refused-stream",
				"place: HTTP POST /v1/orders: 3 on gateway-error,refused-stream",
				"default: every other call: 0 on ",
			}},
		{"a route that matches Idempotency-Key itself is not split", `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
			{"name":"keyed","match":{"http":{"headers":[{"name":"idempotency-key","value":"k"}]}},"retries":{"attempts":3,"retryOn":["5xx"]}}]}`,
			[]string{"keyed: HTTP (any path) with idempotency-key=k: 3 on 5xx", "default: every other call: 0 on "}},
		{"a gRPC route is not split", `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
			{"name":"get","match":{"grpc":{"method":"GetProduct"}},"retries":{"attempts":3,"retryOn":["unavailable","5xx"]}}]}`,
			[]string{"get: gRPC /*/GetProduct: 3 on unavailable,5xx", "default: every other call: 0 on "}},
		{"idempotent: true keeps retryOn for POST", `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
			{"name":"search","match":{"http":{"path":{"type":"Exact","value":"/v1/search"}}},"retries":{"attempts":2,"retryOn":["5xx"]},"idempotent":true}]}`,
			[]string{"search: HTTP /v1/search: 2 on 5xx", "default: every other call: 0 on "}},
		{"idempotent: false narrows a gRPC method, except with a key", `{"targetRef":{"name":"orders"},"retries":{"attempts":0},"routes":[
			{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":2,"retryOn":["unavailable","connect-failure"]},"idempotent":false}]}`,
			[]string{
				"charge.idempotency-key: gRPC /*/Charge with Idempotency-Key: 2 on unavailable,connect-failure",
				"charge: gRPC /*/Charge: 2 on connect-failure",
				"default: every other call: 0 on ",
			}},
		{"idempotent: false with inherited platform default", `{"targetRef":{"name":"orders"},"routes":[
			{"name":"charge","match":{"grpc":{"method":"Charge"}},"idempotent":false}]}`,
			[]string{
				"charge.idempotency-key: gRPC /*/Charge with Idempotency-Key: 2 on connect-failure,refused-stream,unavailable,cancelled",
				"charge: gRPC /*/Charge: 2 on connect-failure,refused-stream",
				"default: every other call: 2 on connect-failure,refused-stream,unavailable,cancelled",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := build(t, policy(t, tt.spec), desiredstate.PlatformDefaults())
			routes := s.Effective.Routes
			if routes == nil {
				routes = []v1alpha1.EffectiveRoute{{Name: "default", Match: "every other call", Attempts: s.Effective.Attempts, RetryOn: s.Effective.RetryOn}}
			}
			var got []string
			for _, r := range routes {
				got = append(got, r.Name+": "+r.Match+": "+strconv.Itoa(int(r.Attempts))+" on "+strings.Join(r.RetryOn, ","))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			if len(s.VirtualService.Spec.Http) != len(routes) {
				t.Errorf("VirtualService has %d routes, status %d", len(s.VirtualService.Spec.Http), len(routes))
			}
		})
	}
}

// The split route is the original route narrowed to POST and PATCH requests that carry no
// Idempotency-Key and are not gRPC, with the original's timeout and fault.
func TestSafeRetryRouteMatch(t *testing.T) {
	p := policy(t, `{"targetRef":{"name":"orders"},"timeout":"5s","retries":{"attempts":2,"retryOn":["5xx","connect-failure"]},
		"fault":{"abort":{"percentage":1,"code":"503"}}}`)
	vs := build(t, p, desiredstate.PlatformDefaults()).VirtualService
	want := &networkingapi.HTTPRoute{
		Name: "default.non-idempotent",
		Match: []*networkingapi.HTTPMatchRequest{{
			Method: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: "POST|PATCH"}},
			WithoutHeaders: map[string]*networkingapi.StringMatch{
				"idempotency-key": {},
				"content-type":    {MatchType: &networkingapi.StringMatch_Prefix{Prefix: "application/grpc"}},
			},
		}},
		Route:   []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: host}}},
		Timeout: durationpb.New(5e9),
		Retries: &networkingapi.HTTPRetry{Attempts: 2, RetryOn: "connect-failure"},
		Fault: &networkingapi.HTTPFaultInjection{Abort: &networkingapi.HTTPFaultInjection_Abort{
			Percentage: &networkingapi.Percent{Value: 1},
			ErrorType:  &networkingapi.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503},
		}},
	}
	if diff := cmp.Diff(want, vs.Spec.Http[0], protocmp.Transform()); diff != "" {
		t.Errorf("split route (-want +got):\n%s", diff)
	}
}
