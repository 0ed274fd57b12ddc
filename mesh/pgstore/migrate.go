package pgstore

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migration is one versioned step of a component's schema.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

var migrationFile = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// LoadMigrations reads the migrations of fsys's root directory, named NNNN_what_it_does.sql (0001_...),
// numbered from 1 without gaps. Any other file is an error: a misnamed migration must not be skipped.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		m := migrationFile.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			return nil, fmt.Errorf("migration %q: want a file named NNNN_what_it_does.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(".", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		v, _ := strconv.Atoi(m[1])
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(b)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: want version %d (versions start at 1 and leave no gap)", m.Version, m.Name, i+1)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations found")
	}
	return out, nil
}

// SchemaTooNewError is the refusal to run against a schema migrated by a newer binary: this one would
// not know what the newer migrations changed.
type SchemaTooNewError struct {
	Component       string
	DatabaseVersion int // the newest version applied to the database
	KnownVersion    int // the newest version this binary has
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("the database's %s schema is at version %d, newer than this binary knows (%d): "+
		"it was migrated by a newer release; run that release (or newer), or restore the database", e.Component, e.DatabaseVersion, e.KnownVersion)
}

// migrationsTable records the applied versions of every component sharing the database.
const migrationsTable = `CREATE TABLE IF NOT EXISTS meshplane_schema_migrations (
	component  text        NOT NULL,
	version    integer     NOT NULL,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (component, version)
)`

// lockKey is the advisory lock that serialises component's migrations across replicas starting at once.
func lockKey(component string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("meshplane.dev/pgstore/migrate/" + component))
	return int64(h.Sum64()) //nolint:gosec // a lock id: any 64 bits will do
}

// migrate applies the migrations the database lacks, each in its own transaction with its version row,
// holding the component's advisory lock so that replicas starting together apply each once. It returns
// the schema version the database is at.
func migrate(ctx context.Context, pool *pgxpool.Pool, component string, ms []Migration) (applied []Migration, version int, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Release()
	key := lockKey(component)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return nil, 0, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() {
		// A session lock: if this fails the connection is broken, and its end releases the lock.
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key); uerr != nil {
			conn.Conn().PgConn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing is the fallback
		}
	}()
	if _, err := conn.Exec(ctx, migrationsTable); err != nil {
		return nil, 0, fmt.Errorf("create meshplane_schema_migrations: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM meshplane_schema_migrations WHERE component = $1", component).Scan(&version); err != nil {
		return nil, 0, fmt.Errorf("read the schema version: %w", err)
	}
	if known := ms[len(ms)-1].Version; version > known {
		return nil, version, &SchemaTooNewError{Component: component, DatabaseVersion: version, KnownVersion: known}
	}
	for _, m := range ms[version:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO meshplane_schema_migrations (component, version, name) VALUES ($1, $2, $3)", component, m.Version, m.Name)
			return err
		})
		if err != nil {
			return applied, version, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		applied, version = append(applied, m), m.Version
	}
	return applied, version, nil
}
