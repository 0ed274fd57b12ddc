// Package server implements meshplane.orders.v1.OrderService: validate against catalog, record in
// PostgreSQL, charge through payments; one order and one charge per idempotency key, across replicas,
// concurrent retries and a replica's crash.
package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	eventsv1 "meshplane.dev/services/proto/events/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/orders/internal/store"
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
	store    *store.Store
	lease    time.Duration
	orders   *prometheus.CounterVec
	// eventWritten is called after a transaction wrote an event to the outbox (the relay's Notify).
	eventWritten func()
}

// pollInterval is how often a request waiting for another placement of its key looks again.
const pollInterval = 50 * time.Millisecond

// New returns the service over st, registering meshplane_orders_total{result} in reg. lease is how long
// a placement may charge an order before a retry of its key may resume it (ORDER_LEASE). eventWritten,
// if not nil, is called once an order's OrderPlaced event is committed to the outbox.
func New(logger *slog.Logger, reg prometheus.Registerer, catalog Catalog, payments Payments, st *store.Store, lease time.Duration, eventWritten func()) *Server {
	if eventWritten == nil {
		eventWritten = func() {}
	}
	s := &Server{
		logger: logger, catalog: catalog, payments: payments, store: st, lease: lease, eventWritten: eventWritten,
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_orders_total",
			Help: "Orders by result: placed (paid, once per order across replicas), rejected (invalid request), payment_failed (declined, or payments unavailable).",
		}, []string{"result"}),
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
		return rpc.InvalidField("idempotency_key", fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case strings.ContainsFunc(req.GetIdempotencyKey(), unicode.IsControl):
		return rpc.InvalidField("idempotency_key", "contains control characters")
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

// PlaceOrder implements OrderService.PlaceOrder. The database decides what a key places, so this holds
// across replicas: the first request records the order as pending (committed) with its key, charges
// payments with a key derived from the order, and marks it paid — writing its OrderPlaced event to the
// outbox in that same transaction. A request with the same key replays a
// paid order; finds a pending one being charged and waits for it; or finds one whose placement died
// (its lease passed, or it failed to reach payments) and resumes it with the same payment key, which
// payments deduplicates — one order, one charge, whichever replica a retry reaches and whenever the
// first one crashed.
func (s *Server) PlaceOrder(ctx context.Context, req *ordersv1.PlaceOrderRequest) (*ordersv1.PlaceOrderResponse, error) {
	if err := validate(req); err != nil {
		s.orders.WithLabelValues("rejected").Inc()
		return nil, err
	}
	key, fp := req.GetIdempotencyKey(), fingerprint(req)
	for {
		o, err := s.store.ByKey(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			var created bool
			if o, created, err = s.create(ctx, req, fp); err != nil {
				return nil, err
			}
			if created {
				return s.charge(ctx, req, o)
			}
		}
		if err != nil {
			return nil, err
		}
		if o.Fingerprint != fp {
			return nil, status.Errorf(codes.AlreadyExists, "idempotency key already used for a different order (%s)", o.ID)
		}
		if o.Status == store.StatusPaid {
			s.logger.InfoContext(ctx, "order replayed", slog.String("order_id", o.ID))
			return &ordersv1.PlaceOrderResponse{Order: toProto(o), Replayed: true}, nil
		}
		if !o.Leased {
			claimed, err := s.store.Claim(ctx, o.ID, s.lease)
			if err != nil {
				return nil, err
			}
			if claimed {
				s.logger.InfoContext(ctx, "resuming a pending order", slog.String("order_id", o.ID))
				return s.charge(ctx, req, o)
			}
		}
		// Another request is charging it: look again shortly (it is paid, released, or deleted by then).
		t := time.NewTimer(pollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.Errorf(status.FromContextError(ctx.Err()).Code(),
				"order %s with this idempotency key is still being placed by another request: retry with the same key", o.ID)
		}
	}
}

// create prices the items through catalog and records the order as pending, leased to this request.
// When another request recorded one with the same key first, it returns that one and false.
func (s *Server) create(ctx context.Context, req *ordersv1.PlaceOrderRequest, fp string) (store.Order, bool, error) {
	o := store.Order{ID: "ord_" + randomHex(10), IdempotencyKey: req.GetIdempotencyKey(), Fingerprint: fp}
	for i, it := range req.GetItems() {
		p, err := s.catalog.GetProduct(ctx, &catalogv1.GetProductRequest{Id: it.GetProductId()})
		switch {
		case status.Code(err) == codes.NotFound:
			s.orders.WithLabelValues("rejected").Inc()
			return o, false, rpc.InvalidField(fmt.Sprintf("items[%d].product_id", i), fmt.Sprintf("unknown product %q", it.GetProductId()))
		case err != nil:
			return o, false, dependencyError("catalog", err)
		}
		if o.Currency == "" {
			o.Currency = p.GetCurrency()
		} else if o.Currency != p.GetCurrency() {
			s.orders.WithLabelValues("rejected").Inc()
			return o, false, rpc.InvalidField(fmt.Sprintf("items[%d].product_id", i), "priced in another currency than the other items")
		}
		o.Items = append(o.Items, store.Item{ProductID: p.GetId(), Quantity: it.GetQuantity(), UnitPriceCents: p.GetPriceCents()})
		o.TotalCents += p.GetPriceCents() * int64(it.GetQuantity())
	}
	return s.store.Create(ctx, o, s.lease)
}

// PaymentKey is the idempotency key orders charges order id with: derived from the order, so every
// attempt at that order — the first, or a retry resuming it on another replica — charges it once.
func PaymentKey(orderID string) string { return "order/" + orderID }

// charge charges pending order o, whose lease this request holds, and marks it paid.
func (s *Server) charge(ctx context.Context, req *ordersv1.PlaceOrderRequest, o store.Order) (*ordersv1.PlaceOrderResponse, error) {
	charge, err := s.payments.Charge(ctx, &paymentsv1.ChargeRequest{
		IdempotencyKey: PaymentKey(o.ID), AmountCents: o.TotalCents, Currency: o.Currency,
		CardToken: req.GetCardToken(), Reference: o.ID,
	})
	// The request may have run out of time: what follows must still happen.
	after := context.WithoutCancel(ctx)
	if err != nil {
		s.orders.WithLabelValues("payment_failed").Inc()
		switch status.Code(err) {
		case codes.FailedPrecondition, codes.InvalidArgument:
			// Payments refused the charge, so nothing was charged: forget the order, and a retry with
			// the key starts afresh. Should the delete fail, the order stays pending and a retry resumes
			// it, to be refused again.
			if derr := s.store.Delete(after, o.ID); derr != nil {
				s.logger.WarnContext(ctx, "refused order not deleted", slog.String("order_id", o.ID), slog.String("error", derr.Error()))
			}
			return nil, err // payments' answer, passed on as is
		case codes.AlreadyExists:
			return nil, err
		}
		// The charge may or may not have happened: keep the order pending and let a retry resume it
		// at once, charging with the same payment key.
		if rerr := s.store.Release(after, o.ID); rerr != nil {
			s.logger.WarnContext(ctx, "order lease not released", slog.String("order_id", o.ID), slog.String("error", rerr.Error()))
		}
		return nil, dependencyError("payments", err)
	}
	ev, err := orderPlaced(after, o, charge.GetChargeId())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "order %s: %v", o.ID, err)
	}
	paid, mine, err := s.store.MarkPaid(after, o.ID, charge.GetChargeId(), ev)
	if err != nil {
		// Charged but not recorded as paid: the order stays pending, and a retry with the key resumes
		// it once the lease passes; payments answers that retry with this same charge.
		s.logger.WarnContext(ctx, "charged order not yet marked paid", slog.String("order_id", o.ID),
			slog.String("charge_id", charge.GetChargeId()), slog.String("error", err.Error()))
		return nil, err
	}
	if paid.Status != store.StatusPaid || paid.ChargeID != charge.GetChargeId() {
		return nil, status.Errorf(codes.Internal, "order %s: status %s with charge %q after charge %s", o.ID, paid.Status, paid.ChargeID, charge.GetChargeId())
	}
	if mine {
		s.eventWritten()
		s.orders.WithLabelValues("placed").Inc()
		s.logger.InfoContext(ctx, "order placed", slog.String("order_id", paid.ID),
			slog.String("charge_id", paid.ChargeID), slog.Int64("total_cents", paid.TotalCents), slog.String("event_id", ev.ID))
	}
	return &ordersv1.PlaceOrderResponse{Order: toProto(paid), Replayed: !mine}, nil
}

