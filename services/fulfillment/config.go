package main

import (
	"fmt"
	"time"

	"meshplane.dev/mesh/events"
	"meshplane.dev/mesh/pgstore"
	"meshplane.dev/mesh/service"
)

// Config is the fulfillment service's configuration.
type Config struct {
	GRPCAddr string `env:"GRPC_ADDR" help:"Listen address of the gRPC server (FulfillmentService, grpc.health.v1)."`
	service.GRPCServerConfig
	pgstore.DatabaseConfig
	EventsConfig          events.Config
	ConsumerName          string        `env:"CONSUMER_NAME" help:"Name of the durable JetStream consumer every replica shares (each event goes to one replica); its dead-letter subject is deadletter.<name>.orders.placed."`
	ConsumerMaxInFlight   int           `env:"CONSUMER_MAX_IN_FLIGHT" help:"Most events this replica holds at once (pulled, not yet acknowledged), each processed concurrently."`
	ConsumerMaxAckPending int           `env:"CONSUMER_MAX_ACK_PENDING" help:"Most events all replicas together hold unacknowledged: the broker delivers no more until some are acknowledged."`
	ConsumerMaxDeliveries int           `env:"CONSUMER_MAX_DELIVERIES" help:"Deliveries an event gets: when the last one fails too, the event goes to the dead-letter subject with the reason, and the others carry on."`
	ConsumerAckWait       time.Duration `env:"CONSUMER_ACK_WAIT" help:"How long the broker waits for a replica to acknowledge an event before delivering it again (to any replica): how soon the events of a replica that died are processed by the others."`
	ConsumerRetryDelay    time.Duration `env:"CONSUMER_RETRY_DELAY" help:"Delay before an event whose processing failed is delivered again; it doubles with each further failure, up to 30s."`
	ConsumerLagInterval   time.Duration `env:"CONSUMER_LAG_INTERVAL" help:"How often the consumer's state (pending, unacknowledged, oldest unacknowledged) is read from the broker for the lag metrics."`
	EventsStreamReplicas  int           `env:"EVENTS_STREAM_REPLICAS" help:"Servers of the NATS cluster that store the DEADLETTER stream, which fulfillment creates: 3 in a cluster, 1 on one server."`
	service.Config
}

// DefaultConfig returns the defaults: gRPC on 127.0.0.1:9040, admin on 127.0.0.1:9041, the database
// fulfillment on a PostgreSQL at 127.0.0.1:5432, the event broker (NATS) at 127.0.0.1:4222.
func DefaultConfig() Config {
	return Config{
		GRPCAddr:              "127.0.0.1:9040",
		DatabaseConfig:        pgstore.DefaultDatabaseConfig("postgres://fulfillment@127.0.0.1:5432/fulfillment?sslmode=disable"),
		EventsConfig:          events.DefaultConfig(),
		ConsumerName:          "fulfillment",
		ConsumerMaxInFlight:   16,
		ConsumerMaxAckPending: 256,
		ConsumerMaxDeliveries: 5,
		ConsumerAckWait:       30 * time.Second,
		ConsumerRetryDelay:    time.Second,
		ConsumerLagInterval:   2 * time.Second,
		EventsStreamReplicas:  1,
		Config:                service.DefaultConfig("127.0.0.1:9041"),
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
	if err := c.EventsConfig.Validate(); err != nil {
		return err
	}
	switch {
	case c.ConsumerName == "":
		return fmt.Errorf("CONSUMER_NAME: required")
	case c.ConsumerMaxInFlight < 1 || c.ConsumerMaxInFlight > 1000:
		return fmt.Errorf("CONSUMER_MAX_IN_FLIGHT %d: want 1 to 1000", c.ConsumerMaxInFlight)
	case c.ConsumerMaxAckPending < c.ConsumerMaxInFlight:
		return fmt.Errorf("CONSUMER_MAX_ACK_PENDING %d: want at least CONSUMER_MAX_IN_FLIGHT (%d)", c.ConsumerMaxAckPending, c.ConsumerMaxInFlight)
	case c.ConsumerMaxDeliveries < 1:
		return fmt.Errorf("CONSUMER_MAX_DELIVERIES %d: want at least 1", c.ConsumerMaxDeliveries)
	case c.ConsumerAckWait < time.Second:
		return fmt.Errorf("CONSUMER_ACK_WAIT %s: want at least 1s", c.ConsumerAckWait)
	case c.ConsumerRetryDelay <= 0:
		return fmt.Errorf("CONSUMER_RETRY_DELAY %s: want a positive duration", c.ConsumerRetryDelay)
	case c.ConsumerLagInterval <= 0:
		return fmt.Errorf("CONSUMER_LAG_INTERVAL %s: want a positive duration", c.ConsumerLagInterval)
	case c.EventsStreamReplicas < 1 || c.EventsStreamReplicas > 5:
		return fmt.Errorf("EVENTS_STREAM_REPLICAS %d: want 1 to 5 (JetStream's limit)", c.EventsStreamReplicas)
	}
	return c.Config.Validate()
}
