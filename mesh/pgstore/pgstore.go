// Package pgstore connects a service to its PostgreSQL database: a pgx pool with a deadline on every
// operation, the service's versioned migrations (embedded in its binary) applied at start under an
// advisory lock so that replicas starting together apply each once, a refusal to run against a schema
// newer than the binary knows, readiness that follows a periodic probe of the database, metrics by
// operation and of the pool, and failures turned into gRPC errors that name the database — so the
// gateway answers 503 {"dependency":"postgres"} rather than a bare 500.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/health"
)

// Dependency is the name database failures carry: in gRPC errors (so in the gateway's 503), in
// /readyz and in logs.
const Dependency = "postgres"

// DB is what an operation queries through: a pooled connection, or a transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Options says what a service brings to its store.
type Options struct {
	// Component names the service's schema: its migrations' rows in meshplane_schema_migrations and
	// its advisory lock. Several components may share one database.
	Component string
	// Migrations holds the NNNN_what.sql files at its root (an embed.FS sub-tree).
	Migrations fs.FS
	// Operations are the operation names the service uses, so their series exist from the start.
	Operations []string
	Logger     *slog.Logger
	Registry   prometheus.Registerer
	// Health, when set, is not ready while the database does not answer the probe.
	Health *health.Health
}

// Store is a service's connection to its database.
type Store struct {
	pool      *pgxpool.Pool
	cfg       DatabaseConfig
	component string
	logger    *slog.Logger
	metrics   *metrics
	health    *health.Health
	version   int
	stopProbe context.CancelFunc
	probeDone chan struct{}
}

// Open connects to the database of cfg, waiting up to DATABASE_START_TIMEOUT for it to answer, applies
// the migrations it lacks and starts the probe. It fails at once, without retrying, when the database's
// schema is newer than the migrations (a *SchemaTooNewError) or a migration fails.
func Open(ctx context.Context, cfg DatabaseConfig, o Options) (*Store, error) {
	ms, err := LoadMigrations(o.Migrations)
	if err != nil {
		return nil, fmt.Errorf("%s migrations: %w", o.Component, err)
	}
	pc, err := cfg.poolConfig(o.Component)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	s := &Store{pool: pool, cfg: cfg, component: o.Component, health: o.Health,
		logger: o.Logger.With(slog.String("dependency", Dependency))}
	s.metrics = newMetrics(o.Registry, pool, o.Operations)

	where := describe(cfg.DatabaseURL)
	sctx, cancel := context.WithTimeout(ctx, cfg.DatabaseStartTimeout)
	defer cancel()
	began, backoff := time.Now(), 250*time.Millisecond
	for attempt := 1; ; attempt++ {
		applied, version, err := migrate(sctx, pool, o.Component, ms)
		if err == nil {
			s.version = version
			for _, m := range applied {
				s.logger.Info("migration applied", slog.Int("version", m.Version), slog.String("name", m.Name))
			}
			s.logger.Info("database ready", slog.String("database", where), slog.Int("schema_version", version),
				slog.Duration("waited", time.Since(began).Round(time.Millisecond)))
			break
		}
		var tooNew *SchemaTooNewError
		if errors.As(err, &tooNew) || !retryable(err) {
			pool.Close()
			return nil, fmt.Errorf("postgres at %s: %w", where, err)
		}
		if sctx.Err() != nil || ctx.Err() != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres at %s did not answer within DATABASE_START_TIMEOUT (%s): %w", where, cfg.DatabaseStartTimeout, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			s.logger.Warn("waiting for the database", slog.String("database", where), slog.Int("attempt", attempt), slog.String("error", err.Error()))
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-sctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	s.metrics.up.Set(1)
	if s.health != nil {
		s.health.SetDependency(Dependency, nil)
	}
	pctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopProbe, s.probeDone = stop, make(chan struct{})
	go s.probe(pctx, pc.ConnConfig)
	return s, nil
}

// SchemaVersion is the schema version the database was at once Open had migrated it.
func (s *Store) SchemaVersion() int { return s.version }

// Close stops the probe and closes every connection.
func (s *Store) Close() {
	if s.stopProbe != nil {
		s.stopProbe()
		<-s.probeDone
	}
	s.pool.Close()
}

// Do runs fn on a pooled connection within the query timeout (or the request's deadline if sooner),
// timed as operation op. fn's error comes back unchanged when it is a gRPC status error (the service's
// own answer) or wraps pgx.ErrNoRows; any other error is the database's, and becomes a gRPC error naming
// it: Unavailable when it is unreachable or shutting down, DeadlineExceeded when it ran out of time,
// Canceled when the caller went away, Internal for a query it refused.
func (s *Store) Do(ctx context.Context, op string, fn func(ctx context.Context, db DB) error) error {
	return s.run(ctx, op, func(ctx context.Context, conn *pgxpool.Conn) error { return fn(ctx, conn) })
}

// Tx runs fn in a transaction on a pooled connection, like Do: committed when fn returns nil, rolled
// back otherwise (and when the deadline passes first, so nothing is half-written).
func (s *Store) Tx(ctx context.Context, op string, fn func(ctx context.Context, tx DB) error) error {
	return s.run(ctx, op, func(ctx context.Context, conn *pgxpool.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return fn(ctx, tx) })
	})
}

