package server_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/rpc"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/orders/internal/server"
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

// payments records every charge request and fails while fail is set.
type payments struct {
	mu       sync.Mutex
	requests []*paymentsv1.ChargeRequest
	fail     error
	release  chan struct{} // when set, Charge waits for it
}

func (p *payments) Charge(_ context.Context, in *paymentsv1.ChargeRequest, _ ...grpc.CallOption) (*paymentsv1.ChargeResponse, error) {
	if p.release != nil {
		<-p.release
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, in)
	if p.fail != nil {
		return nil, p.fail
	}
	return &paymentsv1.ChargeResponse{ChargeId: "ch_" + in.GetIdempotencyKey(), AmountCents: in.GetAmountCents(), Currency: in.GetCurrency()}, nil
}

func (p *payments) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.requests)
}

func setup(t *testing.T) (*server.Server, *payments, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p := &payments{}
	return server.New(slog.New(slog.DiscardHandler), reg, catalog{}, p), p, reg
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
	if got := first.GetOrder(); got.GetTotalCents() != 5800 || got.GetStatus() != "paid" || got.GetChargeId() != "ch_k1" || first.GetReplayed() {
		t.Errorf("order: got %v, want 2×1200+3400 = 5800 paid with charge ch_k1", first)
	}
	again, err := s.PlaceOrder(ctx, order("k1"))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetOrder().GetId() != first.GetOrder().GetId() || !again.GetReplayed() {
		t.Errorf("retry: got %v, want the same order replayed", again)
	}
	if p.count() != 1 || p.requests[0].GetIdempotencyKey() != "k1" || p.requests[0].GetAmountCents() != 5800 {
		t.Errorf("charges: got %v, want one of 5800 with key k1", p.requests)
	}
	got, err := s.GetOrder(ctx, &ordersv1.GetOrderRequest{Id: first.GetOrder().GetId()})
	if err != nil || got.GetId() != first.GetOrder().GetId() {
		t.Errorf("GetOrder: got %v %v", got, err)
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

func TestConcurrentRetriesPlaceOneOrder(t *testing.T) {
	s, p, reg := setup(t)
	p.release = make(chan struct{})
	ids := make([]string, 5)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			r, err := s.PlaceOrder(context.Background(), order("same"))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = r.GetOrder().GetId()
		})
	}
	close(p.release)
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("order ids: got %v, want one", ids)
		}
	}
	if p.count() != 1 || orders(t, reg)["placed"] != 1 {
		t.Errorf("got %d charges and %v placed, want 1 and 1", p.count(), orders(t, reg)["placed"])
	}
}

func TestFailedChargeStoresNothingAndRetrySucceeds(t *testing.T) {
	s, p, reg := setup(t)
	ctx := context.Background()
	p.fail = status.Error(codes.Unavailable, "connection refused")
	_, err := s.PlaceOrder(ctx, order("k"))
	dep, _, ok := breaker.FailedDependency(err)
	if status.Code(err) != codes.Unavailable || !ok || dep != "payments" {
		t.Errorf("payments down: got %v, want Unavailable naming payments", err)
	}
	p.fail = breaker.DependencyError(codes.Unavailable, "payments", breaker.ReasonCircuitOpen, "open")
	_, err = s.PlaceOrder(ctx, order("k"))
	if dep, reason, _ := breaker.FailedDependency(err); dep != "payments" || reason != breaker.ReasonCircuitOpen {
		t.Errorf("breaker open: got %v, want the breaker's error passed on", err)
	}
	p.fail = nil
	r, err := s.PlaceOrder(ctx, order("k"))
	if err != nil || r.GetReplayed() {
		t.Fatalf("retry after recovery: got %v %v, want a fresh order", r, err)
	}
	if diff := cmp.Diff(map[string]float64{"placed": 1, "rejected": 0, "payment_failed": 2}, orders(t, reg)); diff != "" {
		t.Errorf("orders (-want +got):\n%s", diff)
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
