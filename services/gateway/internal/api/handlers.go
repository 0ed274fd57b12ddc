package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/httpmw"
	"meshplane.dev/mesh/rpc"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	fulfillmentv1 "meshplane.dev/services/proto/fulfillment/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
)

// Catalog is what the gateway needs of catalog.
type Catalog interface {
	ListProducts(ctx context.Context, in *catalogv1.ListProductsRequest, opts ...grpc.CallOption) (*catalogv1.ListProductsResponse, error)
	GetProduct(ctx context.Context, in *catalogv1.GetProductRequest, opts ...grpc.CallOption) (*catalogv1.Product, error)
}

// Orders is what the gateway needs of orders.
type Orders interface {
	PlaceOrder(ctx context.Context, in *ordersv1.PlaceOrderRequest, opts ...grpc.CallOption) (*ordersv1.PlaceOrderResponse, error)
	GetOrder(ctx context.Context, in *ordersv1.GetOrderRequest, opts ...grpc.CallOption) (*ordersv1.Order, error)
}

// Fulfillment is what the gateway needs of fulfillment.
type Fulfillment interface {
	GetShipment(ctx context.Context, in *fulfillmentv1.GetShipmentRequest, opts ...grpc.CallOption) (*fulfillmentv1.Shipment, error)
}

// Headers of the orders API.
const (
	// IdempotencyKeyHeader makes POST /v1/orders safe to retry: the same key places one order.
	IdempotencyKeyHeader = "Idempotency-Key"
	// ReplayedHeader is "true" on a response that returns an order placed by an earlier request.
	ReplayedHeader = "Idempotent-Replayed"
)

// Product is the JSON form of a product.
type Product struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	PriceCents  int64  `json:"priceCents"`
	Currency    string `json:"currency"`
}

// ProductList is the body of GET /v1/products.
type ProductList struct {
	Products []Product `json:"products"`
}

// LineItem is an item of an order.
type LineItem struct {
	ProductID      string `json:"productId"`
	Quantity       int32  `json:"quantity"`
	UnitPriceCents int64  `json:"unitPriceCents,omitempty"`
}

// Order is the JSON form of an order.
type Order struct {
	ID         string     `json:"id"`
	Items      []LineItem `json:"items"`
	TotalCents int64      `json:"totalCents"`
	Currency   string     `json:"currency"`
	Status     string     `json:"status"`
	ChargeID   string     `json:"chargeId"`
	CreatedAt  time.Time  `json:"createdAt"`
	// Fulfillment is set on GET /v1/orders/{id}: what fulfillment has done with the order.
	Fulfillment *Fulfilment `json:"fulfillment,omitempty"`
}

// Fulfilment states of an order, in GET /v1/orders/{id}.
const (
	// FulfilmentAwaiting: the order's OrderPlaced event has not been processed yet (it is on its way
	// through the outbox and the broker, or was dead-lettered).
	FulfilmentAwaiting = "awaiting"
	// FulfilmentUnknown: fulfillment did not answer; the order itself is still served.
	FulfilmentUnknown = "unknown"
)

// Fulfilment is the fulfilment state of an order: "awaiting", the shipment's status ("preparing"), or
// "unknown" when fulfillment is unavailable.
type Fulfilment struct {
	Status     string     `json:"status"`
	ShipmentID string     `json:"shipmentId,omitempty"`
	CreatedAt  *time.Time `json:"createdAt,omitempty"`
	// Dependency names what did not answer when Status is unknown.
	Dependency string `json:"dependency,omitempty"`
}

// PlaceOrderRequest is the body of POST /v1/orders.
type PlaceOrderRequest struct {
	Items     []OrderItem `json:"items"`
	CardToken string      `json:"cardToken"`
}

// OrderItem is an item of a PlaceOrderRequest.
type OrderItem struct {
	ProductID string `json:"productId"`
	Quantity  int32  `json:"quantity"`
}

