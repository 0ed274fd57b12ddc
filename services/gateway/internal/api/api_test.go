package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/httpmw"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	fulfillmentv1 "meshplane.dev/services/proto/fulfillment/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"

	"meshplane.dev/services/gateway/internal/api"
)

type catalog struct{}

func (catalog) ListProducts(context.Context, *catalogv1.ListProductsRequest, ...grpc.CallOption) (*catalogv1.ListProductsResponse, error) {
	return &catalogv1.ListProductsResponse{Products: []*catalogv1.Product{{Id: "cup", Name: "Cup", PriceCents: 1200, Currency: "EUR"}}}, nil
}

func (catalog) GetProduct(_ context.Context, in *catalogv1.GetProductRequest, _ ...grpc.CallOption) (*catalogv1.Product, error) {
	if in.GetId() == "cup" {
		return &catalogv1.Product{Id: "cup", Name: "Cup", PriceCents: 1200, Currency: "EUR"}, nil
	}
	return nil, status.Error(codes.NotFound, `product "`+in.GetId()+`" not found`)
}

// orders answers PlaceOrder with err when set, else with an order, and records the requests.
type orders struct {
	err      error
	requests []*ordersv1.PlaceOrderRequest
}

func (o *orders) PlaceOrder(_ context.Context, in *ordersv1.PlaceOrderRequest, _ ...grpc.CallOption) (*ordersv1.PlaceOrderResponse, error) {
	o.requests = append(o.requests, in)
	if o.err != nil {
		return nil, o.err
	}
	return &ordersv1.PlaceOrderResponse{Order: &ordersv1.Order{Id: "ord_1", TotalCents: 2400, Currency: "EUR", Status: "paid",
		Items: []*ordersv1.LineItem{{ProductId: "cup", Quantity: 2, UnitPriceCents: 1200}}}, Replayed: len(o.requests) > 1}, nil
}

func (o *orders) GetOrder(_ context.Context, in *ordersv1.GetOrderRequest, _ ...grpc.CallOption) (*ordersv1.Order, error) {
	if strings.HasPrefix(in.GetId(), "ord_") {
		return &ordersv1.Order{Id: in.GetId(), TotalCents: 1200, Currency: "EUR", Status: "paid", CreatedUnixMs: 1_700_000_000_000,
			Items: []*ordersv1.LineItem{{ProductId: "cup", Quantity: 1, UnitPriceCents: 1200}}}, nil
	}
	return nil, status.Error(codes.NotFound, "order "+in.GetId()+" not found")
}

// fulfillment has a shipment for ord_shipped, none for other orders, and is down for ord_down.
type fulfillment struct{}

func (fulfillment) GetShipment(_ context.Context, in *fulfillmentv1.GetShipmentRequest, _ ...grpc.CallOption) (*fulfillmentv1.Shipment, error) {
	switch in.GetOrderId() {
	case "ord_shipped":
		return &fulfillmentv1.Shipment{Id: "shp_1", OrderId: in.GetOrderId(), Status: "preparing", CreatedUnixMs: 1_700_000_001_000}, nil
	case "ord_down":
		return nil, breaker.DependencyError(codes.Unavailable, "fulfillment", breaker.ReasonCircuitOpen, "open")
	}
	return nil, status.Error(codes.NotFound, "no shipment")
}

type fixture struct {
	h      http.Handler
	reg    *prometheus.Registry
	orders *orders
	faults *fault.Injector
}

func newFixture() *fixture {
	reg := prometheus.NewRegistry()
	o := &orders{}
	faults := fault.New(nil)
	h := api.NewServer(slog.New(slog.DiscardHandler), telemetry.NewHTTPMetrics(reg), faults, catalog{}, o, fulfillment{})
	return &fixture{h: h, reg: reg, orders: o, faults: faults}
}

func (f *fixture) do(method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) httpmw.Error {
	t.Helper()
	var e httpmw.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", rec.Body, err)
	}
	return e
}

