package server_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	eventsv1 "meshplane.dev/services/proto/events/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/orders/internal/server"
	"meshplane.dev/services/orders/internal/store"
)

// catalog holds two products priced in EUR.
type catalog struct{}

func (catalog) GetProduct(_ context.Context, in *catalogv1.GetProductRequest, _ ...grpc.CallOption) (*catalogv1.Product, error) {
	switch in.GetId() {
	case "cup":
		return &catalogv1.Product{Id: "cup", PriceCents: 1200, Currency: "EUR"}, nil
	case "pot":
		return &catalogv1.Product{Id: "pot", PriceCents: 3400, Currency: "EUR"}, nil
	}
	return nil, status.Error(codes.NotFound, "no")
}

// payments records every charge request and, like the real one, charges a key once: the charge id is
// derived from the key. It fails while fail is set.
type payments struct {
	mu       sync.Mutex
	requests []*paymentsv1.ChargeRequest
	fail     error
	release  chan struct{} // when set, Charge waits for it
	held     int           // Charge calls waiting for release
}

func (p *payments) Charge(ctx context.Context, in *paymentsv1.ChargeRequest, _ ...grpc.CallOption) (*paymentsv1.ChargeResponse, error) {
	p.mu.Lock()
	release := p.release
	if release != nil {
		p.held++
	}
	p.mu.Unlock()
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, in)
	if p.fail != nil {
		return nil, p.fail
	}
	return &paymentsv1.ChargeResponse{ChargeId: "ch_" + in.GetIdempotencyKey(), AmountCents: in.GetAmountCents(), Currency: in.GetCurrency()}, nil
}

// awaitHeld waits until a Charge call is held by release: the request that leased the order is then
// inside its charge, and the others with its key find the lease.
func (p *payments) awaitHeld(t *testing.T) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.held == 0 {
			return errors.New("no charge call held yet")
		}
		return nil
	})
}

func (p *payments) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.requests)
}

// charged is the number of distinct payment keys charged: what the card holder would see.
func (p *payments) charged() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := map[string]bool{}
	for _, r := range p.requests {
		keys[r.GetIdempotencyKey()] = true
	}
	if p.fail != nil {
		return 0
	}
	return len(keys)
}

func (p *payments) set(fail error, release chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail, p.release = fail, release
}

// replica is one orders process over the shared database.
type replica struct {
	*server.Server
	reg   *prometheus.Registry
	store *store.Store
}

// shared is the PostgreSQL of the package's tests (TestMain); a test that stops its database runs one of
// its own.
var shared *devserver.Postgres

func TestMain(m *testing.M) { os.Exit(devservertest.MainWithPostgres(m, &shared)) }

// newReplica starts an orders replica on database db of pg, calling p.
func newReplica(t *testing.T, pg *devserver.Postgres, db string, p *payments, lease time.Duration) replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := pgstore.DefaultDatabaseConfig(pg.URL(db))
	cfg.DatabasePassword = pg.Password
	pool, err := pgstore.Open(context.Background(), cfg, pgstore.Options{Component: store.Component, Migrations: store.Migrations(),
		Operations: store.Operations, Logger: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := store.New(pool)
	return replica{Server: server.New(slog.New(slog.DiscardHandler), reg, catalog{}, p, st, lease, nil), reg: reg, store: st}
}

func setup(t *testing.T) (*server.Server, *payments, *prometheus.Registry) {
	t.Helper()
	p := &payments{}
	r := newReplica(t, shared, devservertest.PostgresDatabase(t, shared), p, 5*time.Second)
	return r.Server, p, r.reg
}

func orders(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	f, err := metricstest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]float64{
		"placed":         f.Value("meshplane_orders_total", map[string]string{"result": "placed"}),
		"rejected":       f.Value("meshplane_orders_total", map[string]string{"result": "rejected"}),
		"payment_failed": f.Value("meshplane_orders_total", map[string]string{"result": "payment_failed"}),
	}
}

func order(key string) *ordersv1.PlaceOrderRequest {
	return &ordersv1.PlaceOrderRequest{IdempotencyKey: key, CardToken: "tok_visa", Items: []*ordersv1.LineItem{
		{ProductId: "cup", Quantity: 2}, {ProductId: "pot", Quantity: 1},
	}}
}

