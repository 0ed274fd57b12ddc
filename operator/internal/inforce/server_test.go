package inforce

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"meshplane.dev/operator/api/v1alpha1"
)

// inboundListener is an inbound listener as istiod's gRPC generator builds it: one filter chain, TLS
// requiring a client certificate under STRICT, an ALLOW RBAC filter for the principals.
func inboundListener(t *testing.T, strict bool, principals ...string) *listenerv3.Listener {
	t.Helper()
	anyOf := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	var filters []*hcmv3.HttpFilter
	if principals != nil {
		var ids []*rbacv3.Principal
		for _, p := range principals {
			ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
				PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}}}})
		}
		rbac := &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"shop-payments-0": {Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}}},
		}}}
		filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(rbac)}})
	}
	fc := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "inbound-hcm",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(&hcmv3.HttpConnectionManager{HttpFilters: filters})}}}}
	if strict {
		fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: anyOf(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true)})}}
	}
	return &listenerv3.Listener{Name: InboundListenerPrefix + "[::]:9030", FilterChains: []*listenerv3.FilterChain{fc}}
}

// The server's side of mtls and allow: in force when its inbound listener requires mTLS and allows
// exactly the declared callers; missing when the server runs no xDS server; differing otherwise.
func TestCompareServer(t *testing.T) {
	orders := "spiffe://cluster.local/ns/shop/sa/orders"
	strictAllow := &v1alpha1.TrafficPolicy{Spec: v1alpha1.TrafficPolicySpec{MTLS: &v1alpha1.MTLS{Mode: v1alpha1.MTLSStrict},
		Allow: []v1alpha1.Caller{{ServiceAccount: "orders"}}}}
	strictAllow.Namespace = "shop"
	strictOnly := strictAllow.DeepCopy()
	strictOnly.Spec.Allow = nil
	type verdict struct{ Received, Verdict string }
	tests := []struct {
		name     string
		policy   *v1alpha1.TrafficPolicy
		listener *listenerv3.Listener
		want     map[string]verdict
	}{
		{"STRICT and allow in force", strictAllow, inboundListener(t, true, orders), map[string]verdict{
			"mtls.mode": {"listener DownstreamTlsContext require_client_certificate", "in force"},
			"allow":     {"listener RBAC ALLOW " + orders, "in force"}}},
		{"server still plaintext, no RBAC", strictAllow, inboundListener(t, false), map[string]verdict{
			"mtls.mode": {"listener plaintext filter chain", "DIFFERS"},
			"allow":     {"listener RBAC: none", "DIFFERS"}}},
		{"allow removed, server still checks", strictOnly, inboundListener(t, true, orders), map[string]verdict{
			"mtls.mode": {"listener DownstreamTlsContext require_client_certificate", "in force"},
			"allow":     {"listener RBAC ALLOW " + orders, "DIFFERS"}}},
		{"not an xDS server", strictAllow, nil, map[string]verdict{
			"mtls.mode": {"no inbound listener", "MISSING"},
			"allow":     {"no inbound listener", "MISSING"}}},
	}
	tests = append(tests, struct {
		name     string
		policy   *v1alpha1.TrafficPolicy
		listener *listenerv3.Listener
		want     map[string]verdict
	}{"listener asked for, none generated (unhealthy WorkloadEntry)", strictAllow, nil, map[string]verdict{
		"mtls.mode": {"no listener generated", "MISSING"},
		"allow":     {"no listener generated", "MISSING"}}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := Server{Proxy: Proxy{ID: "payments-v1.shop"}}
			if tt.listener == nil && tt.want["mtls.mode"].Received == "no listener generated" {
				srv.Listener = InboundListenerPrefix + "[::]:9030"
			}
			if tt.listener != nil {
				srv.Listener, srv.Generated = tt.listener.GetName(), true
				readInbound(tt.listener, &srv)
			}
			got := map[string]verdict{}
			for _, row := range CompareServer(tt.policy, "cluster.local", srv) {
				got[row.Field] = verdict{row.Received, string(row.Verdict)}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
		})
	}
}