func (s *Store) run(parent context.Context, op string, fn func(ctx context.Context, conn *pgxpool.Conn) error) error {
	began := time.Now()
	ctx, cancel := context.WithTimeout(parent, s.cfg.DatabaseQueryTimeout)
	defer cancel()
	s.metrics.waiting.Add(1)
	conn, err := s.pool.Acquire(ctx)
	s.metrics.waiting.Add(-1)
	if err == nil {
		err = fn(ctx, conn)
		conn.Release()
	}
	result, out := ResultOK, err
	if err != nil && !passThrough(err) {
		result, out = s.failure(parent, op, err)
	}
	s.metrics.duration.WithLabelValues(op, result).Observe(time.Since(began).Seconds())
	return out
}

// passThrough reports whether err is the service's own answer rather than a database failure.
func passThrough(err error) bool {
	if errors.Is(err, pgx.ErrNoRows) {
		return true
	}
	var st interface{ GRPCStatus() *status.Status }
	return errors.As(err, &st)
}

// failure turns a database error of operation op into the gRPC error the service returns, and the
// result label it is counted under.
func (s *Store) failure(parent context.Context, op string, err error) (string, error) {
	if parent.Err() != nil && errors.Is(parent.Err(), context.Canceled) {
		return ResultTimeout, status.Errorf(codes.Canceled, "%s: %s: request cancelled", Dependency, op)
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return ResultTimeout, breaker.DependencyError(codes.DeadlineExceeded, Dependency, breaker.ReasonUnavailable,
			fmt.Sprintf("%s: %s: no answer within the deadline (DATABASE_QUERY_TIMEOUT %s)", Dependency, op, s.cfg.DatabaseQueryTimeout))
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && !unavailableCode(pgErr.Code) {
		s.logger.Error("database refused a query", slog.String("operation", op), slog.String("sqlstate", pgErr.Code), slog.String("error", pgErr.Error()))
		return ResultError, status.Errorf(codes.Internal, "%s: %s: %s (SQLSTATE %s)", Dependency, op, pgErr.Message, pgErr.Code)
	}
	return ResultError, breaker.DependencyError(codes.Unavailable, Dependency, breaker.ReasonUnavailable,
		fmt.Sprintf("%s: %s: %v", Dependency, op, err))
}

// unavailableCode reports whether a SQLSTATE means the database cannot serve now, rather than that the
// query is wrong: connection exceptions (08), insufficient resources (53: too many connections, disk
// full), operator intervention (57: shutting down, starting up), and conflicts a retry resolves
// (40001 serialization failure, 40P01 deadlock).
func unavailableCode(code string) bool {
	return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "53") || strings.HasPrefix(code, "57") ||
		code == "40001" || code == "40P01"
}

// retryable reports whether waiting may cure a start-up failure: the database not answering yet, not
// a migration it refused.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return unavailableCode(pgErr.Code)
	}
	return true
}

// probe checks the database every DATABASE_PROBE_INTERVAL on a connection of its own — a saturated
// pool must not read as an unreachable database — and sets readiness and MetricUp from the answer.
func (s *Store) probe(ctx context.Context, cc *pgx.ConnConfig) {
	defer close(s.probeDone)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	reachable := true
	t := time.NewTicker(s.cfg.DatabaseProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, min(s.cfg.DatabaseProbeInterval, s.cfg.DatabaseQueryTimeout)+s.cfg.DatabaseConnectTimeout)
		var err error
		if conn == nil {
			conn, err = pgx.ConnectConfig(pctx, cc.Copy())
		}
		if err == nil {
			err = conn.Ping(pctx)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && conn != nil {
			_ = conn.Close(context.Background())
			conn = nil
		}
		switch {
		case err != nil && reachable:
			s.logger.Warn("database unreachable: not ready until it answers", slog.String("error", err.Error()))
		case err == nil && !reachable:
			s.logger.Info("database reachable again: ready")
		}
		reachable = err == nil
		if reachable {
			s.metrics.up.Set(1)
		} else {
			s.metrics.up.Set(0)
		}
		if s.health != nil {
			s.health.SetDependency(Dependency, err)
		}
	}
}

// describe names the database of a URL for messages: host:port/database, without user or password.
func describe(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable DATABASE_URL)"
	}
	return u.Host + u.Path
}
