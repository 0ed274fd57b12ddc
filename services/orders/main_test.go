package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/runtest"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
)

// run with a fake environment serves orders on GRPC_ADDR; with catalog unreachable a new order fails
// as Unavailable naming catalog (not a hang, not a generic error), and run returns nil when its context
// ends.
func TestRunServesAndDrains(t *testing.T) {
	pg := devservertest.Postgres(t, "orders")
	addrs := runtest.Addrs(t, 5) // orders, its admin, and nothing listening at catalog's, payments' and the broker's
	p := runtest.Start(t, run, runtest.Env{"GRPC_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn",
		"CATALOG_TARGET": addrs[2], "PAYMENTS_TARGET": addrs[3], "DATABASE_URL": pg.URL("orders"), "DATABASE_PASSWORD": pg.Password,
		"NATS_URL": "nats://" + addrs[4]})
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := ordersv1.NewOrderServiceClient(conn)
	if _, err := client.GetOrder(context.Background(), &ordersv1.GetOrderRequest{Id: "ord_missing"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetOrder(unknown) = %v, want NotFound", err)
	}
	_, err = client.PlaceOrder(context.Background(), &ordersv1.PlaceOrderRequest{IdempotencyKey: "k1", CardToken: "tok_visa",
		Items: []*ordersv1.LineItem{{ProductId: "moka-pot", Quantity: 1}}})
	if dep, _, _ := breaker.FailedDependency(err); status.Code(err) != codes.Unavailable || dep != "catalog" {
		t.Errorf("PlaceOrder with catalog down = %v (dependency %q), want Unavailable naming catalog", err, dep)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after its context ended, want nil\noutput:\n%s", err, p.Output())
	}
}

func TestRunRejectsBadSettingsNamingThem(t *testing.T) {
	for name, env := range map[string]runtest.Env{
		"CATALOG_TARGET":         {"CATALOG_TARGET": "http://catalog"},
		"BREAKER_INTERVAL":       {"BREAKER_INTERVAL": "soon"},
		"GRPC_ADDR":              {"GRPC_ADDR": "no-port"},
		"ORDER_LEASE":            {"ORDER_LEASE": "0s"},
		"DATABASE_URL":           {"DATABASE_URL": "postgres://orders:pw@db/orders"},
		"NATS_URL":               {"NATS_URL": "http://nats:4222"},
		"OUTBOX_PUBLISH_TIMEOUT": {"OUTBOX_PUBLISH_TIMEOUT": "2s"}, // not under DATABASE_QUERY_TIMEOUT's 2s
	} {
		err := run(context.Background(), nil, env.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: run returned %v, want an error naming %s", env, err, name)
		}
	}
}
