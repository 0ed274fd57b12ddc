// Package server implements meshplane.orders.v1.OrderService: validate against catalog, charge
// through payments, store once paid; one order per idempotency key, even under concurrent retries.
package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/rpc"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"
)

// Limits of an order.
const (
	MaxItems    = 50
	MaxQuantity = 100
	MaxKeyLen   = 255
)

// Catalog is what orders needs of the catalog.
type Catalog interface {
	GetProduct(ctx context.Context, in *catalogv1.GetProductRequest, opts ...grpc.CallOption) (*catalogv1.Product, error)
}

// Payments is what orders needs of payments.
type Payments interface {
	Charge(ctx context.Context, in *paymentsv1.ChargeRequest, opts ...grpc.CallOption) (*paymentsv1.ChargeResponse, error)
}

// Server is the OrderService.
type Server struct {
	ordersv1.UnimplementedOrderServiceServer
	logger   *slog.Logger
	catalog  Catalog
	payments Payments
	orders   *prometheus.CounterVec
	now      func() time.Time

	mu       sync.Mutex
	byID     map[string]*ordersv1.Order
	byKey    map[string]placed
	inflight map[string]chan struct{}
}

// placed remembers which order a key produced and the request it came from.
type placed struct {
	fingerprint string
	orderID     string
}

// New returns the service, registering meshplane_orders_total{result} in reg.
func New(logger *slog.Logger, reg prometheus.Registerer, catalog Catalog, payments Payments) *Server {
	s := &Server{
		logger: logger, catalog: catalog, payments: payments, now: time.Now,
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_orders_total",
			Help: "Orders by result: placed, rejected (invalid request), payment_failed (declined, or payments unavailable).",
		}, []string{"result"}),
		byID: map[string]*ordersv1.Order{}, byKey: map[string]placed{}, inflight: map[string]chan struct{}{},
	}
	for _, r := range []string{"placed", "rejected", "payment_failed"} {
		s.orders.WithLabelValues(r)
	}
	reg.MustRegister(s.orders)
	return s
}

func validate(req *ordersv1.PlaceOrderRequest) error {
	switch {
	case req.GetIdempotencyKey() == "":
		return rpc.InvalidField("idempotency_key", "required")
	case len(req.GetIdempotencyKey()) > MaxKeyLen:
		return rpc.InvalidField("idempotency_key", fmt.Sprintf("longer than %d characters", MaxKeyLen))
	case len(req.GetItems()) == 0:
		return rpc.InvalidField("items", "at least one item is required")
	case len(req.GetItems()) > MaxItems:
		return rpc.InvalidField("items", fmt.Sprintf("at most %d items", MaxItems))
	case req.GetCardToken() == "":
		return rpc.InvalidField("card_token", "required")
	}
	for i, it := range req.GetItems() {
		if it.GetProductId() == "" {
			return rpc.InvalidField(fmt.Sprintf("items[%d].product_id", i), "required")
		}
		if it.GetQuantity() < 1 || it.GetQuantity() > MaxQuantity {
			return rpc.InvalidField(fmt.Sprintf("items[%d].quantity", i), fmt.Sprintf("must be between 1 and %d", MaxQuantity))
		}
	}
	return nil
}