// orderPlaced is the OrderPlaced event of order o, paid by chargeID, as an outbox row. Its trace id is
// the placing request's, so the consumer's log lines join this request's.
func orderPlaced(ctx context.Context, o store.Order, chargeID string) (store.Event, error) {
	ev := &eventsv1.OrderPlaced{
		EventId: "evt_" + randomHex(12), OrderId: o.ID, TotalCents: o.TotalCents, Currency: o.Currency, ChargeId: chargeID,
		PlacedUnixMs: time.Now().UnixMilli(), TraceId: telemetry.TraceID(ctx),
	}
	for _, it := range o.Items {
		ev.Items = append(ev.Items, &eventsv1.LineItem{ProductId: it.ProductID, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents})
	}
	payload, err := proto.Marshal(ev)
	if err != nil {
		return store.Event{}, fmt.Errorf("encode OrderPlaced: %w", err)
	}
	return store.Event{ID: ev.GetEventId(), Subject: eventsv1.OrderPlacedSubject, Type: eventsv1.OrderPlacedType,
		Payload: payload, TraceID: ev.GetTraceId()}, nil
}

func toProto(o store.Order) *ordersv1.Order {
	out := &ordersv1.Order{Id: o.ID, Status: o.Status, Currency: o.Currency, TotalCents: o.TotalCents, ChargeId: o.ChargeID,
		CreatedUnixMs: o.CreatedAt.UnixMilli()}
	for _, it := range o.Items {
		out.Items = append(out.Items, &ordersv1.LineItem{ProductId: it.ProductID, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents})
	}
	return out
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

// GetOrder implements OrderService.GetOrder: any replica answers for every order.
func (s *Server) GetOrder(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	if req.GetId() == "" {
		return nil, rpc.InvalidField("id", "required")
	}
	o, err := s.store.Get(ctx, req.GetId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "order %q not found", req.GetId())
	}
	if err != nil {
		return nil, err
	}
	return toProto(o), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
