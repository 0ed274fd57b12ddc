// Package server implements meshplane.fulfillment.v1.FulfillmentService: what fulfillment did with
// orders' events, read from its database (any replica answers for every order).
package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/rpc"
	fulfillmentv1 "meshplane.dev/services/proto/fulfillment/v1"

	"meshplane.dev/services/fulfillment/internal/store"
)

// Server is the FulfillmentService.
type Server struct {
	fulfillmentv1.UnimplementedFulfillmentServiceServer
	store *store.Store
}

// New returns the service over st.
func New(st *store.Store) *Server { return &Server{store: st} }

// GetShipment implements FulfillmentService.GetShipment.
func (s *Server) GetShipment(ctx context.Context, req *fulfillmentv1.GetShipmentRequest) (*fulfillmentv1.Shipment, error) {
	if req.GetOrderId() == "" {
		return nil, rpc.InvalidField("order_id", "required")
	}
	sh, err := s.store.Shipment(ctx, req.GetOrderId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no shipment for order %q (yet)", req.GetOrderId())
	}
	if err != nil {
		return nil, err
	}
	return &fulfillmentv1.Shipment{Id: sh.ID, OrderId: sh.OrderID, Status: sh.Status, EventId: sh.EventID,
		CreatedUnixMs: sh.CreatedAt.UnixMilli(), OrderPlacedUnixMs: sh.OrderPlacedAt.UnixMilli(), Deliveries: int32(sh.Deliveries)}, nil //nolint:gosec // deliveries stay small
}