func TestPlaceOrderPricesChargesAndReplays(t *testing.T) {
	s, p, reg := setup(t)
	ctx := context.Background()
	first, err := s.PlaceOrder(ctx, order("k1"))
	if err != nil {
		t.Fatal(err)
	}
	wantCharge := "ch_" + server.PaymentKey(first.GetOrder().GetId())
	if got := first.GetOrder(); got.GetTotalCents() != 5800 || got.GetStatus() != "paid" || got.GetChargeId() != wantCharge || first.GetReplayed() {
		t.Errorf("order: got %v, want 2×1200+3400 = 5800 paid with charge %s", first, wantCharge)
	}
	again, err := s.PlaceOrder(ctx, order("k1"))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetOrder().GetId() != first.GetOrder().GetId() || !again.GetReplayed() {
		t.Errorf("retry: got %v, want the same order replayed", again)
	}
	if p.count() != 1 || p.requests[0].GetIdempotencyKey() != server.PaymentKey(first.GetOrder().GetId()) || p.requests[0].GetAmountCents() != 5800 ||
		p.requests[0].GetReference() != first.GetOrder().GetId() {
		t.Errorf("charges: got %v, want one of 5800 keyed and referenced by the order", p.requests)
	}
	got, err := s.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: first.GetOrder().GetId()})
	if diff := cmp.Diff(first.GetOrder(), got, protocmp.Transform()); err != nil || diff != "" {
		t.Errorf("GetOrder: %v, (-placed +read):\n%s", err, diff)
	}
	if _, err := s.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: "ord_none"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetOrder(unknown): got %v, want NotFound", err)
	}
	other := order("k1")
	other.Items[0].Quantity = 3
	if _, err := s.PlaceOrder(ctx, other); status.Code(err) != codes.AlreadyExists {
		t.Errorf("key reused for another order: got %v want AlreadyExists", err)
	}
	if diff := cmp.Diff(map[string]float64{"placed": 1, "rejected": 0, "payment_failed": 0}, orders(t, reg)); diff != "" {
		t.Errorf("orders (-want +got):\n%s", diff)
	}
}

// Eight concurrent requests with one key, spread over two replicas while the charge is held: one order,
// one charge call, one placed; every request answers with that order.
func TestConcurrentRetriesOverReplicasPlaceOneOrder(t *testing.T) {
	db := devservertest.PostgresDatabase(t, shared)
	p := &payments{}
	a, b := newReplica(t, shared, db, p, 5*time.Second), newReplica(t, shared, db, p, 5*time.Second)
	release := make(chan struct{})
	p.set(nil, release)
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		r := a
		if i%2 == 1 {
			r = b
		}
		wg.Go(func() {
			resp, err := r.PlaceOrder(context.Background(), order("same"))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = resp.GetOrder().GetId()
		})
	}
	p.awaitHeld(t)
	close(release)
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("order ids: got %v, want one", ids)
		}
	}
	placed := orders(t, a.reg)["placed"] + orders(t, b.reg)["placed"]
	if p.count() != 1 || placed != 1 {
		t.Errorf("got %d charge calls and %v placed over both replicas, want 1 and 1", p.count(), placed)
	}
	if got, err := b.GetOrder(context.Background(), &ordersv1.GetOrderRequest{Id: ids[0]}); err != nil || got.GetStatus() != "paid" {
		t.Errorf("the order read on the other replica: %v %v", got, err)
	}
}

