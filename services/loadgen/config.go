package main

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"meshplane.dev/mesh/service"

	"meshplane.dev/services/loadgen/internal/load"
)

// Config is the load generator's configuration.
type Config struct {
	TargetURL      string        `env:"TARGET_URL" help:"Base URL of the gateway."`
	Rate           float64       `env:"RATE" help:"Requests started per second, over all scenarios."`
	Duration       time.Duration `env:"DURATION" help:"Stop after this long; 0 runs until REQUESTS is reached or the process is stopped."`
	Requests       int           `env:"REQUESTS" help:"Stop after this many requests; 0 means no bound."`
	Concurrency    int           `env:"CONCURRENCY" help:"Most requests in flight at once; a tick that finds them all busy is skipped and counted."`
	Scenarios      load.Weights  `env:"SCENARIOS" help:"Weighted scenarios, name=weight: browse (GET /v1/products), product (GET /v1/products/{id}), order (POST /v1/orders, then GET it)."`
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT" help:"Timeout of one HTTP request."`
	OrderRetries   int           `env:"ORDER_RETRIES" help:"Retries of a failed order (5xx or connection error) with the same Idempotency-Key."`
	Seed           int64         `env:"SEED" help:"Random seed for scenario choice and order contents; 0 picks one."`
	Namespace      string        `env:"NAMESPACE" help:"Namespace label of the load generator's Loki streams."`
	AdminAddr      string        `env:"ADMIN_ADDR" help:"Listen address of the admin server (/metrics, /healthz, /readyz)."`
	LogLevel       string        `env:"LOG_LEVEL" help:"Minimum log level: debug, info, warn or error."`
	LokiURL        string        `env:"LOKI_URL" help:"Loki base URL to ship logs to; empty logs to stdout only."`
}

// DefaultConfig returns the defaults: a gentle 5 requests per second against the local gateway,
// browsing often and ordering rarely, until stopped.
func DefaultConfig() Config {
	return Config{
		TargetURL:      "http://127.0.0.1:8080",
		Rate:           5,
		Concurrency:    8,
		Scenarios:      load.Weights{{Name: "browse", Weight: 10}, {Name: "product", Weight: 5}, {Name: "order", Weight: 1}},
		RequestTimeout: 5 * time.Second,
		OrderRetries:   1,
		Namespace:      "shop",
		AdminAddr:      "127.0.0.1:8090",
		LogLevel:       "info",
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if u, err := url.Parse(c.TargetURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("TARGET_URL %q: want an http(s) URL such as http://127.0.0.1:8080", c.TargetURL)
	}
	switch {
	case c.Rate <= 0 || c.Rate > 10000:
		return fmt.Errorf("RATE %v: want more than 0 and at most 10000 per second", c.Rate)
	case c.Duration < 0:
		return fmt.Errorf("DURATION %s: must not be negative", c.Duration)
	case c.Requests < 0:
		return fmt.Errorf("REQUESTS %d: must not be negative", c.Requests)
	case c.Concurrency < 1:
		return fmt.Errorf("CONCURRENCY %d: want at least 1", c.Concurrency)
	case len(c.Scenarios) == 0:
		return errors.New("SCENARIOS: want at least one scenario")
	case c.RequestTimeout <= 0:
		return fmt.Errorf("REQUEST_TIMEOUT %s: want a positive duration", c.RequestTimeout)
	case c.OrderRetries < 0:
		return fmt.Errorf("ORDER_RETRIES %d: must not be negative", c.OrderRetries)
	}
	return c.service().Validate()
}

// service is the shared runtime configuration the load generator uses: logs and the admin server
// only (it serves no traffic, so faults, Consul and drain settings do not apply).
func (c Config) service() service.Config {
	s := service.DefaultConfig(c.AdminAddr)
	s.Namespace, s.LogLevel, s.LokiURL = c.Namespace, c.LogLevel, c.LokiURL
	s.ShutdownTimeout = time.Second
	return s
}
