// Package shipping is what fulfillment does with an OrderPlaced event: it creates the order's shipment,
// once, however often the event is delivered.
package shipping

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"meshplane.dev/mesh/telemetry"
	eventsv1 "meshplane.dev/services/proto/events/v1"

	"meshplane.dev/services/fulfillment/internal/consumer"
	"meshplane.dev/services/fulfillment/internal/store"
)

// MetricOrderToShipment is the histogram of the order-to-fulfilment latency; dashboards/signal declares
// it and the SLO is written on it.
const MetricOrderToShipment = "meshplane_fulfillment_order_to_shipment_seconds"

// Faults is the fault injector's hook for event processing (mesh/fault's Apply; target: the subject).
type Faults interface {
	Apply(ctx context.Context, target string) error
}

// Shipper turns OrderPlaced events into shipments.
type Shipper struct {
	logger  *slog.Logger
	store   *store.Store
	faults  Faults
	latency prometheus.Observer
}

// New returns a shipper over st, registering MetricOrderToShipment in reg.
func New(logger *slog.Logger, reg prometheus.Registerer, st *store.Store, faults Faults) (*Shipper, error) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricOrderToShipment,
		Help: "Time from an order being placed (orders marked it paid and wrote its OrderPlaced event) to its shipment being created: " +
			"the outbox relay, the broker and the consumer together. Observed once per order.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}})
	if err := reg.Register(h); err != nil {
		return nil, err
	}
	return &Shipper{logger: logger, store: st, faults: faults, latency: h}, nil
}

var currency = regexp.MustCompile(`^[A-Z]{3}$`)

// decode reads and checks an OrderPlaced event: an event that fails here fails on every delivery, and
// ends on the dead-letter subject with this error as its reason.
func decode(m consumer.Message) (*eventsv1.OrderPlaced, error) {
	if t := m.Header.Get(eventsv1.HeaderEventType); t != eventsv1.OrderPlacedType {
		return nil, fmt.Errorf("event type %q: want %s", t, eventsv1.OrderPlacedType)
	}
	ev := &eventsv1.OrderPlaced{}
	if err := proto.Unmarshal(m.Data, ev); err != nil {
		return nil, fmt.Errorf("decode %s: %w", eventsv1.OrderPlacedType, err)
	}
	switch {
	case ev.GetEventId() == "":
		return nil, errors.New("invalid OrderPlaced: event_id is empty")
	case ev.GetOrderId() == "":
		return nil, errors.New("invalid OrderPlaced: order_id is empty")
	case len(ev.GetItems()) == 0:
		return nil, errors.New("invalid OrderPlaced: no items")
	case ev.GetTotalCents() <= 0:
		return nil, fmt.Errorf("invalid OrderPlaced: total_cents %d", ev.GetTotalCents())
	case !currency.MatchString(ev.GetCurrency()):
		return nil, fmt.Errorf("invalid OrderPlaced: currency %q", ev.GetCurrency())
	}
	return ev, nil
}

// Handle implements consumer.Handler: it creates the shipment of the event's order and records the
// event as processed, in one transaction; a redelivered event is a duplicate and changes nothing.
func (s *Shipper) Handle(ctx context.Context, m consumer.Message) (bool, error) {
	ev, err := decode(m)
	if err != nil {
		return false, err
	}
	if ev.GetTraceId() != "" {
		// The trace id in the payload is the contract; the traceparent header a convenience.
		ctx = telemetry.WithTrace(ctx, telemetry.Trace{TraceID: ev.GetTraceId(), SpanID: randomHex(8)})
	}
	if err := s.faults.Apply(ctx, m.Subject); err != nil {
		return false, err
	}
	sh := store.Shipment{ID: "shp_" + randomHex(10), OrderID: ev.GetOrderId(), TotalCents: ev.GetTotalCents(), Currency: ev.GetCurrency(),
		TraceID: ev.GetTraceId(), OrderPlacedAt: time.UnixMilli(ev.GetPlacedUnixMs())}
	for _, it := range ev.GetItems() {
		sh.Items = append(sh.Items, store.Item{ProductID: it.GetProductId(), Quantity: it.GetQuantity()})
	}
	created, err := s.store.Process(ctx, ev.GetEventId(), store.Delivery{Subject: m.Subject, StreamSequence: m.StreamSequence, Deliveries: m.Deliveries}, sh)
	if err != nil {
		return false, err
	}
	if !created {
		s.logger.InfoContext(ctx, "event already processed", slog.String("event_id", ev.GetEventId()), slog.String("order_id", ev.GetOrderId()),
			slog.Int("deliveries", m.Deliveries))
		return true, nil
	}
	took := time.Since(sh.OrderPlacedAt)
	s.latency.(prometheus.ExemplarObserver).ObserveWithExemplar(max(took.Seconds(), 0), telemetry.Exemplar(ctx))
	s.logger.InfoContext(ctx, "shipment created", slog.String("order_id", ev.GetOrderId()), slog.String("shipment_id", sh.ID),
		slog.String("event_id", ev.GetEventId()), slog.Int("deliveries", m.Deliveries), slog.Duration("since_placed", took.Round(time.Millisecond)))
	return false, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