// Payments failing leaves the order pending; the retry resumes that same order with the same payment
// key (payments may have charged before failing), and it is placed once.
func TestFailedChargeIsResumedWithTheSamePaymentKey(t *testing.T) {
	s, p, reg := setup(t)
	ctx := context.Background()
	p.set(status.Error(codes.Unavailable, "connection refused"), nil)
	_, err := s.PlaceOrder(ctx, order("k"))
	dep, _, ok := breaker.FailedDependency(err)
	if status.Code(err) != codes.Unavailable || !ok || dep != "payments" {
		t.Errorf("payments down: got %v, want Unavailable naming payments", err)
	}
	p.set(breaker.DependencyError(codes.Unavailable, "payments", breaker.ReasonCircuitOpen, "open"), nil)
	_, err = s.PlaceOrder(ctx, order("k"))
	if dep, reason, _ := breaker.FailedDependency(err); dep != "payments" || reason != breaker.ReasonCircuitOpen {
		t.Errorf("breaker open: got %v, want the breaker's error passed on", err)
	}
	p.set(nil, nil)
	r, err := s.PlaceOrder(ctx, order("k"))
	if err != nil || r.GetReplayed() || r.GetOrder().GetStatus() != "paid" {
		t.Fatalf("retry after recovery: got %v %v, want the order paid by this request", r, err)
	}
	keys := map[string]bool{}
	for _, req := range p.requests {
		keys[req.GetIdempotencyKey()] = true
	}
	if len(keys) != 1 || !keys[server.PaymentKey(r.GetOrder().GetId())] {
		t.Errorf("payment keys of the 3 attempts: got %v, want only the order's", keys)
	}
	if diff := cmp.Diff(map[string]float64{"placed": 1, "rejected": 0, "payment_failed": 2}, orders(t, reg)); diff != "" {
		t.Errorf("orders (-want +got):\n%s", diff)
	}
}

// A declined card leaves nothing behind: the key may be retried, and is declined again.
func TestDeclinedOrderIsForgotten(t *testing.T) {
	s, p, _ := setup(t)
	ctx := context.Background()
	p.set(rpc.WithReason(codes.FailedPrecondition, "CARD_DECLINED", "card declined"), nil)
	first := order("k")
	if _, err := s.PlaceOrder(ctx, first); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("declined: got %v, want FailedPrecondition passed on", err)
	}
	if _, err := s.PlaceOrder(ctx, first); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("same key again: got %v, want declined again (nothing kept)", err)
	}
	p.set(nil, nil)
	r, err := s.PlaceOrder(ctx, first)
	if err != nil || r.GetOrder().GetStatus() != "paid" {
		t.Errorf("after the card is accepted: got %v %v, want paid", r, err)
	}
	if p.charged() != 3 {
		t.Errorf("payment keys tried: %d, want 3 (a fresh order each time)", p.charged())
	}
}