const goodOrder = `{"items":[{"productId":"cup","quantity":2}],"cardToken":"tok_visa"}`

func TestProducts(t *testing.T) {
	f := newFixture()
	rec := f.do("GET", "/v1/products", "")
	var list api.ProductList
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || rec.Code != 200 {
		t.Fatalf("GET /v1/products: %d %s", rec.Code, rec.Body)
	}
	if diff := cmp.Diff(api.ProductList{Products: []api.Product{{ID: "cup", Name: "Cup", PriceCents: 1200, Currency: "EUR"}}}, list); diff != "" {
		t.Errorf("products (-want +got):\n%s", diff)
	}
	if rec := f.do("GET", "/v1/products/kettle", ""); rec.Code != 404 {
		t.Errorf("unknown product: got %d want 404", rec.Code)
	}
}

func TestPlaceOrderPassesTheIdempotencyKey(t *testing.T) {
	f := newFixture()
	rec := f.do("POST", "/v1/orders", goodOrder, "Idempotency-Key", "key-1", "Content-Type", "application/json")
	if rec.Code != 201 || rec.Header().Get("Location") != "/v1/orders/ord_1" || rec.Header().Get(api.ReplayedHeader) != "" {
		t.Fatalf("first POST: got %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	rec = f.do("POST", "/v1/orders", goodOrder, "Idempotency-Key", "key-1")
	if rec.Code != 201 || rec.Header().Get(api.ReplayedHeader) != "true" {
		t.Errorf("retry: got %d replayed=%q, want 201 replayed=true", rec.Code, rec.Header().Get(api.ReplayedHeader))
	}
	_ = f.do("POST", "/v1/orders", goodOrder)
	keys := []string{}
	for _, r := range f.orders.requests {
		keys = append(keys, r.GetIdempotencyKey())
	}
	if len(keys) != 3 || keys[0] != "key-1" || keys[1] != "key-1" || !strings.HasPrefix(keys[2], "gw-") {
		t.Errorf("keys passed to orders: got %v, want key-1 twice, then a generated gw- key", keys)
	}
}

func TestPlaceOrderBadInputIs400NamingTheField(t *testing.T) {
	tests := []struct {
		name, body, key string
		code            int
		field           string
	}{
		{"unknown field", `{"items":[{"productId":"cup","quantity":1}],"cardToken":"t","coupon":"x"}`, "", 400, "coupon"},
		{"unknown item field", `{"items":[{"productId":"cup","qty":1}],"cardToken":"t"}`, "", 400, "qty"},
		{"wrong type", `{"items":[{"productId":"cup","quantity":"1"}],"cardToken":"t"}`, "", 400, "items.quantity"},
		{"bad key", goodOrder, "has space", 400, "Idempotency-Key"},
		{"too large", `{"items":[],"cardToken":"` + strings.Repeat("x", 2<<20) + `"}`, "", 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			var hdr []string
			if tt.key != "" {
				hdr = []string{"Idempotency-Key", tt.key}
			}
			rec := f.do("POST", "/v1/orders", tt.body, hdr...)
			if rec.Code != tt.code || errorBody(t, rec).Field != tt.field {
				t.Errorf("got %d %s, want %d naming field %q", rec.Code, rec.Body, tt.code, tt.field)
			}
			if len(f.orders.requests) != 0 {
				t.Errorf("orders called %d times for a bad request", len(f.orders.requests))
			}
		})
	}
}

func TestOrdersErrorsMapToHTTP(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		code       int
		field, dep string
	}{
		{"unknown product", rpc.InvalidField("items[0].product_id", "unknown product"), 400, "items[0].productId", ""},
		{"no items", rpc.InvalidField("items", "at least one item is required"), 400, "items", ""},
		{"quantity out of range", rpc.InvalidField("items[0].quantity", "must be between 1 and 100"), 400, "items[0].quantity", ""},
		{"no card", rpc.InvalidField("card_token", "required"), 400, "cardToken", ""},
		{"key too long", rpc.InvalidField("idempotency_key", "longer than 255 characters"), 400, "Idempotency-Key", ""},
		{"declined", rpc.WithReason(codes.FailedPrecondition, "CARD_DECLINED", "card declined"), 402, "cardToken", ""},
		{"key reused", status.Error(codes.AlreadyExists, "used"), 409, "Idempotency-Key", ""},
		{"payments breaker open", breaker.DependencyError(codes.Unavailable, "payments", breaker.ReasonCircuitOpen, "open"), 503, "", "payments"},
		{"payments timed out", breaker.DependencyError(codes.DeadlineExceeded, "payments", breaker.ReasonUnavailable, "slow"), 504, "", "payments"},
		{"orders down", status.Error(codes.Unavailable, "connection refused"), 503, "", "orders"},
		{"orders bug", status.Error(codes.Internal, "nil pointer"), 502, "", "orders"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			f.orders.err = tt.err
			rec := f.do("POST", "/v1/orders", goodOrder)
			e := errorBody(t, rec)
			if rec.Code != tt.code || e.Field != tt.field || e.Dependency != tt.dep {
				t.Errorf("got %d %s, want %d field %q dependency %q", rec.Code, rec.Body, tt.code, tt.field, tt.dep)
			}
		})
	}
}

