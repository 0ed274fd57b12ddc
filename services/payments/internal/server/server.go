// Package server implements meshplane.payments.v1.PaymentService: charges kept in PostgreSQL, one per
// idempotency key across every replica (the charges table's unique key decides, not process memory).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/rpc"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/payments/internal/store"
)

// DeclineToken is the card token that is always declined, for demos and tests.
const DeclineToken = "tok_decline"

// ReasonCardDeclined is the ErrorInfo reason of a declined charge.
const ReasonCardDeclined = "CARD_DECLINED"

// MaxAmountCents bounds a single charge.
const MaxAmountCents = 100_000_00

// MaxKeyLen bounds an idempotency key, in bytes.
const MaxKeyLen = 255

// Server is the PaymentService.
type Server struct {
	paymentsv1.UnimplementedPaymentServiceServer
	logger  *slog.Logger
	charges *prometheus.CounterVec
	store   *store.Store
}

// New returns the service over st, registering meshplane_payments_charges_total{result} in reg.
func New(logger *slog.Logger, reg prometheus.Registerer, st *store.Store) *Server {
	s := &Server{
		logger: logger, store: st,
		charges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_payments_charges_total",
			Help: "Charge requests by result: charged, duplicate (same key, nothing charged), declined, failed (invalid or conflicting), error (the database failed; nothing charged).",
		}, []string{"result"}),
	}
	for _, r := range []string{"charged", "duplicate", "declined", "failed", "error"} {
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
	case len(req.GetIdempotencyKey()) > MaxKeyLen:
		return rpc.InvalidField("idempotency_key", fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case strings.ContainsFunc(req.GetIdempotencyKey(), unicode.IsControl):
		return rpc.InvalidField("idempotency_key", "contains control characters")
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
	if req.GetCardToken() == DeclineToken {
		// A key that already charged answers as a duplicate, as for any other card; else declined,
		// and nothing is stored, so the same key may be retried with another card.
		prev, ok, err := s.store.ByKey(ctx, req.GetIdempotencyKey())
		if err != nil {
			s.charges.WithLabelValues("error").Inc()
			return nil, err
		}
		if ok {
			return s.duplicate(ctx, req, prev)
		}
		s.charges.WithLabelValues("declined").Inc()
		s.logger.InfoContext(ctx, "card declined", slog.Int64("amount_cents", req.GetAmountCents()))
		return nil, rpc.WithReason(codes.FailedPrecondition, ReasonCardDeclined, "card declined")
	}
	c, inserted, err := s.store.Insert(ctx, store.Charge{ID: "ch_" + randomHex(12), IdempotencyKey: req.GetIdempotencyKey(),
		AmountCents: req.GetAmountCents(), Currency: req.GetCurrency(), Reference: req.GetReference()})
	if err != nil {
		s.charges.WithLabelValues("error").Inc()
		return nil, err
	}
	if !inserted {
		return s.duplicate(ctx, req, c)
	}
	s.charges.WithLabelValues("charged").Inc()
	s.logger.InfoContext(ctx, "charged", slog.String("charge_id", c.ID),
		slog.Int64("amount_cents", c.AmountCents), slog.String("reference", c.Reference))
	return &paymentsv1.ChargeResponse{ChargeId: c.ID, AmountCents: c.AmountCents, Currency: c.Currency}, nil
}

// duplicate answers a request whose key already charged prev: prev again, or AlreadyExists when the
// request asks for another amount.
func (s *Server) duplicate(ctx context.Context, req *paymentsv1.ChargeRequest, prev store.Charge) (*paymentsv1.ChargeResponse, error) {
	if prev.AmountCents != req.GetAmountCents() || prev.Currency != req.GetCurrency() {
		s.charges.WithLabelValues("failed").Inc()
		return nil, status.Errorf(codes.AlreadyExists, "idempotency key already used for a charge of %d %s", prev.AmountCents, prev.Currency)
	}
	s.charges.WithLabelValues("duplicate").Inc()
	s.logger.InfoContext(ctx, "duplicate charge ignored", slog.String("charge_id", prev.ID))
	return &paymentsv1.ChargeResponse{ChargeId: prev.ID, AmountCents: prev.AmountCents, Currency: prev.Currency, Duplicate: true}, nil
}

// GetCharge implements PaymentService.GetCharge: the charge made for a key, read from the database (so
// on any replica), changing nothing.
func (s *Server) GetCharge(ctx context.Context, req *paymentsv1.GetChargeRequest) (*paymentsv1.ChargeResponse, error) {
	switch {
	case req.GetIdempotencyKey() == "":
		return nil, rpc.InvalidField("idempotency_key", "required")
	case len(req.GetIdempotencyKey()) > MaxKeyLen:
		return nil, rpc.InvalidField("idempotency_key", fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	}
	c, ok, err := s.store.ByKey(ctx, req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, status.Error(codes.NotFound, "no charge for this idempotency key")
	}
	return &paymentsv1.ChargeResponse{ChargeId: c.ID, AmountCents: c.AmountCents, Currency: c.Currency}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