// A replica that crashed while charging leaves a pending order whose lease passes; a retry on another
// replica resumes it with the same payment key: one order, one charge, even if the crashed replica's
// charge went through.
func TestRetryResumesAnOrderLeftPendingByACrashedReplica(t *testing.T) {
	db := devservertest.PostgresDatabase(t, shared)
	p := &payments{}
	crashed, survivor := newReplica(t, shared, db, p, 300*time.Millisecond), newReplica(t, shared, db, p, 5*time.Second)
	ctx := context.Background()
	// The crashed replica recorded the order, charged it, and died before marking it paid: its charge
	// call is in payments' requests, its order pending with a lease that is about to pass.
	p.set(nil, make(chan struct{}))
	cctx, crash := context.WithCancel(ctx)
	go func() { _, _ = crashed.PlaceOrder(cctx, order("k")) }()
	var pending string
	wait.For(t, 5*time.Second, func() error {
		o, err := crashed.store.ByKey(ctx, "k")
		pending = o.ID
		return err
	})
	crash() // the charge call ends with the request; what a SIGKILL does to it
	p.set(nil, nil)
	if _, err := p.Charge(ctx, &paymentsv1.ChargeRequest{IdempotencyKey: server.PaymentKey(pending), AmountCents: 5800, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	r, err := survivor.PlaceOrder(ctx, order("k"))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetOrder().GetId() != pending || r.GetOrder().GetStatus() != "paid" || r.GetOrder().GetChargeId() != "ch_"+server.PaymentKey(pending) {
		t.Errorf("retry: got %v, want order %s paid with its one charge", r.GetOrder(), pending)
	}
	if p.charged() != 1 {
		t.Errorf("distinct charges: %d, want 1", p.charged())
	}
	if placed := orders(t, survivor.reg)["placed"]; placed != 1 {
		t.Errorf("placed on the survivor: %v, want 1", placed)
	}
}

// The same key with another body is refused and charges nothing; an over-long key is refused naming
// the field.
func TestKeyReusedOrTooLongIsRefused(t *testing.T) {
	s, p, _ := setup(t)
	ctx := context.Background()
	if _, err := s.PlaceOrder(ctx, order("k")); err != nil {
		t.Fatal(err)
	}
	other := order("k")
	other.CardToken = "tok_other"
	if _, err := s.PlaceOrder(ctx, other); status.Code(err) != codes.AlreadyExists {
		t.Errorf("other card, same key: got %v, want AlreadyExists", err)
	}
	for _, key := range []string{strings.Repeat("k", server.MaxKeyLen+1), "k\x00"} {
		_, err := s.PlaceOrder(ctx, order(key))
		if field, _, _ := rpc.FieldViolation(err); status.Code(err) != codes.InvalidArgument || field != "idempotency_key" {
			t.Errorf("key %q: got %v, want InvalidArgument naming idempotency_key", key, err)
		}
	}
	if p.count() != 1 {
		t.Errorf("charge calls: %d, want only the first order's", p.count())
	}
}

// With the database down an order fails at once with Unavailable naming postgres, and nothing is
// charged; once it is back the same key places the order.
func TestDatabaseDownFailsFastChargingNothing(t *testing.T) {
	pg := devservertest.Postgres(t, "orders")
	p := &payments{}
	s := newReplica(t, pg, "orders", p, 5*time.Second)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err := s.PlaceOrder(context.Background(), order("k"))
	if dep, _, _ := breaker.FailedDependency(err); status.Code(err) != codes.Unavailable || dep != "postgres" || time.Since(began) > time.Second {
		t.Errorf("database down: got %v after %s, want Unavailable naming postgres within 1s", err, time.Since(began))
	}
	if _, err := s.GetOrder(context.Background(), &ordersv1.GetOrderRequest{Id: "ord_x"}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetOrder with the database down: got %v, want Unavailable", err)
	}
	if err := pg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r, err := s.PlaceOrder(context.Background(), order("k")); err != nil || r.GetOrder().GetStatus() != "paid" {
		t.Errorf("after the database returned: %v %v", r, err)
	}
	if p.count() != 1 {
		t.Errorf("charge calls: %d, want 1 (none while the database was down)", p.count())
	}
}

func TestInvalidOrdersNameTheField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*ordersv1.PlaceOrderRequest)
		field string
	}{
		{"no key", func(r *ordersv1.PlaceOrderRequest) { r.IdempotencyKey = "" }, "idempotency_key"},
		{"no items", func(r *ordersv1.PlaceOrderRequest) { r.Items = nil }, "items"},
		{"no card", func(r *ordersv1.PlaceOrderRequest) { r.CardToken = "" }, "card_token"},
		{"zero quantity", func(r *ordersv1.PlaceOrderRequest) { r.Items[1].Quantity = 0 }, "items[1].quantity"},
		{"no product", func(r *ordersv1.PlaceOrderRequest) { r.Items[0].ProductId = "" }, "items[0].product_id"},
		{"unknown product", func(r *ordersv1.PlaceOrderRequest) { r.Items[1].ProductId = "kettle" }, "items[1].product_id"},
	}
	s, p, reg := setup(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := order("k-" + tt.name)
			tt.edit(r)
			_, err := s.PlaceOrder(context.Background(), r)
			if field, _, _ := rpc.FieldViolation(err); status.Code(err) != codes.InvalidArgument || field != tt.field {
				t.Errorf("got %v (field %q), want InvalidArgument naming %s", err, field, tt.field)
			}
		})
	}
	if p.count() != 0 || orders(t, reg)["rejected"] != float64(len(tests)) {
		t.Errorf("got %d charges and %v rejected, want 0 and %d", p.count(), orders(t, reg)["rejected"], len(tests))
	}
}

