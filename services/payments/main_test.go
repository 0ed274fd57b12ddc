package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/runtest"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"
)

// run with a fake environment migrates its database, charges on GRPC_ADDR once per key, and returns
// nil when its context ends.
func TestRunServesAndDrains(t *testing.T) {
	pg := devservertest.Postgres(t, "payments")
	addrs := runtest.Addrs(t, 2)
	p := runtest.Start(t, run, runtest.Env{"GRPC_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn",
		"DATABASE_URL": pg.URL("payments"), "DATABASE_PASSWORD": pg.Password})
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
	for env, value := range map[string]string{"GRPC_ADDR": "no-port", "LOG_LEVEL": "loud",
		"DATABASE_URL": "postgres://payments:hunter2@db/payments", "DATABASE_QUERY_TIMEOUT": "-1s"} {
		err := run(context.Background(), nil, runtest.Env{env: value}.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: run returned %v, want an error naming %s", env, value, err, env)
		}
	}
}

// A binary older than its database's schema refuses to start and says why, touching nothing.
func TestRunRefusesANewerSchema(t *testing.T) {
	pg := devservertest.Postgres(t, "payments")
	ctx := context.Background()
	conn, err := pg.Connect(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	addrs := runtest.Addrs(t, 2)
	env := runtest.Env{"GRPC_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn",
		"DATABASE_URL": pg.URL("payments"), "DATABASE_PASSWORD": pg.Password}
	runtest.Start(t, run, env).Stop() //nolint:errcheck // only the migration matters here
	if _, err := conn.Exec(ctx, "INSERT INTO meshplane_schema_migrations (component, version, name) VALUES ('payments', 99, 'from_the_future')"); err != nil {
		t.Fatal(err)
	}
	err = run(ctx, nil, env.Getenv, &strings.Builder{}, &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "payments schema is at version 99, newer than this binary knows (1)") {
		t.Errorf("run against a newer schema: got %v, want a refusal naming both versions", err)
	}
}
