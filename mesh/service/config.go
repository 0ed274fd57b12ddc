// Package service is the runtime every Meshplane service shares: its common settings, logger,
// metrics registry, health, fault injection, admin server, Consul registration, gRPC client wiring
// and the drain sequence on shutdown. Services keep only their own handlers and settings.
package service

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/logs"
)

// Config holds the settings every service has. Services embed it in their own Config.
type Config struct {
	Namespace       string        `env:"NAMESPACE" help:"Namespace the service runs in; the namespace label of its Loki streams."`
	AdminAddr       string        `env:"ADMIN_ADDR" help:"Listen address of the admin server: /metrics, /healthz, /readyz, /admin/faults."`
	AdvertiseHost   string        `env:"ADVERTISE_HOST" help:"Host other processes reach this one at, registered in Consul; empty uses the listen host."`
	LogLevel        string        `env:"LOG_LEVEL" help:"Minimum log level: debug, info, warn or error."`
	LokiURL         string        `env:"LOKI_URL" help:"Loki base URL to ship logs to (e.g. http://127.0.0.1:3100); empty logs to stdout only."`
	LogQueueSize    int           `env:"LOG_QUEUE_SIZE" help:"Log lines that may wait for Loki; beyond that lines are dropped and counted, never waited for."`
	LogBatchWait    time.Duration `env:"LOG_BATCH_WAIT" help:"Longest a log line waits before its batch is pushed to Loki."`
	ConsulAddr      string        `env:"CONSUL_HTTP_ADDR" help:"Consul agent HTTP address (host:port), for consul:/// targets and registration; empty disables Consul."`
	ConsulRegister  bool          `env:"CONSUL_REGISTER" help:"Register this instance in Consul (with a check on /readyz) and deregister it on shutdown."`
	CheckInterval   time.Duration `env:"CONSUL_CHECK_INTERVAL" help:"How often Consul probes /readyz."`
	DrainDelay      time.Duration `env:"DRAIN_DELAY" help:"Time between failing readiness and stopping the listeners, for load balancers to notice."`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" help:"Longest in-flight requests may take to finish once the listeners stop."`
	Faults          fault.Rules   `env:"FAULTS" help:"Faults to inject from the start, a JSON array such as [{\"target\":\"Charge\",\"errorRate\":0.5,\"delay\":\"100ms\"}]; changeable at runtime with PUT /admin/faults."`
	XDSBootstrap    string        `env:"GRPC_XDS_BOOTSTRAP" flag:"-" help:"Path of the xDS bootstrap (node identity, istiod's address) for xds:/// targets and XDS_SERVER; gRPC reads this variable itself at start, so it has no flag."`
}

// GRPCServerConfig holds the settings of a service's gRPC server.
type GRPCServerConfig struct {
	XDSServer bool `env:"XDS_SERVER" help:"Serve gRPC with gRPC's xDS server, so istiod's inbound policy applies (PeerAuthentication mTLS, AuthorizationPolicy as RBAC); it serves once istiod has sent its listener. Needs GRPC_XDS_BOOTSTRAP."`
}

// DefaultConfig returns the shared defaults with the admin server on adminAddr.
func DefaultConfig(adminAddr string) Config {
	return Config{
		Namespace:       "shop",
		AdminAddr:       adminAddr,
		LogLevel:        "info",
		LogQueueSize:    1024,
		LogBatchWait:    time.Second,
		CheckInterval:   2 * time.Second,
		DrainDelay:      0,
		ShutdownTimeout: 20 * time.Second,
	}
}

// Validate reports the first invalid setting by its variable name.
func (c Config) Validate() error {
	if err := validAddr("ADMIN_ADDR", c.AdminAddr); err != nil {
		return err
	}
	if _, err := logs.ParseLevel(c.LogLevel); err != nil {
		return fmt.Errorf("LOG_LEVEL: %w", err)
	}
	if c.LokiURL != "" {
		if u, err := url.Parse(c.LokiURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("LOKI_URL %q: want an http(s) URL such as http://127.0.0.1:3100", c.LokiURL)
		}
	}
	switch {
	case c.LogQueueSize < 1:
		return fmt.Errorf("LOG_QUEUE_SIZE %d: want at least 1", c.LogQueueSize)
	case c.LogBatchWait <= 0:
		return fmt.Errorf("LOG_BATCH_WAIT %s: want a positive duration", c.LogBatchWait)
	case c.ConsulRegister && c.ConsulAddr == "":
		return errors.New("CONSUL_REGISTER is true but CONSUL_HTTP_ADDR is empty")
	case c.CheckInterval <= 0:
		return fmt.Errorf("CONSUL_CHECK_INTERVAL %s: want a positive duration", c.CheckInterval)
	case c.DrainDelay < 0:
		return fmt.Errorf("DRAIN_DELAY %s: must not be negative", c.DrainDelay)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("SHUTDOWN_TIMEOUT %s: want a positive duration", c.ShutdownTimeout)
	}
	return nil
}

