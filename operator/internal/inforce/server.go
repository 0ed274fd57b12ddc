package inforce

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// InboundListenerPrefix starts the name of the Listener a gRPC xDS server asks istiod for, followed by
// its listen address (Istio's grpcxds.ServerListenerNamePrefix).
const InboundListenerPrefix = "xds.istio.io/grpc/lds/inbound/"

// Server is one instance of a Service as istiod sees it: a connected proxyless workload whose labels the
// Service selects, and the inbound listener istiod generated for its gRPC xDS server — where the
// Service's own mTLS mode (PeerAuthentication) and allow list (AuthorizationPolicy) are enforced.
type Server struct {
	// Proxy is the workload's connection state.
	Proxy Proxy
	// Listener is the inbound listener's name; empty when the workload asked for none: it does not run
	// gRPC's xDS server (XDS_SERVER), so no inbound policy reaches it.
	Listener string
	// Generated is true when istiod generates that listener for the workload. It does not for a
	// workload that is none of the Service's instances in its registry (an unhealthy WorkloadEntry
	// counts as absent): the server then does not serve at all.
	Generated bool
	// MTLS is true when the listener's filter chain has a TLS context that requires a client
	// certificate: the server refuses plaintext.
	MTLS bool
	// RBAC is true when the listener runs an RBAC filter (from an AuthorizationPolicy).
	RBAC bool
	// Principals are the identities the ALLOW RBAC filter lets through (SPIFFE ids), sorted.
	Principals []string
}

// Servers lists the connected workloads in namespace whose labels include selector (the Service's
// instances) and reads, for each, the inbound listener istiod generated for its gRPC xDS server.
func (d Istiod) Servers(ctx context.Context, namespace string, selector map[string]string) ([]Server, error) {
	proxies, err := d.Proxies(ctx)
	if err != nil {
		return nil, err
	}
	streams, err := d.streams(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Server{}
	var ids []string
	for _, s := range streams {
		id := s.proxyID()
		labels := s.Labels
		if labels == nil {
			labels = s.Metadata.Labels
		}
		ns := s.Metadata.Namespace
		if ns == "" {
			_, ns, _ = strings.Cut(id, ".")
		}
		if ns != namespace || len(selector) == 0 || !selects(selector, labels) {
			continue
		}
		srv := byID[id]
		if srv == nil {
			srv = &Server{}
			if i := slices.IndexFunc(proxies, func(p Proxy) bool { return p.ID == id }); i >= 0 {
				srv.Proxy = proxies[i]
			} else {
				srv.Proxy = Proxy{ID: id}
			}
			byID[id] = srv
			ids = append(ids, id)
		}
		for _, name := range s.Watches[typeListener] {
			if strings.HasPrefix(name, InboundListenerPrefix) && srv.Listener == "" {
				srv.Listener = name
				if err := d.inbound(ctx, s.ID, srv); err != nil {
					return nil, err
				}
			}
		}
	}
	slices.Sort(ids)
	out := make([]Server, 0, len(ids))
	for _, id := range ids {
		out = append(out, *byID[id])
	}
	return out, nil
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// inbound reads connection id's inbound listener srv.Listener into srv.
func (d Istiod) inbound(ctx context.Context, id string, srv *Server) error {
	body, err := d.get(ctx, "/debug/config_dump", url.Values{"proxyID": {id}, "types": {"lds"}})
	if err != nil {
		return err
	}
	dump := &adminv3.ConfigDump{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: lenientTypes{}}).Unmarshal(body, dump); err != nil {
		return fmt.Errorf("istiod config_dump for %s: %w", id, err)
	}
	for _, a := range dump.GetConfigs() {
		msg, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		if l, ok := msg.(*listenerv3.Listener); ok && l.GetName() == srv.Listener {
			srv.Generated = true
			readInbound(l, srv)
		}
	}
	return nil
}

// readInbound reads an inbound listener's TLS context and RBAC filter. istiod builds one filter chain
// (plaintext, or mTLS under STRICT) with the RBAC filters before the router.
func readInbound(l *listenerv3.Listener, srv *Server) {
	principals := map[string]bool{}
	for _, fc := range l.GetFilterChains() {
		if ts := fc.GetTransportSocket(); ts != nil {
			tls := &tlsv3.DownstreamTlsContext{}
			if ts.GetTypedConfig().UnmarshalTo(tls) == nil && tls.GetRequireClientCertificate().GetValue() {
				srv.MTLS = true
			}
		}
		for _, f := range fc.GetFilters() {
			hcm := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().UnmarshalTo(hcm) != nil {
				continue
			}
			for _, hf := range hcm.GetHttpFilters() {
				rbac := &rbachttpv3.RBAC{}
				if hf.GetTypedConfig().UnmarshalTo(rbac) != nil || rbac.GetRules() == nil {
					continue
				}
				srv.RBAC = true
				if rbac.GetRules().GetAction() != rbacv3.RBAC_ALLOW {
					continue
				}
				for _, p := range rbac.GetRules().GetPolicies() {
					for _, pr := range p.GetPrincipals() {
						collectPrincipals(pr, principals)
					}
				}
			}
		}
	}
	srv.Principals = slices.Sorted(maps.Keys(principals))
}

// collectPrincipals gathers the authenticated principal names a principal rule matches, through and/or
// combinations.
func collectPrincipals(p *rbacv3.Principal, out map[string]bool) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Authenticated_:
		m := id.Authenticated.GetPrincipalName()
		if v := m.GetExact(); v != "" {
			out[v] = true
		} else if v := m.GetPrefix(); v != "" {
			out[v+"*"] = true
		}
	case *rbacv3.Principal_OrIds:
		for _, q := range id.OrIds.GetIds() {
			collectPrincipals(q, out)
		}
	case *rbacv3.Principal_AndIds:
		for _, q := range id.AndIds.GetIds() {
			collectPrincipals(q, out)
		}
	}
}
