// Package server implements meshplane.payments.v1.PaymentService: in-memory charges, deduplicated by
// idempotency key.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"regexp"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/rpc"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"
)

// DeclineToken is the card token that is always declined, for demos and tests.
const DeclineToken = "tok_decline"

// ReasonCardDeclined is the ErrorInfo reason of a declined charge.
const ReasonCardDeclined = "CARD_DECLINED"

// MaxAmountCents bounds a single charge.
const MaxAmountCents = 100_000_00

// Server is the PaymentService.
type Server struct {
	paymentsv1.UnimplementedPaymentServiceServer
	logger  *slog.Logger
	charges *prometheus.CounterVec

	mu    sync.Mutex
	byKey map[string]*paymentsv1.ChargeResponse
}

// New returns the service, registering meshplane_payments_charges_total{result} in reg.
func New(logger *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{
		logger: logger,
		charges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_payments_charges_total",
			Help: "Charge requests by result: charged, duplicate (same key, nothing charged), declined, failed (invalid or conflicting).",
		}, []string{"result"}),
		byKey: map[string]*paymentsv1.ChargeResponse{},
	}
	for _, r := range []string{"charged", "duplicate", "declined", "failed"} {
		s.charges.WithLabelValues(r)
	}
	reg.MustRegister(s.charges)
	return s
}

var currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)

func validate(req *paymentsv1.ChargeRequest) error {
	switch {
	case req.GetIdempotencyKey() == "":
		return rpc.InvalidField("idempotency_key", "required")
	case len(req.GetIdempotencyKey()) > 255:
		return rpc.InvalidField("idempotency_key", "longer than 255 characters")
	case req.GetAmountCents() <= 0 || req.GetAmountCents() > MaxAmountCents:
		return rpc.InvalidField("amount_cents", "must be between 1 and 10000000")
	case !currencyRE.MatchString(req.GetCurrency()):
		return rpc.InvalidField("currency", "must be an ISO 4217 code such as EUR")
	case req.GetCardToken() == "":
		return rpc.InvalidField("card_token", "required")
	}
	return nil
}

// Charge implements PaymentService.Charge.
func (s *Server) Charge(ctx context.Context, req *paymentsv1.ChargeRequest) (*paymentsv1.ChargeResponse, error) {
	if err := validate(req); err != nil {
		s.charges.WithLabelValues("failed").Inc()
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.byKey[req.GetIdempotencyKey()]; ok {
		if prev.GetAmountCents() != req.GetAmountCents() || prev.GetCurrency() != req.GetCurrency() {
			s.charges.WithLabelValues("failed").Inc()
			return nil, status.Errorf(codes.AlreadyExists, "idempotency key already used for a charge of %d %s", prev.GetAmountCents(), prev.GetCurrency())
		}
		s.charges.WithLabelValues("duplicate").Inc()
		s.logger.InfoContext(ctx, "duplicate charge ignored", slog.String("charge_id", prev.GetChargeId()))
		return &paymentsv1.ChargeResponse{ChargeId: prev.GetChargeId(), AmountCents: prev.GetAmountCents(), Currency: prev.GetCurrency(), Duplicate: true}, nil
	}
	if req.GetCardToken() == DeclineToken {
		s.charges.WithLabelValues("declined").Inc()
		s.logger.InfoContext(ctx, "card declined", slog.Int64("amount_cents", req.GetAmountCents()))
		return nil, rpc.WithReason(codes.FailedPrecondition, ReasonCardDeclined, "card declined")
	}
	c := &paymentsv1.ChargeResponse{ChargeId: "ch_" + randomHex(12), AmountCents: req.GetAmountCents(), Currency: req.GetCurrency()}
	s.byKey[req.GetIdempotencyKey()] = c
	s.charges.WithLabelValues("charged").Inc()
	s.logger.InfoContext(ctx, "charged", slog.String("charge_id", c.GetChargeId()),
		slog.Int64("amount_cents", c.GetAmountCents()), slog.String("reference", req.GetReference()))
	return c, nil
}

// GetCharge implements PaymentService.GetCharge: the charge made for a key, changing nothing.
func (s *Server) GetCharge(_ context.Context, req *paymentsv1.GetChargeRequest) (*paymentsv1.ChargeResponse, error) {
	switch {
	case req.GetIdempotencyKey() == "":
		return nil, rpc.InvalidField("idempotency_key", "required")
	case len(req.GetIdempotencyKey()) > 255:
		return nil, rpc.InvalidField("idempotency_key", "longer than 255 characters")
	}
	s.mu.Lock()
	c, ok := s.byKey[req.GetIdempotencyKey()]
	s.mu.Unlock()
	if !ok {
		return nil, status.Error(codes.NotFound, "no charge for this idempotency key")
	}
	return &paymentsv1.ChargeResponse{ChargeId: c.GetChargeId(), AmountCents: c.GetAmountCents(), Currency: c.GetCurrency()}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
