package main

import (
	"fmt"
	"time"

	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/service"
)

// Config is the orders service's configuration.
type Config struct {
	GRPCAddr string `env:"GRPC_ADDR" help:"Listen address of the gRPC server (OrderService, grpc.health.v1)."`
	service.GRPCServerConfig
	CatalogTarget  string        `env:"CATALOG_TARGET" help:"gRPC target of catalog: host:port, consul:///catalog, dns:///catalog.shop.svc.cluster.local:9010 or xds:///..."`
	PaymentsTarget string        `env:"PAYMENTS_TARGET" help:"gRPC target of payments, in the same forms."`
	OrderLease     time.Duration `env:"ORDER_LEASE" help:"How long a placement may take to charge its order before a retry with the same key, on any replica, may resume it (charging with the same payment key, which payments deduplicates). Longer than CALL_TIMEOUT, or a retry resumes orders whose charge is still in flight (harmless, but a wasted call)."`
	service.ClientConfig
	pgstore.DatabaseConfig
	service.Config
}

// DefaultConfig returns the defaults: gRPC on 127.0.0.1:9020, admin on 127.0.0.1:9021, catalog and
// payments at their own defaults, the database orders on a PostgreSQL at 127.0.0.1:5432.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:       "127.0.0.1:9020",
		CatalogTarget:  "127.0.0.1:9010",
		PaymentsTarget: "127.0.0.1:9030",
		OrderLease:     5 * time.Second,
		ClientConfig:   service.DefaultClientConfig(),
		DatabaseConfig: pgstore.DefaultDatabaseConfig("postgres://orders@127.0.0.1:5432/orders?sslmode=disable"),
		Config:         service.DefaultConfig("127.0.0.1:9021"),
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if err := service.ValidAddr("GRPC_ADDR", c.GRPCAddr); err != nil {
		return err
	}
	if err := service.ValidTarget("CATALOG_TARGET", c.CatalogTarget); err != nil {
		return err
	}
	if err := service.ValidTarget("PAYMENTS_TARGET", c.PaymentsTarget); err != nil {
		return err
	}
	if c.OrderLease <= 0 {
		return fmt.Errorf("ORDER_LEASE %s: want a positive duration", c.OrderLease)
	}
	if err := c.ClientConfig.Validate(); err != nil {
		return err
	}
	if err := c.DatabaseConfig.Validate(); err != nil {
		return err
	}
	return c.Config.Validate()
}
