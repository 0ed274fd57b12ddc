package main

import "meshplane.dev/mesh/service"

// Config is the gateway's configuration.
type Config struct {
	HTTPAddr      string `env:"HTTP_ADDR" help:"Listen address of the public HTTP/JSON API."`
	CatalogTarget string `env:"CATALOG_TARGET" help:"gRPC target of catalog: host:port, consul:///catalog, dns:///catalog.shop.svc.cluster.local:9010 or xds:///..."`
	OrdersTarget  string `env:"ORDERS_TARGET" help:"gRPC target of orders, in the same forms."`
	// FulfillmentTarget is only read from: GET /v1/orders/{id} shows the order's fulfilment state.
	FulfillmentTarget string `env:"FULFILLMENT_TARGET" help:"gRPC target of fulfillment, in the same forms; GET /v1/orders/{id} shows its answer as the order's fulfillment state (unknown when it does not answer)."`
	service.ClientConfig
	service.Config
}

// DefaultConfig returns the defaults: HTTP on 127.0.0.1:8080, admin on 127.0.0.1:8081, catalog, orders
// and fulfillment at their own defaults.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:          "127.0.0.1:8080",
		CatalogTarget:     "127.0.0.1:9010",
		OrdersTarget:      "127.0.0.1:9020",
		FulfillmentTarget: "127.0.0.1:9040",
		ClientConfig:      service.DefaultClientConfig(),
		Config:            service.DefaultConfig("127.0.0.1:8081"),
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if err := service.ValidAddr("HTTP_ADDR", c.HTTPAddr); err != nil {
		return err
	}
	if err := service.ValidTarget("CATALOG_TARGET", c.CatalogTarget); err != nil {
		return err
	}
	if err := service.ValidTarget("ORDERS_TARGET", c.OrdersTarget); err != nil {
		return err
	}
	if err := service.ValidTarget("FULFILLMENT_TARGET", c.FulfillmentTarget); err != nil {
		return err
	}
	if err := c.ClientConfig.Validate(); err != nil {
		return err
	}
	return c.Config.Validate()
}
