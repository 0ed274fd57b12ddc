package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"meshplane.dev/mesh/proxyless"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"
)

// DialXDS connects to target (xds:///…) through gRPC's xDS client with bootstrap b — its own node
// identity and istiod — instead of the GRPC_XDS_BOOTSTRAP file gRPC reads once per process: a drill or
// test decides its identity and istiod's address at run time. gRPC marks the option that allows this
// as meant for tests; scenarios are tests.
func DialXDS(b proxyless.Bootstrap, target string) (*grpc.ClientConn, error) {
	data, err := b.JSON()
	if err != nil {
		return nil, err
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(data)
	if err != nil {
		return nil, fmt.Errorf("xds resolver for %s: %w", b.Node.ID(), err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
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
