package rpc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"meshplane.dev/mesh/rpc"
)

// plaintextInfo is what gRPC's insecure credentials say about a connection.
func plaintextInfo() credentials.AuthInfo {
	_, info, _ := insecure.NewCredentials().ServerHandshake(nil)
	return info
}

func TestPeerIdentity(t *testing.T) {
	orders := &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/shop/sa/orders"}
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"no peer", context.Background(), rpc.Plaintext},
		{"plaintext connection", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: plaintextInfo()}), rpc.Plaintext},
		{"mTLS, SPIFFE id from gRPC", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{SPIFFEID: orders}}),
			"spiffe://cluster.local/ns/shop/sa/orders"},
		{"mTLS, URI SAN of the certificate", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{orders}}}}}}),
			"spiffe://cluster.local/ns/shop/sa/orders"},
		{"TLS without a client certificate", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}}), rpc.Plaintext},
	}
	for _, tt := range tests {
		if got := rpc.PeerIdentity(tt.ctx); got != tt.want {
			t.Errorf("%s: PeerIdentity = %q, want %q", tt.name, got, tt.want)
		}
	}
}
