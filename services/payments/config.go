package main

import (
	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/service"
)

// Config is the payments service's configuration.
type Config struct {
	GRPCAddr string `env:"GRPC_ADDR" help:"Listen address of the gRPC server (PaymentService, grpc.health.v1)."`
	service.GRPCServerConfig
	pgstore.DatabaseConfig
	service.Config
}

// DefaultConfig returns the defaults: gRPC on 127.0.0.1:9030, admin on 127.0.0.1:9031, the database
// payments on a PostgreSQL at 127.0.0.1:5432.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:       "127.0.0.1:9030",
		DatabaseConfig: pgstore.DefaultDatabaseConfig("postgres://payments@127.0.0.1:5432/payments?sslmode=disable"),
		Config:         service.DefaultConfig("127.0.0.1:9031"),
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if err := service.ValidAddr("GRPC_ADDR", c.GRPCAddr); err != nil {
		return err
	}
	if err := c.DatabaseConfig.Validate(); err != nil {
		return err
	}
	return c.Config.Validate()
}