// fingerprint identifies what a request asks for, so a key reused for something else is caught.
func fingerprint(req *ordersv1.PlaceOrderRequest) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&ordersv1.PlaceOrderRequest{Items: req.GetItems(), CardToken: req.GetCardToken()})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// PlaceOrder implements OrderService.PlaceOrder.
func (s *Server) PlaceOrder(ctx context.Context, req *ordersv1.PlaceOrderRequest) (*ordersv1.PlaceOrderResponse, error) {
	if err := validate(req); err != nil {
		s.orders.WithLabelValues("rejected").Inc()
		return nil, err
	}
	key, fp := req.GetIdempotencyKey(), fingerprint(req)
	// One attempt per key at a time: a concurrent retry waits for the first and then sees its result.
	for {
		s.mu.Lock()
		if p, ok := s.byKey[key]; ok {
			order := s.byID[p.orderID]
			s.mu.Unlock()
			if p.fingerprint != fp {
				return nil, status.Error(codes.AlreadyExists, "idempotency key already used for a different order")
			}
			s.logger.InfoContext(ctx, "order replayed", slog.String("order_id", order.GetId()))
			return &ordersv1.PlaceOrderResponse{Order: order, Replayed: true}, nil
		}
		busy, ok := s.inflight[key]
		if !ok {
			done := make(chan struct{})
			s.inflight[key] = done
			s.mu.Unlock()
			defer func() {
				s.mu.Lock()
				delete(s.inflight, key)
				s.mu.Unlock()
				close(done)
			}()
			break
		}
		s.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}

	order, err := s.place(ctx, req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.byID[order.GetId()] = order
	s.byKey[key] = placed{fingerprint: fp, orderID: order.GetId()}
	s.mu.Unlock()
	s.orders.WithLabelValues("placed").Inc()
	s.logger.InfoContext(ctx, "order placed", slog.String("order_id", order.GetId()),
		slog.String("charge_id", order.GetChargeId()), slog.Int64("total_cents", order.GetTotalCents()))
	return &ordersv1.PlaceOrderResponse{Order: order}, nil
}

// place prices the items, charges the total and returns the paid order; it stores nothing.
func (s *Server) place(ctx context.Context, req *ordersv1.PlaceOrderRequest) (*ordersv1.Order, error) {
	order := &ordersv1.Order{Id: "ord_" + randomHex(10), Status: "paid"}
	for i, it := range req.GetItems() {
		p, err := s.catalog.GetProduct(ctx, &catalogv1.GetProductRequest{Id: it.GetProductId()})
		switch {
		case status.Code(err) == codes.NotFound:
			s.orders.WithLabelValues("rejected").Inc()
			return nil, rpc.InvalidField(fmt.Sprintf("items[%d].product_id", i), fmt.Sprintf("unknown product %q", it.GetProductId()))
		case err != nil:
			return nil, dependencyError("catalog", err)
		}
		if order.Currency == "" {
			order.Currency = p.GetCurrency()
		} else if order.Currency != p.GetCurrency() {
			s.orders.WithLabelValues("rejected").Inc()
			return nil, rpc.InvalidField(fmt.Sprintf("items[%d].product_id", i), "priced in another currency than the other items")
		}
		order.Items = append(order.Items, &ordersv1.LineItem{ProductId: p.GetId(), Quantity: it.GetQuantity(), UnitPriceCents: p.GetPriceCents()})
		order.TotalCents += p.GetPriceCents() * int64(it.GetQuantity())
	}
	charge, err := s.payments.Charge(ctx, &paymentsv1.ChargeRequest{
		IdempotencyKey: req.GetIdempotencyKey(), AmountCents: order.GetTotalCents(), Currency: order.GetCurrency(),
		CardToken: req.GetCardToken(), Reference: req.GetIdempotencyKey(),
	})
	if err != nil {
		s.orders.WithLabelValues("payment_failed").Inc()
		switch status.Code(err) {
		case codes.FailedPrecondition, codes.AlreadyExists, codes.InvalidArgument:
			return nil, err // payments' answer, passed on as is
		}
		return nil, dependencyError("payments", err)
	}
	order.ChargeId = charge.GetChargeId()
	order.CreatedUnixMs = s.now().UnixMilli()
	return order, nil
}

// dependencyError turns a failed call to dep into an error naming dep (or the dependency further
// down that really failed), keeping deadline errors as deadline errors.
func dependencyError(dep string, err error) error {
	if _, _, ok := breaker.FailedDependency(err); ok {
		return err
	}
	code := codes.Unavailable
	if status.Code(err) == codes.DeadlineExceeded {
		code = codes.DeadlineExceeded
	}
	return breaker.DependencyError(code, dep, breaker.ReasonUnavailable, fmt.Sprintf("%s: %s", dep, status.Convert(err).Message()))
}

// GetOrder implements OrderService.GetOrder.
func (s *Server) GetOrder(_ context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	if req.GetId() == "" {
		return nil, rpc.InvalidField("id", "required")
	}
	s.mu.Lock()
	o, ok := s.byID[req.GetId()]
	s.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "order %q not found", req.GetId())
	}
	return o, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
