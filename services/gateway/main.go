// Command gateway is the shop's public HTTP/JSON API: it lists products (catalog) and places and
// reads orders (orders, with their fulfilment state from fulfillment), calling each over gRPC.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"meshplane.dev/mesh/config"
	"meshplane.dev/mesh/service"
	"meshplane.dev/mesh/telemetry"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	fulfillmentv1 "meshplane.dev/services/proto/fulfillment/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"

	"meshplane.dev/services/gateway/internal/api"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := DefaultConfig()
	if ok, err := config.Parse(&cfg, "gateway", args, getenv, stdout, stderr); !ok {
		return err
	}

	rt, err := service.Start("gateway", cfg.Config, stdout)
	if err != nil {
		return err
	}
	defer rt.Close()
	catalogConn, err := rt.Dial("catalog", cfg.CatalogTarget, cfg.ClientConfig)
	if err != nil {
		return err
	}
	defer func() { _ = catalogConn.Close() }()
	ordersConn, err := rt.Dial("orders", cfg.OrdersTarget, cfg.ClientConfig)
	if err != nil {
		return err
	}
	defer func() { _ = ordersConn.Close() }()
	fulfillmentConn, err := rt.Dial("fulfillment", cfg.FulfillmentTarget, cfg.ClientConfig)
	if err != nil {
		return err
	}
	defer func() { _ = fulfillmentConn.Close() }()

	lis, err := service.Listen("http", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	handler := api.NewServer(rt.Logger, telemetry.NewHTTPMetrics(rt.Registry), rt.Faults,
		catalogv1.NewCatalogServiceClient(catalogConn), ordersv1.NewOrderServiceClient(ordersConn),
		fulfillmentv1.NewFulfillmentServiceClient(fulfillmentConn))
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return rt.Serve(ctx, service.Traffic{Server: service.HTTPServer{Server: srv}, Listener: lis, Tags: []string{"http"}})
}
