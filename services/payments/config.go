package main

import "meshplane.dev/mesh/service"

// Config is the payments service's configuration.
type Config struct {
	GRPCAddr string `env:"GRPC_ADDR" help:"Listen address of the gRPC server (PaymentService, grpc.health.v1)."`
	service.GRPCServerConfig
	service.Config
}

// DefaultConfig returns the defaults: gRPC on 127.0.0.1:9030, admin on 127.0.0.1:9031.
func DefaultConfig() Config {
	return Config{GRPCAddr: "127.0.0.1:9030", Config: service.DefaultConfig("127.0.0.1:9031")}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if err := service.ValidAddr("GRPC_ADDR", c.GRPCAddr); err != nil {
		return err
	}
	return c.Config.Validate()
}
