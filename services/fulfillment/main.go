// Command fulfillment creates a shipment for every placed order: it consumes orders' OrderPlaced events
// from NATS JetStream (a durable pull consumer shared by its replicas, explicit acks), acts on each
// event once whatever its redeliveries (a processing record in its own PostgreSQL database), dead-letters
// an event that keeps failing, and answers what it did over gRPC (meshplane.fulfillment.v1.FulfillmentService).
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
	eventsv1 "meshplane.dev/services/proto/events/v1"
	fulfillmentv1 "meshplane.dev/services/proto/fulfillment/v1"

	"meshplane.dev/services/fulfillment/internal/consumer"
	"meshplane.dev/services/fulfillment/internal/server"
	"meshplane.dev/services/fulfillment/internal/shipping"
	"meshplane.dev/services/fulfillment/internal/store"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fulfillment:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := DefaultConfig()
	if ok, err := config.Parse(&cfg, "fulfillment", args, getenv, stdout, stderr); !ok {
		return err
	}

	rt, err := service.Start("fulfillment", cfg.Config, stdout)
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
	st := store.New(db)
	nc, err := events.Connect("fulfillment", cfg.EventsConfig, rt.Logger, rt.Registry)
	if err != nil {
		return err
	}
	defer nc.Close()
	shipper, err := shipping.New(rt.Logger, rt.Registry, st, rt.Faults)
	if err != nil {
		return err
	}
	cons, err := consumer.New(rt.Logger, rt.Registry, nc, consumer.Settings{
		Name: cfg.ConsumerName, Stream: eventsv1.OrdersStream, Subject: eventsv1.OrderPlacedSubject,
		MaxInFlight: cfg.ConsumerMaxInFlight, MaxAckPending: cfg.ConsumerMaxAckPending, MaxDeliveries: cfg.ConsumerMaxDeliveries,
		AckWait: cfg.ConsumerAckWait, RetryDelay: cfg.ConsumerRetryDelay, LagInterval: cfg.ConsumerLagInterval,
		StreamReplicas: cfg.EventsStreamReplicas,
	}, shipper.Handle)
	if err != nil {
		return err
	}
	// The consumer stops pulling when shutdown begins and finishes the events it holds before the
	// database closes; what it had not started is delivered to another replica.
	consumerDone := make(chan struct{})
	go func() { defer close(consumerDone); cons.Run(ctx) }()
	defer func() { <-consumerDone }()

	lis, err := service.Listen("grpc", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	srv, err := rt.NewGRPCServer(cfg.GRPCServerConfig)
	if err != nil {
		return err
	}
	fulfillmentv1.RegisterFulfillmentServiceServer(srv, server.New(st))
	healthpb.RegisterHealthServer(srv, rt.Health.GRPC())
	return rt.Serve(ctx, service.Traffic{Server: service.GRPC(srv), Listener: lis, Tags: []string{"grpc"}})
}
