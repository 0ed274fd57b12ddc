// Package api is the gateway's public HTTP/JSON API.
package api

import (
	"log/slog"
	"net/http"

	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/httpmw"
	"meshplane.dev/mesh/telemetry"
)

// NewServer returns the gateway's handler: every route, behind the edge middleware. The trace comes
// first; metrics wrap the mux directly so they see the matched route; faults apply per route.
func NewServer(logger *slog.Logger, metrics *telemetry.HTTPMetrics, faults *fault.Injector, catalog Catalog, orders Orders, fulfillment Fulfillment) http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) { mux.Handle(pattern, faults.HTTP(pattern, h)) }
	handle("GET /v1/products", listProducts(catalog))
	handle("GET /v1/products/{id}", getProduct(catalog))
	handle("POST /v1/orders", placeOrder(logger, orders))
	handle("GET /v1/orders/{id}", getOrder(orders, fulfillment))
	return httpmw.Chain(mux,
		httpmw.Trace,
		httpmw.AccessLog(logger),
		metrics.Middleware,
		httpmw.Recover(logger),
		httpmw.LimitBody(httpmw.MaxBodyBytes),
	)
}