func productJSON(p *catalogv1.Product) Product {
	return Product{ID: p.GetId(), Name: p.GetName(), Description: p.GetDescription(), PriceCents: p.GetPriceCents(), Currency: p.GetCurrency()}
}

func orderJSON(o *ordersv1.Order) Order {
	out := Order{ID: o.GetId(), TotalCents: o.GetTotalCents(), Currency: o.GetCurrency(), Status: o.GetStatus(),
		ChargeID: o.GetChargeId(), CreatedAt: time.UnixMilli(o.GetCreatedUnixMs()).UTC(), Items: []LineItem{}}
	for _, it := range o.GetItems() {
		out.Items = append(out.Items, LineItem{ProductID: it.GetProductId(), Quantity: it.GetQuantity(), UnitPriceCents: it.GetUnitPriceCents()})
	}
	return out
}

func listProducts(catalog Catalog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := catalog.ListProducts(r.Context(), &catalogv1.ListProductsRequest{})
		if err != nil {
			writeRPCError(w, "catalog", err)
			return
		}
		out := ProductList{Products: make([]Product, 0, len(resp.GetProducts()))}
		for _, p := range resp.GetProducts() {
			out.Products = append(out.Products, productJSON(p))
		}
		httpmw.WriteJSON(w, http.StatusOK, out)
	})
}

func getProduct(catalog Catalog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := catalog.GetProduct(r.Context(), &catalogv1.GetProductRequest{Id: r.PathValue("id")})
		if err != nil {
			writeRPCError(w, "catalog", err)
			return
		}
		httpmw.WriteJSON(w, http.StatusOK, productJSON(p))
	})
}

// validKey accepts printable ASCII keys, as the Idempotency-Key draft suggests for opaque keys such as
// UUIDs: a header syntax the gateway checks. Its length, like every limit of an order, is orders' to
// enforce; the gateway maps orders' field errors to the JSON names.
func validKey(k string) error {
	for _, c := range k {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("must be printable ASCII without spaces")
		}
	}
	return nil
}

func placeOrder(logger *slog.Logger, orders Orders) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body PlaceOrderRequest
		if e := httpmw.DecodeJSON(r, &body); e != nil {
			httpmw.WriteError(w, e.Status, *e)
			return
		}
		key := r.Header.Get(IdempotencyKeyHeader)
		if key == "" {
			// Without a key the request is not retry-safe for the client, but the calls behind it
			// still are: orders and payments deduplicate their own retries by this key.
			key = "gw-" + randomHex(16)
		} else if err := validKey(key); err != nil {
			httpmw.WriteError(w, http.StatusBadRequest, httpmw.Error{Field: IdempotencyKeyHeader, Message: "header " + IdempotencyKeyHeader + ": " + err.Error()})
			return
		}
		req := &ordersv1.PlaceOrderRequest{IdempotencyKey: key, CardToken: body.CardToken}
		for _, it := range body.Items {
			req.Items = append(req.Items, &ordersv1.LineItem{ProductId: it.ProductID, Quantity: it.Quantity})
		}
		resp, err := orders.PlaceOrder(r.Context(), req)
		if err != nil {
			writeRPCError(w, "orders", err)
			return
		}
		if resp.GetReplayed() {
			w.Header().Set(ReplayedHeader, "true")
		}
		w.Header().Set("Location", "/v1/orders/"+resp.GetOrder().GetId())
		logger.InfoContext(r.Context(), "order accepted", slog.String("order_id", resp.GetOrder().GetId()), slog.Bool("replayed", resp.GetReplayed()))
		httpmw.WriteJSON(w, http.StatusCreated, orderJSON(resp.GetOrder()))
	})
}

func getOrder(orders Orders, fulfillment Fulfillment) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, err := orders.GetOrder(r.Context(), &ordersv1.GetOrderRequest{Id: r.PathValue("id")})
		if err != nil {
			writeRPCError(w, "orders", err)
			return
		}
		out := orderJSON(o)
		out.Fulfillment = fulfilment(r.Context(), fulfillment, o.GetId())
		httpmw.WriteJSON(w, http.StatusOK, out)
	})
}

