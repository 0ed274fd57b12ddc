package main

import (
	"fmt"
	"time"

	"meshplane.dev/mesh/service"
)

// Config is the catalog service's configuration.
type Config struct {
	GRPCAddr string `env:"GRPC_ADDR" help:"Listen address of the gRPC server (CatalogService, grpc.health.v1)."`
	service.GRPCServerConfig
	CacheTTL time.Duration `env:"CACHE_TTL" help:"How long a product read stays in the read cache; 0 disables the cache."`
	service.Config
}

// DefaultConfig returns the defaults: gRPC on 127.0.0.1:9010, admin on 127.0.0.1:9011.
func DefaultConfig() Config {
	return Config{GRPCAddr: "127.0.0.1:9010", CacheTTL: 30 * time.Second, Config: service.DefaultConfig("127.0.0.1:9011")}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if err := service.ValidAddr("GRPC_ADDR", c.GRPCAddr); err != nil {
		return err
	}
	if c.CacheTTL < 0 {
		return fmt.Errorf("CACHE_TTL %s: must not be negative", c.CacheTTL)
	}
	return c.Config.Validate()
}
