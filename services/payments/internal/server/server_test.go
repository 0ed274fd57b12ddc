package server_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/rpc"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/payments/internal/server"
	"meshplane.dev/services/payments/internal/store"
)

// shared is the PostgreSQL of the package's tests (TestMain); a test that stops its database runs one of
// its own.
var shared *devserver.Postgres

func TestMain(m *testing.M) { os.Exit(devservertest.MainWithPostgres(m, &shared)) }

// newServer returns payments over a database of its own on a real PostgreSQL.
func newServer(t *testing.T) (*server.Server, *prometheus.Registry) {
	t.Helper()
	s, reg, _ := newServerOn(t, shared, devservertest.PostgresDatabase(t, shared))
	return s, reg
}

func newServerOn(t *testing.T, pg *devserver.Postgres, database string) (*server.Server, *prometheus.Registry, *pgstore.Store) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := pgstore.DefaultDatabaseConfig(pg.URL(database))
	cfg.DatabasePassword = pg.Password
	db, err := pgstore.Open(context.Background(), cfg, pgstore.Options{Component: store.Component, Migrations: store.Migrations(),
		Operations: store.Operations, Logger: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return server.New(slog.New(slog.DiscardHandler), reg, store.New(db)), reg, db
}

func charges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	f, err := metricstest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, r := range []string{"charged", "duplicate", "declined", "failed", "error"} {
		out[r] = f.Value("meshplane_payments_charges_total", map[string]string{"result": r})
	}
	return out
}

func req(key string, amount int64) *paymentsv1.ChargeRequest {
	return &paymentsv1.ChargeRequest{IdempotencyKey: key, AmountCents: amount, Currency: "EUR", CardToken: "tok_visa"}
}

func TestChargeIsDeduplicatedByKey(t *testing.T) {
	s, reg := newServer(t)
	ctx := context.Background()
	first, err := s.Charge(ctx, req("k1", 1250))
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Charge(ctx, req("k1", 1250))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetChargeId() != first.GetChargeId() || !again.GetDuplicate() || first.GetDuplicate() {
		t.Errorf("retry: got %v after %v, want the same charge id marked duplicate", again, first)
	}
	if _, err := s.Charge(ctx, req("k1", 999)); status.Code(err) != codes.AlreadyExists {
		t.Errorf("same key, other amount: got %v, want AlreadyExists", err)
	}
	if diff := cmp.Diff(map[string]float64{"charged": 1, "duplicate": 1, "declined": 0, "failed": 1, "error": 0}, charges(t, reg)); diff != "" {
		t.Errorf("charges (-want +got):\n%s", diff)
	}
}

func TestConcurrentRetriesChargeOnce(t *testing.T) {
	s, reg := newServer(t)
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Go(func() {
			r, err := s.Charge(context.Background(), req("same", 500))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = r.GetChargeId()
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("charge ids: got %v, want one id", ids)
		}
	}
	if got := charges(t, reg)["charged"]; got != 1 {
		t.Errorf("charged: got %v want 1", got)
	}
}

func TestChargeRejectsInvalidInputNamingTheField(t *testing.T) {
	tests := []struct {
		name  string
		req   *paymentsv1.ChargeRequest
		field string
	}{
		{"no key", req("", 100), "idempotency_key"},
		{"key too long", req(strings.Repeat("k", 256), 100), "idempotency_key"},
		{"key with a NUL", req("k\x00", 100), "idempotency_key"},
		{"zero amount", req("k", 0), "amount_cents"},
		{"bad currency", &paymentsv1.ChargeRequest{IdempotencyKey: "k", AmountCents: 1, Currency: "euro", CardToken: "t"}, "currency"},
		{"no card", &paymentsv1.ChargeRequest{IdempotencyKey: "k", AmountCents: 1, Currency: "EUR"}, "card_token"},
	}
	s, _ := newServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Charge(context.Background(), tt.req)
			field, _, ok := rpc.FieldViolation(err)
			if status.Code(err) != codes.InvalidArgument || !ok || field != tt.field {
				t.Errorf("got %v (field %q), want InvalidArgument naming %s", err, field, tt.field)
			}
		})
	}
}

