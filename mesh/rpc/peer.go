package rpc

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Plaintext is the peer label of a call that arrived without a client certificate.
const Plaintext = "plaintext"

// PeerIdentity returns the identity the caller proved in the TLS handshake of the call's connection —
// its certificate's SPIFFE id (spiffe://<trust domain>/ns/<ns>/sa/<sa>), as an mTLS server of the mesh
// sees it — or Plaintext when the call came without a client certificate.
func PeerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Plaintext
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Plaintext
	}
	if info.SPIFFEID != nil {
		return info.SPIFFEID.String()
	}
	if certs := info.State.PeerCertificates; len(certs) > 0 {
		for _, u := range certs[0].URIs {
			if u.Scheme == "spiffe" {
				return u.String()
			}
		}
		return "tls:" + certs[0].Subject.String()
	}
	return Plaintext
}

// PeerMetrics counts the calls a server handled by who made them:
// meshplane_grpc_server_calls_by_peer_total{grpc_service, grpc_method, peer}, peer being the caller's
// SPIFFE id or "plaintext". It shows which identities reach a server and that a server meant to take
// only mTLS takes no plaintext; a call the mesh's RBAC refused never reaches it.
type PeerMetrics struct {
	calls *prometheus.CounterVec
}

// NewPeerMetrics registers the counter on reg.
func NewPeerMetrics(reg prometheus.Registerer) *PeerMetrics {
	m := &PeerMetrics{calls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshplane_grpc_server_calls_by_peer_total",
		Help: "Calls the server handled, by the caller's mTLS identity (SPIFFE id) or plaintext.",
	}, []string{"grpc_service", "grpc_method", "peer"})}
	reg.MustRegister(m.calls)
	return m
}

// UnaryServerInterceptor counts each call by its caller's identity.
func (m *PeerMetrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
		m.calls.WithLabelValues(service, method, PeerIdentity(ctx)).Inc()
		return handler(ctx, req)
	}
}
