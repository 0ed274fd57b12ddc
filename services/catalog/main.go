// Command catalog serves the shop's products over gRPC (meshplane.catalog.v1.CatalogService)
// from an in-memory store behind a read cache.
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
	"meshplane.dev/mesh/service"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"

	"meshplane.dev/services/catalog/internal/products"
	"meshplane.dev/services/catalog/internal/server"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "catalog:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := DefaultConfig()
	if ok, err := config.Parse(&cfg, "catalog", args, getenv, stdout, stderr); !ok {
		return err
	}

	rt, err := service.Start("catalog", cfg.Config, stdout)
	if err != nil {
		return err
	}
	defer rt.Close()
	lis, err := service.Listen("grpc", cfg.GRPCAddr)
	if err != nil {
		return err
	}
	srv, err := rt.NewGRPCServer(cfg.GRPCServerConfig)
	if err != nil {
		return err
	}
	repo := products.NewCache(products.NewMemory(products.Seed()), cfg.CacheTTL, rt.Registry)
	catalogv1.RegisterCatalogServiceServer(srv, server.New(rt.Logger, repo))
	healthpb.RegisterHealthServer(srv, rt.Health.GRPC())
	return rt.Serve(ctx, service.Traffic{Server: service.GRPC(srv), Listener: lis, Tags: []string{"grpc"}})
}
