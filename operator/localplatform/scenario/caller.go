package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"meshplane.dev/mesh/proxyless"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"
)

// DialXDS connects to target (xds:///…) through gRPC's xDS client with bootstrap b — its own node
// identity and istiod — instead of the GRPC_XDS_BOOTSTRAP file gRPC reads once per process: a drill or
// test decides its identity and istiod's address at run time. gRPC marks the option that allows this
// as meant for tests; scenarios are tests. Like the services, it uses gRPC's xDS credentials: mTLS with
// the certificates in b.CertDir where istiod's cluster says ISTIO_MUTUAL, plaintext otherwise.
func DialXDS(b proxyless.Bootstrap, target string) (*grpc.ClientConn, error) {
	data, err := b.JSON()
	if err != nil {
		return nil, err
	}
	xdsResolver, err := xds.NewXDSResolverWithConfigForTesting(data)
	if err != nil {
		return nil, fmt.Errorf("xds resolver for %s: %w", b.Node.ID(), err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, fmt.Errorf("xds credentials for %s: %w", b.Node.ID(), err)
	}
	// Wait for ready: a step changes the policy faster than gRPC's reconnect backoff, and a connection
	// that failed under the previous step's configuration (say a TLS handshake with a server that had
	// not yet turned STRICT, or a subset cluster re-created from the xDS client's cache) would otherwise
	// fail the next step's first calls while it backs off. Refusals the step measures — RBAC's
	// PERMISSION_DENIED, the circuit breaker's and the fault filter's UNAVAILABLE — still fail at once.
	conn, err := grpc.NewClient(target, grpc.WithResolvers(xdsResolver), grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}

// DialDirect connects to the instances at addrs (host:port) in plaintext, round robin, without xDS:
// a caller outside the mesh, as a process without a sidecar or certificates would call a Service.
func DialDirect(addrs ...string) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("direct")
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	conn, err := grpc.NewClient(r.Scheme()+":///instances", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		return nil, fmt.Errorf("dial %v: %w", addrs, err)
	}
	return conn, nil
}

// Charge returns a Call that charges a small amount through conn, each call with a new idempotency
// key so payments never answers from its deduplication.
func Charge(conn grpc.ClientConnInterface) func(context.Context) error {
	c := paymentsv1.NewPaymentServiceClient(conn)
	return func(ctx context.Context) error {
		_, err := c.Charge(ctx, &paymentsv1.ChargeRequest{
			IdempotencyKey: "scenario-" + randomHex(8), AmountCents: 100, Currency: "EUR", CardToken: "tok_visa",
		})
		return err
	}
}

// GetCharge returns a Call that looks up a charge through conn by a new idempotency key. Payments
// answers NOT_FOUND (no charge was made for it), which the call counts as success: the lookup reached
// a server and was answered. Injected faults and timeouts still fail it.
func GetCharge(conn grpc.ClientConnInterface) func(context.Context) error {
	c := paymentsv1.NewPaymentServiceClient(conn)
	return func(ctx context.Context) error {
		_, err := c.GetCharge(ctx, &paymentsv1.GetChargeRequest{IdempotencyKey: "scenario-" + randomHex(8)})
		if status.Code(err) == codes.NotFound {
			return nil
		}
		return err
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