// outboxEvents returns the OrderPlaced events in database db's outbox, decoded, with each row's trace id.
func outboxEvents(t *testing.T, db string) []*eventsv1.OrderPlaced {
	t.Helper()
	ctx := context.Background()
	conn, err := shared.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	rows, err := conn.Query(ctx, "SELECT id, subject, event_type, payload, trace_id, order_id FROM outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []*eventsv1.OrderPlaced
	for rows.Next() {
		var id, subject, typ, traceID, orderID string
		var payload []byte
		if err := rows.Scan(&id, &subject, &typ, &payload, &traceID, &orderID); err != nil {
			t.Fatal(err)
		}
		ev := &eventsv1.OrderPlaced{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			t.Fatalf("outbox row %s: %v", id, err)
		}
		if ev.GetEventId() != id || ev.GetOrderId() != orderID || ev.GetTraceId() != traceID || subject != "orders.placed" ||
			typ != "meshplane.events.v1.OrderPlaced" {
			t.Errorf("outbox row %s (%s %s, order %s, trace %s) disagrees with its payload %v", id, subject, typ, orderID, traceID, ev)
		}
		out = append(out, ev)
	}
	return out
}

// An order's OrderPlaced event is written if and only if the order is paid, once: not for a declined
// card, not while payments fails, once when the retry pays it, not again on a replay, and once for eight
// concurrent requests with one key over two replicas. It carries the placing request's trace id.
func TestEventWrittenIfAndOnlyIfTheOrderIsPaid(t *testing.T) {
	db := devservertest.PostgresDatabase(t, shared)
	p := &payments{}
	notified := 0
	var mu sync.Mutex
	a := newReplica(t, shared, db, p, 5*time.Second)
	a.Server = server.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), catalog{}, p, a.store, 5*time.Second,
		func() { mu.Lock(); notified++; mu.Unlock() })
	b := newReplica(t, shared, db, p, 5*time.Second)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := telemetry.WithTrace(context.Background(), telemetry.Trace{TraceID: traceID, SpanID: "00f067aa0ba902b7"})

	p.set(rpc.WithReason(codes.FailedPrecondition, "CARD_DECLINED", "card declined"), nil)
	if _, err := a.PlaceOrder(ctx, order("declined")); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("declined: got %v", err)
	}
	p.set(status.Error(codes.Unavailable, "connection refused"), nil)
	if _, err := a.PlaceOrder(ctx, order("retried")); status.Code(err) != codes.Unavailable {
		t.Fatalf("payments down: got %v", err)
	}
	if evs := outboxEvents(t, db); len(evs) != 0 {
		t.Errorf("outbox after a declined order and a failed charge: %v, want nothing", evs)
	}
	p.set(nil, nil)
	placed, err := a.PlaceOrder(ctx, order("retried"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PlaceOrder(ctx, order("retried")); err != nil {
		t.Fatal(err)
	}
	evs := outboxEvents(t, db)
	want := &eventsv1.OrderPlaced{OrderId: placed.GetOrder().GetId(), TotalCents: 5800, Currency: "EUR", ChargeId: placed.GetOrder().GetChargeId(),
		TraceId: traceID, Items: []*eventsv1.LineItem{{ProductId: "cup", Quantity: 2, UnitPriceCents: 1200}, {ProductId: "pot", Quantity: 1, UnitPriceCents: 3400}}}
	if len(evs) != 1 {
		t.Fatalf("outbox after the order was paid and replayed: %d events, want 1", len(evs))
	}
	if diff := cmp.Diff(want, evs[0], protocmp.Transform(), protocmp.IgnoreFields(&eventsv1.OrderPlaced{}, "event_id", "placed_unix_ms")); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	if notified != 1 {
		t.Errorf("relay woken %d times, want once, for the one event written", notified)
	}

	release := make(chan struct{})
	p.set(nil, release)
	var wg sync.WaitGroup
	for i := range 8 {
		r := []replica{a, b}[i%2]
		wg.Go(func() {
			if _, err := r.PlaceOrder(ctx, order("eight")); err != nil {
				t.Error(err)
			}
		})
	}
	p.awaitHeld(t)
	close(release)
	wg.Wait()
	if evs := outboxEvents(t, db); len(evs) != 2 {
		t.Errorf("outbox after eight concurrent requests with one key: %d events, want 2 (one per order)", len(evs))
	}
}
