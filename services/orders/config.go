package main

import (
	"fmt"
	"time"

	"meshplane.dev/mesh/events"
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
	EventsConfig          events.Config
	OutboxRelayInterval   time.Duration `env:"OUTBOX_RELAY_INTERVAL" help:"How often the outbox relay looks for events no request of this replica woke it for (another replica's, or left by a failed publish), and refreshes meshplane_outbox_pending. A replica's own orders wake it at once."`
	OutboxBatchSize       int           `env:"OUTBOX_BATCH_SIZE" help:"Most events one relay transaction locks (FOR UPDATE SKIP LOCKED) and publishes."`
	OutboxPublishTimeout  time.Duration `env:"OUTBOX_PUBLISH_TIMEOUT" help:"Longest the relay waits for the broker to acknowledge a batch; shorter than DATABASE_QUERY_TIMEOUT, which bounds the transaction holding the batch's row locks."`
	OutboxRetention       time.Duration `env:"OUTBOX_RETENTION" help:"How long sent events stay in the outbox table before they are pruned."`
	EventsStreamReplicas  int           `env:"EVENTS_STREAM_REPLICAS" help:"Servers of the NATS cluster that store the ORDERS stream, which the relay creates or updates: 3 in a cluster, 1 on one server."`
	EventsDuplicateWindow time.Duration `env:"EVENTS_DUPLICATE_WINDOW" help:"How long JetStream remembers an event id (Nats-Msg-Id) to drop a republished copy of it."`
	service.Config
}

// DefaultConfig returns the defaults: gRPC on 127.0.0.1:9020, admin on 127.0.0.1:9021, catalog and
// payments at their own defaults, the database orders on a PostgreSQL at 127.0.0.1:5432, the event
// broker (NATS) at 127.0.0.1:4222.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:       "127.0.0.1:9020",
		CatalogTarget:  "127.0.0.1:9010",
		PaymentsTarget: "127.0.0.1:9030",
		OrderLease:     5 * time.Second,
		ClientConfig:   service.DefaultClientConfig(),
		DatabaseConfig: pgstore.DefaultDatabaseConfig("postgres://orders@127.0.0.1:5432/orders?sslmode=disable"),
		Config:         service.DefaultConfig("127.0.0.1:9021"),

		EventsConfig:          events.DefaultConfig(),
		OutboxRelayInterval:   500 * time.Millisecond,
		OutboxBatchSize:       100,
		OutboxPublishTimeout:  time.Second,
		OutboxRetention:       24 * time.Hour,
		EventsStreamReplicas:  1,
		EventsDuplicateWindow: 10 * time.Minute,
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
	if err := c.EventsConfig.Validate(); err != nil {
		return err
	}
	switch {
	case c.OutboxRelayInterval <= 0:
		return fmt.Errorf("OUTBOX_RELAY_INTERVAL %s: want a positive duration", c.OutboxRelayInterval)
	case c.OutboxBatchSize < 1 || c.OutboxBatchSize > 10000:
		return fmt.Errorf("OUTBOX_BATCH_SIZE %d: want 1 to 10000", c.OutboxBatchSize)
	case c.OutboxPublishTimeout <= 0 || c.OutboxPublishTimeout >= c.DatabaseQueryTimeout:
		return fmt.Errorf("OUTBOX_PUBLISH_TIMEOUT %s: want a positive duration shorter than DATABASE_QUERY_TIMEOUT (%s)", c.OutboxPublishTimeout, c.DatabaseQueryTimeout)
	case c.OutboxRetention <= 0:
		return fmt.Errorf("OUTBOX_RETENTION %s: want a positive duration", c.OutboxRetention)
	case c.EventsStreamReplicas < 1 || c.EventsStreamReplicas > 5:
		return fmt.Errorf("EVENTS_STREAM_REPLICAS %d: want 1 to 5 (JetStream's limit)", c.EventsStreamReplicas)
	case c.EventsDuplicateWindow <= 0:
		return fmt.Errorf("EVENTS_DUPLICATE_WINDOW %s: want a positive duration", c.EventsDuplicateWindow)
	}
	return c.Config.Validate()
}