func TestDeclinedCardIsNotStored(t *testing.T) {
	s, reg := newServer(t)
	r := req("k", 100)
	r.CardToken = server.DeclineToken
	for range 2 {
		_, err := s.Charge(context.Background(), r)
		if status.Code(err) != codes.FailedPrecondition || rpc.Reason(err) != server.ReasonCardDeclined {
			t.Errorf("got %v, want FailedPrecondition CARD_DECLINED", err)
		}
	}
	if diff := cmp.Diff(map[string]float64{"charged": 0, "duplicate": 0, "declined": 2, "failed": 0, "error": 0}, charges(t, reg)); diff != "" {
		t.Errorf("charges (-want +got):\n%s", diff)
	}
}

// Two payments replicas over one database charge a key once, however the requests are spread.
func TestReplicasShareCharges(t *testing.T) {
	db := devservertest.PostgresDatabase(t, shared)
	a, regA, _ := newServerOn(t, shared, db)
	b, regB, _ := newServerOn(t, shared, db)
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			r, err := s.Charge(context.Background(), req("shared", 700))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = r.GetChargeId()
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("charge ids over two replicas: got %v, want one id", ids)
		}
	}
	charged := charges(t, regA)["charged"] + charges(t, regB)["charged"]
	if charged != 1 {
		t.Errorf("charged over both replicas: got %v, want 1", charged)
	}
}

// With the database down a charge fails fast with Unavailable naming postgres, charging nothing; the
// same key charges once it is back.
func TestChargeWithTheDatabaseDownFailsNamingIt(t *testing.T) {
	pg := devservertest.Postgres(t, "payments")
	s, reg, _ := newServerOn(t, pg, "payments")
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err := s.Charge(context.Background(), req("k", 100))
	if dep, _, _ := breaker.FailedDependency(err); status.Code(err) != codes.Unavailable || dep != "postgres" || time.Since(began) > time.Second {
		t.Errorf("database down: got %v after %s, want Unavailable naming postgres within 1s", err, time.Since(began))
	}
	if err := pg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := s.Charge(context.Background(), req("k", 100))
	if err != nil || r.GetDuplicate() {
		t.Errorf("after the database returned: got %v %v, want a fresh charge", r, err)
	}
	if diff := cmp.Diff(map[string]float64{"charged": 1, "duplicate": 0, "declined": 0, "failed": 0, "error": 1}, charges(t, reg)); diff != "" {
		t.Errorf("charges (-want +got):\n%s", diff)
	}
}

// GetCharge finds a charge by its key without charging, and says NOT_FOUND for a key never charged.
func TestGetChargeLooksUpWithoutCharging(t *testing.T) {
	s, reg := newServer(t)
	ctx := context.Background()
	if _, err := s.GetCharge(ctx, &paymentsv1.GetChargeRequest{IdempotencyKey: "k1"}); status.Code(err) != codes.NotFound {
		t.Errorf("before the charge: got %v, want NotFound", err)
	}
	charged, err := s.Charge(ctx, req("k1", 1250))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCharge(ctx, &paymentsv1.GetChargeRequest{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	want := &paymentsv1.ChargeResponse{ChargeId: charged.GetChargeId(), AmountCents: 1250, Currency: "EUR"}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("GetCharge (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]float64{"charged": 1, "duplicate": 0, "declined": 0, "failed": 0, "error": 0}, charges(t, reg)); diff != "" {
		t.Errorf("charges after a lookup (-want +got):\n%s", diff)
	}
	if _, err := s.GetCharge(ctx, &paymentsv1.GetChargeRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no key: got %v, want InvalidArgument", err)
	}
}
