// Command orders places and reads the shop's orders over gRPC (meshplane.orders.v1.OrderService):
// it validates items against catalog, records the order in PostgreSQL, charges through payments, and
// places one order per idempotency key across all its replicas. Each paid order's OrderPlaced event is
// written to an outbox in the same transaction, and relayed from there to NATS JetStream.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"meshplane.dev/mesh/config"
	"meshplane.dev/mesh/events"
	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/service"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
	ordersv1 "meshplane.dev/services/proto/orders/v1"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/orders/internal/outbox"
	"meshplane.dev/services/orders/internal/server"
	"meshplane.dev/services/orders/internal/store"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := DefaultConfig()
	if ok, err := config.Parse(&cfg, "orders", args, getenv, stdout, stderr); !ok {
		return err
	}

	rt, err := service.Start("orders", cfg.Config, stdout)
	if err != nil {
		return err
	}
	defer rt.Close()
	db, err := pgstore.Open(ctx, cfg.DatabaseConfig, pgstore.Options{Component: store.Component, Migrations: store.Migrations(),
		Operations: store.Operations, Logger: rt.Logger, Registry: rt.Registry, Health: rt.Health})
	if err != nil {
		return err
	}
	defer db.Close()
	catalogConn, err := rt.Dial("catalog", cfg.CatalogTarget, cfg.ClientConfig)
	if err != nil {
		return err
	}
	defer func() { _ = catalogConn.Close() }()
	paymentsConn, err := rt.Dial("payments", cfg.PaymentsTarget, cfg.ClientConfig)
	if err != nil {
		return err
	}
	defer func() { _ = paymentsConn.Close() }()

	nc, err := events.Connect("orders", cfg.EventsConfig, rt.Logger, rt.Registry)
	if err != nil {
		return err
	}
	defer nc.Close()
	st := store.New(db)
	relay, err := outbox.New(rt.Logger, rt.Registry, st, nc, outbox.Settings{
		Interval: cfg.OutboxRelayInterval, BatchSize: cfg.OutboxBatchSize, PublishTimeout: cfg.OutboxPublishTimeout,
		Retention: cfg.OutboxRetention, StreamReplicas: cfg.EventsStreamReplicas, DuplicateWindow: cfg.EventsDuplicateWindow,
	})
	if err != nil {
		return err
	}
	// The relay runs through the drain and stops before the database closes; what it has not published
	// stays pending, for another replica or the next start.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); relay.Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }()

	lis, err := service.Listen("grpc", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	srv, err := rt.NewGRPCServer(cfg.GRPCServerConfig)
	if err != nil {
		return err
	}
	ordersv1.RegisterOrderServiceServer(srv, server.New(rt.Logger, rt.Registry,
		catalogv1.NewCatalogServiceClient(catalogConn), paymentsv1.NewPaymentServiceClient(paymentsConn), st, cfg.OrderLease, relay.Notify))
	healthpb.RegisterHealthServer(srv, rt.Health.GRPC())
	return rt.Serve(ctx, service.Traffic{Server: service.GRPC(srv), Listener: lis, Tags: []string{"grpc"}})
}