// ClientConfig holds the settings of a service's calls to its dependencies.
type ClientConfig struct {
	CallTimeout                time.Duration `env:"CALL_TIMEOUT" help:"Deadline of a call to a dependency when the request has none sooner."`
	BreakerConsecutiveFailures uint32        `env:"BREAKER_CONSECUTIVE_FAILURES" help:"A dependency's breaker opens after this many failures in a row."`
	BreakerFailureRatio        float64       `env:"BREAKER_FAILURE_RATIO" help:"It also opens when this fraction of calls in BREAKER_INTERVAL failed (0 turns this off)..."`
	BreakerMinRequests         uint32        `env:"BREAKER_MIN_REQUESTS" help:"...once at least this many calls were made in the interval."`
	BreakerInterval            time.Duration `env:"BREAKER_INTERVAL" help:"Window over which a closed breaker counts calls."`
	BreakerOpenTimeout         time.Duration `env:"BREAKER_OPEN_TIMEOUT" help:"How long an open breaker rejects calls before letting a probe through."`
	BreakerHalfOpenRequests    uint32        `env:"BREAKER_HALF_OPEN_REQUESTS" help:"Probes let through while half-open; that many successes close the breaker."`
}

// DefaultClientConfig returns the client defaults.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{
		CallTimeout:                2 * time.Second,
		BreakerConsecutiveFailures: 5,
		BreakerFailureRatio:        0.5,
		BreakerMinRequests:         20,
		BreakerInterval:            10 * time.Second,
		BreakerOpenTimeout:         5 * time.Second,
		BreakerHalfOpenRequests:    1,
	}
}

// Breaker returns the breaker settings.
func (c ClientConfig) Breaker() breaker.Settings {
	return breaker.Settings{
		ConsecutiveFailures: c.BreakerConsecutiveFailures,
		FailureRatio:        c.BreakerFailureRatio,
		MinRequests:         c.BreakerMinRequests,
		Interval:            c.BreakerInterval,
		OpenTimeout:         c.BreakerOpenTimeout,
		HalfOpenRequests:    c.BreakerHalfOpenRequests,
	}
}

// Validate reports the first invalid setting by its variable name.
func (c ClientConfig) Validate() error {
	switch {
	case c.CallTimeout <= 0:
		return fmt.Errorf("CALL_TIMEOUT %s: want a positive duration", c.CallTimeout)
	case c.BreakerConsecutiveFailures == 0:
		return errors.New("BREAKER_CONSECUTIVE_FAILURES: want at least 1")
	case c.BreakerFailureRatio < 0 || c.BreakerFailureRatio > 1:
		return fmt.Errorf("BREAKER_FAILURE_RATIO %v: want 0 to 1", c.BreakerFailureRatio)
	case c.BreakerInterval <= 0:
		return fmt.Errorf("BREAKER_INTERVAL %s: want a positive duration", c.BreakerInterval)
	case c.BreakerOpenTimeout <= 0:
		return fmt.Errorf("BREAKER_OPEN_TIMEOUT %s: want a positive duration", c.BreakerOpenTimeout)
	case c.BreakerHalfOpenRequests == 0:
		return errors.New("BREAKER_HALF_OPEN_REQUESTS: want at least 1")
	}
	return nil
}

// ValidAddr checks a listen address setting, naming the variable.
func ValidAddr(name, addr string) error { return validAddr(name, addr) }

func validAddr(name, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s %q: want host:port (e.g. 127.0.0.1:9030 or :9030): %w", name, addr, err)
	}
	return nil
}

// ValidTarget checks a gRPC target setting such as consul:///payments, dns:///payments:9030 or
// 127.0.0.1:9030.
func ValidTarget(name, target string) error {
	if target == "" {
		return fmt.Errorf("%s: required (e.g. consul:///payments or dns:///payments.shop.svc.cluster.local:9030)", name)
	}
	if u, err := url.Parse(target); err == nil && u.Scheme != "" && u.Opaque == "" {
		switch u.Scheme {
		case "consul", "dns", "xds", "passthrough", "unix":
			return nil
		}
		return fmt.Errorf("%s %q: unknown scheme %q (want consul, dns or xds)", name, target, u.Scheme)
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return fmt.Errorf("%s %q: want a scheme:/// target or host:port", name, target)
	}
	return nil
}
