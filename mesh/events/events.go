// Package events connects a service to the shop's event broker, NATS with JetStream: a connection that
// never gives up reconnecting (an outage of the broker is something the services ride out, not a reason
// to exit), logged when it drops and returns, and a gauge saying whether it is connected. Publishing
// (orders' outbox relay) and consuming (fulfillment) are the services' own.
package events

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Dependency is the name broker failures carry in logs.
const Dependency = "nats"

// MetricConnected is 1 while the process is connected to the broker; dashboards/signal declares it.
const MetricConnected = "meshplane_events_broker_connected"

// Config holds a service's broker settings. Services embed it in their own Config.
type Config struct {
	NATSURL           string        `env:"NATS_URL" help:"NATS server URL(s), comma-separated, e.g. nats://nats.shop-events.svc.cluster.local:4222; the client learns the rest of a cluster from the one it reaches."`
	NATSReconnectWait time.Duration `env:"NATS_RECONNECT_WAIT" help:"Pause between attempts to reach the broker while it is unreachable; attempts never stop."`
}

// DefaultConfig returns the defaults: a broker at 127.0.0.1:4222.
func DefaultConfig() Config {
	return Config{NATSURL: "nats://127.0.0.1:4222", NATSReconnectWait: time.Second}
}

// Validate reports the first invalid setting by its variable name.
func (c Config) Validate() error {
	if c.NATSURL == "" {
		return errors.New("NATS_URL: required (e.g. nats://127.0.0.1:4222)")
	}
	u, err := url.Parse(c.NATSURL)
	if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
		return fmt.Errorf("NATS_URL %q: want nats://host:port", c.NATSURL)
	}
	if c.NATSReconnectWait <= 0 {
		return fmt.Errorf("NATS_RECONNECT_WAIT %s: want a positive duration", c.NATSReconnectWait)
	}
	return nil
}

// Connect opens a connection named after the service to the broker of cfg. It returns at once, even
// when the broker is unreachable: the connection keeps trying every NATS_RECONNECT_WAIT, for ever, and
// what was published while it was down is the caller's to keep (nats.go buffers nothing here). The
// gauge MetricConnected in reg follows it.
func Connect(name string, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*nats.Conn, error) {
	logger = logger.With(slog.String("dependency", Dependency))
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricConnected,
		Help: "1 while this process is connected to the event broker (NATS), 0 while it is trying to reach it."})
	if err := reg.Register(connected); err != nil {
		return nil, fmt.Errorf("register %s: %w", MetricConnected, err)
	}
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.NATSReconnectWait),
		nats.ReconnectJitter(cfg.NATSReconnectWait/10, cfg.NATSReconnectWait/10),
		// Nothing is written while disconnected: a publish fails at once and the caller keeps it (the
		// outbox), rather than nats.go holding it in memory where a crash would lose it.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(c *nats.Conn) {
			connected.Set(1)
			logger.Info("event broker connected", slog.String("url", c.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			connected.Set(0)
			attrs := []any{}
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
			}
			logger.Warn("event broker disconnected: reconnecting", attrs...)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			connected.Set(1)
			logger.Info("event broker reconnected", slog.String("url", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{slog.String("error", err.Error())}
			if sub != nil {
				attrs = append(attrs, slog.String("subject", sub.Subject))
			}
			logger.Warn("event broker error", attrs...)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to %s at %s: %w", Dependency, cfg.NATSURL, err)
	}
	if nc.IsConnected() {
		connected.Set(1)
	} else {
		logger.Warn("event broker unreachable at start: trying in the background", slog.String("url", cfg.NATSURL))
	}
	return nc, nil
}
