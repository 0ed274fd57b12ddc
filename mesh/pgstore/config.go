package pgstore

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DatabaseConfig holds a service's database settings. Services embed it in their own Config.
type DatabaseConfig struct {
	DatabaseURL string `env:"DATABASE_URL" help:"PostgreSQL connection URL without the password, e.g. postgres://orders@postgres.shop-db.svc.cluster.local:5432/orders?sslmode=require; libpq parameters (sslmode, sslrootcert, application_name...) go in the query string."`
	// DatabasePassword is a secret: read from the environment only (a Kubernetes Secret), never a flag
	// (visible in ps) nor part of DATABASE_URL (which is logged and shown in errors).
	DatabasePassword       string        `env:"DATABASE_PASSWORD" flag:"-" help:"Password of DATABASE_URL's user; from the environment only (in a cluster, a Secret), never a flag or part of the URL."`
	DatabaseMaxConns       int           `env:"DATABASE_MAX_CONNS" help:"Most connections the pool opens; a request waits for one beyond that (see meshplane_db_pool_waiting)."`
	DatabaseQueryTimeout   time.Duration `env:"DATABASE_QUERY_TIMEOUT" help:"Deadline of one database operation (a query or a transaction) when the request has none sooner."`
	DatabaseConnectTimeout time.Duration `env:"DATABASE_CONNECT_TIMEOUT" help:"Longest a new connection may take to open, TLS and authentication included."`
	DatabaseStartTimeout   time.Duration `env:"DATABASE_START_TIMEOUT" help:"How long start-up waits for the database to answer and its migrations to apply before the process exits with an error."`
	DatabaseProbeInterval  time.Duration `env:"DATABASE_PROBE_INTERVAL" help:"How often the database is probed on a connection of its own; readiness (/readyz) follows the probe."`
}

// DefaultDatabaseConfig returns the defaults, with databaseURL as DATABASE_URL.
func DefaultDatabaseConfig(databaseURL string) DatabaseConfig {
	return DatabaseConfig{
		DatabaseURL:            databaseURL,
		DatabaseMaxConns:       10,
		DatabaseQueryTimeout:   2 * time.Second,
		DatabaseConnectTimeout: 2 * time.Second,
		DatabaseStartTimeout:   60 * time.Second,
		DatabaseProbeInterval:  time.Second,
	}
}

// Validate reports the first invalid setting by its variable name.
func (c DatabaseConfig) Validate() error {
	if c.DatabaseURL == "" {
		return errors.New("DATABASE_URL: required (e.g. postgres://orders@127.0.0.1:5432/orders?sslmode=disable)")
	}
	u, err := url.Parse(c.DatabaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return fmt.Errorf("DATABASE_URL %q: want postgres://user@host:port/database", redact(c.DatabaseURL))
	}
	if _, set := u.User.Password(); set {
		return fmt.Errorf("DATABASE_URL %q holds a password: pass it in DATABASE_PASSWORD instead, so it stays out of logs and process lists", redact(c.DatabaseURL))
	}
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("DATABASE_URL %q: %w", c.DatabaseURL, err)
	}
	switch {
	case c.DatabaseMaxConns < 1 || c.DatabaseMaxConns > 10000:
		return fmt.Errorf("DATABASE_MAX_CONNS %d: want 1 to 10000", c.DatabaseMaxConns)
	case c.DatabaseQueryTimeout <= 0:
		return fmt.Errorf("DATABASE_QUERY_TIMEOUT %s: want a positive duration", c.DatabaseQueryTimeout)
	case c.DatabaseConnectTimeout <= 0:
		return fmt.Errorf("DATABASE_CONNECT_TIMEOUT %s: want a positive duration", c.DatabaseConnectTimeout)
	case c.DatabaseStartTimeout <= 0:
		return fmt.Errorf("DATABASE_START_TIMEOUT %s: want a positive duration", c.DatabaseStartTimeout)
	case c.DatabaseProbeInterval <= 0:
		return fmt.Errorf("DATABASE_PROBE_INTERVAL %s: want a positive duration", c.DatabaseProbeInterval)
	}
	return nil
}

// redact hides a password in a connection URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// poolConfig is the pgxpool configuration of c for component.
func (c DatabaseConfig) poolConfig(component string) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL %q: %w", c.DatabaseURL, err)
	}
	if c.DatabasePassword != "" {
		pc.ConnConfig.Password = c.DatabasePassword
	}
	pc.ConnConfig.ConnectTimeout = c.DatabaseConnectTimeout
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = component
	}
	pc.MaxConns = int32(c.DatabaseMaxConns) //nolint:gosec // Validate bounds it
	pc.MinConns = 0
	pc.MaxConnIdleTime = 5 * time.Minute
	pc.MaxConnLifetime = 30 * time.Minute
	pc.HealthCheckPeriod = 30 * time.Second
	return pc, nil
}
