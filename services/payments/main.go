// Command payments charges cards for the shop over gRPC (meshplane.payments.v1.PaymentService),
// exactly once per idempotency key, keeping its charges in PostgreSQL.
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
	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/service"
	paymentsv1 "meshplane.dev/services/proto/payments/v1"

	"meshplane.dev/services/payments/internal/server"
	"meshplane.dev/services/payments/internal/store"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "payments:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := DefaultConfig()
	if ok, err := config.Parse(&cfg, "payments", args, getenv, stdout, stderr); !ok {
		return err
	}

	rt, err := service.Start("payments", cfg.Config, stdout)
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
	lis, err := service.Listen("grpc", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	srv, err := rt.NewGRPCServer(cfg.GRPCServerConfig)
	if err != nil {
		return err
	}
	paymentsv1.RegisterPaymentServiceServer(srv, server.New(rt.Logger, rt.Registry, store.New(db)))
	healthpb.RegisterHealthServer(srv, rt.Health.GRPC())
	return rt.Serve(ctx, service.Traffic{Server: service.GRPC(srv), Listener: lis, Tags: []string{"grpc"}})
}