// fulfilment asks fulfillment about order id. The order is orders' to answer for: fulfillment failing
// makes the state unknown, never the request fail.
func fulfilment(ctx context.Context, fulfillment Fulfillment, id string) *Fulfilment {
	sh, err := fulfillment.GetShipment(ctx, &fulfillmentv1.GetShipmentRequest{OrderId: id})
	switch {
	case err == nil:
		created := time.UnixMilli(sh.GetCreatedUnixMs()).UTC()
		return &Fulfilment{Status: sh.GetStatus(), ShipmentID: sh.GetId(), CreatedAt: &created}
	case status.Code(err) == codes.NotFound:
		return &Fulfilment{Status: FulfilmentAwaiting}
	}
	dep := "fulfillment"
	if failed, _, ok := breaker.FailedDependency(err); ok {
		dep = failed
	}
	return &Fulfilment{Status: FulfilmentUnknown, Dependency: dep}
}

// protoFields maps the orders service's field paths to the JSON names clients use.
var protoFields = strings.NewReplacer("product_id", "productId", "card_token", "cardToken", "idempotency_key", IdempotencyKeyHeader)

// writeRPCError answers for a failed call to dep: client errors keep their meaning (400 naming the
// field, 404, 409, 402 for a declined card); failures of dep, or of a dependency behind it, are
// 503/504 naming which one failed.
func writeRPCError(w http.ResponseWriter, dep string, err error) {
	st := status.Convert(err)
	if failed, reason, ok := breaker.FailedDependency(err); ok {
		code := http.StatusServiceUnavailable
		if st.Code() == codes.DeadlineExceeded {
			code = http.StatusGatewayTimeout
		}
		msg := failed + " unavailable"
		if reason == breaker.ReasonCircuitOpen {
			msg = failed + " unavailable: circuit breaker open"
		}
		httpmw.WriteError(w, code, httpmw.Error{Message: msg, Dependency: failed})
		return
	}
	switch st.Code() {
	case codes.InvalidArgument:
		field, problem, _ := rpc.FieldViolation(err)
		field = protoFields.Replace(field)
		msg := st.Message()
		if field != "" {
			msg = field + ": " + problem
		}
		httpmw.WriteError(w, http.StatusBadRequest, httpmw.Error{Message: msg, Field: field})
	case codes.NotFound:
		httpmw.WriteError(w, http.StatusNotFound, httpmw.Error{Message: st.Message()})
	case codes.AlreadyExists:
		httpmw.WriteError(w, http.StatusConflict, httpmw.Error{Message: st.Message(), Field: IdempotencyKeyHeader})
	case codes.FailedPrecondition:
		if rpc.Reason(err) == "CARD_DECLINED" {
			httpmw.WriteError(w, http.StatusPaymentRequired, httpmw.Error{Message: "payment declined", Field: "cardToken"})
			return
		}
		httpmw.WriteError(w, http.StatusConflict, httpmw.Error{Message: st.Message()})
	case codes.ResourceExhausted:
		httpmw.WriteError(w, http.StatusTooManyRequests, httpmw.Error{Message: st.Message(), Dependency: dep})
	case codes.DeadlineExceeded:
		httpmw.WriteError(w, http.StatusGatewayTimeout, httpmw.Error{Message: dep + " timed out", Dependency: dep})
	case codes.Canceled:
		httpmw.WriteError(w, 499, httpmw.Error{Message: "request cancelled"})
	case codes.Unavailable:
		httpmw.WriteError(w, http.StatusServiceUnavailable, httpmw.Error{Message: dep + " unavailable: " + st.Message(), Dependency: dep})
	default:
		httpmw.WriteError(w, http.StatusBadGateway, httpmw.Error{Message: dep + " failed: " + st.Message(), Dependency: dep})
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
