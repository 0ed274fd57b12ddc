package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshplane.dev/mesh/devkit/runtest"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"
)

// run with a fake environment charges on GRPC_ADDR, once per key, and returns nil when its context ends.
func TestRunServesAndDrains(t *testing.T) {
	addrs := runtest.Addrs(t, 2)
	p := runtest.Start(t, run, runtest.Env{"GRPC_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn"})
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	client := paymentsv1.NewPaymentServiceClient(conn)
	req := &paymentsv1.ChargeRequest{IdempotencyKey: "k1", AmountCents: 1200, Currency: "EUR", CardToken: "tok_visa"}
	first, err := client.Charge(context.Background(), req)
	if err != nil {
		t.Fatalf("Charge: %v", err)
	}
	again, err := client.Charge(context.Background(), req)
	if err != nil || again.GetChargeId() != first.GetChargeId() {
		t.Errorf("Charge retried with its key = %v, %v; want charge %s again", again, err, first.GetChargeId())
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after its context ended, want nil\noutput:\n%s", err, p.Output())
	}
}

func TestRunRejectsBadSettingsNamingThem(t *testing.T) {
	for env, value := range map[string]string{"GRPC_ADDR": "no-port", "LOG_LEVEL": "loud"} {
		err := run(context.Background(), nil, runtest.Env{env: value}.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: run returned %v, want an error naming %s", env, value, err, env)
		}
	}
}