func TestMetricsAndFaultsPerRoute(t *testing.T) {
	f := newFixture()
	f.faults.Set([]fault.Rule{{Target: "GET /v1/products/{id}", ErrorRate: 1, HTTPStatus: 500}})
	f.do("GET", "/v1/products", "")
	f.do("GET", "/v1/products/cup", "")
	f.do("POST", "/v1/orders", goodOrder)
	f.do("GET", "/v1/orders/missing", "")
	fams, err := metricstest.Gather(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`{http_request_method="GET",http_response_status_code="200",http_route="/v1/products"}`:      1,
		`{http_request_method="GET",http_response_status_code="500",http_route="/v1/products/{id}"}`: 1,
		`{http_request_method="POST",http_response_status_code="201",http_route="/v1/orders"}`:       1,
		`{http_request_method="GET",http_response_status_code="404",http_route="/v1/orders/{id}"}`:   1,
	}
	if diff := cmp.Diff(want, fams.Series("http_server_request_duration_seconds")); diff != "" {
		t.Errorf("http_server_request_duration_seconds counts (-want +got):\n%s", diff)
	}
}

// GET /v1/orders/{id} shows what fulfillment did with the order; fulfillment being down leaves the
// order readable, its fulfilment state unknown.
func TestGetOrderShowsFulfilment(t *testing.T) {
	f := newFixture()
	shipped := time.UnixMilli(1_700_000_001_000).UTC()
	for _, tt := range []struct {
		id   string
		want *api.Fulfilment
	}{
		{"ord_shipped", &api.Fulfilment{Status: "preparing", ShipmentID: "shp_1", CreatedAt: &shipped}},
		{"ord_new", &api.Fulfilment{Status: api.FulfilmentAwaiting}},
		{"ord_down", &api.Fulfilment{Status: api.FulfilmentUnknown, Dependency: "fulfillment"}},
	} {
		rec := f.do("GET", "/v1/orders/"+tt.id, "")
		var got api.Order
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
			t.Errorf("GET /v1/orders/%s: %d %s, want 200 with the order", tt.id, rec.Code, rec.Body)
			continue
		}
		if diff := cmp.Diff(tt.want, got.Fulfillment); diff != "" || got.ID != tt.id {
			t.Errorf("GET /v1/orders/%s: order %s, fulfillment (-want +got):\n%s", tt.id, got.ID, diff)
		}
	}
	if rec := f.do("GET", "/v1/orders/nope", ""); rec.Code != http.StatusNotFound {
		t.Errorf("GET an unknown order: %d, want 404 (fulfillment not asked)", rec.Code)
	}
}
