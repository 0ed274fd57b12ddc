package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/health"
	"meshplane.dev/mesh/pgstore"
)

// shared is the PostgreSQL of the tests that do not stop theirs (TestMain); each has a database of its own.
var shared *devserver.Postgres

func TestMain(m *testing.M) { os.Exit(devservertest.MainWithPostgres(m, &shared)) }

var migrations = fstest.MapFS{
	"0001_notes.sql":  {Data: []byte("CREATE TABLE notes (id text PRIMARY KEY, body text NOT NULL)")},
	"0002_author.sql": {Data: []byte("ALTER TABLE notes ADD COLUMN author text NOT NULL DEFAULT ''")},
}

func config(pg *devserver.Postgres, db string) pgstore.DatabaseConfig {
	cfg := pgstore.DefaultDatabaseConfig(pg.URL(db))
	cfg.DatabasePassword = pg.Password
	cfg.DatabaseProbeInterval = 100 * time.Millisecond
	cfg.DatabaseStartTimeout = 20 * time.Second
	return cfg
}

type opened struct {
	*pgstore.Store
	reg    *prometheus.Registry
	health *health.Health
}

func open(t *testing.T, cfg pgstore.DatabaseConfig, fsys fstest.MapFS) (*opened, error) {
	t.Helper()
	o := &opened{reg: prometheus.NewRegistry(), health: health.New()}
	o.health.SetReady()
	s, err := pgstore.Open(context.Background(), cfg, pgstore.Options{Component: "notes", Migrations: fsys,
		Operations: []string{"insert"}, Logger: slog.New(slog.DiscardHandler), Registry: o.reg, Health: o.health})
	if err != nil {
		return nil, err
	}
	o.Store = s
	t.Cleanup(s.Close)
	return o, nil
}

func (o *opened) metrics(t *testing.T) metricstest.Families {
	t.Helper()
	f, err := metricstest.Gather(o.reg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (o *opened) readyz() (int, string) {
	rec := httptest.NewRecorder()
	o.health.Readyz().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code, rec.Body.String()
}

// Replicas starting at once apply each migration once; a replica started later applies none.
func TestMigrationsApplyOnceAcrossReplicasStartingTogether(t *testing.T) {
	pg, db := shared, devservertest.PostgresDatabase(t, shared)
	cfg := config(pg, db)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = open(t, cfg, migrations) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("4 replicas starting at once: %v", err)
	}
	late, err := open(t, cfg, migrations)
	if err != nil || late.SchemaVersion() != 2 {
		t.Fatalf("a later replica: version %v, %v; want 2", late, err)
	}
	if diff := cmp.Diff([]string{"notes 1 notes", "notes 2 author"}, appliedMigrations(t, pg, db)); diff != "" {
		t.Errorf("meshplane_schema_migrations (-want +got):\n%s", diff)
	}
}

func appliedMigrations(t *testing.T, pg *devserver.Postgres, db string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pg.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	rows, err := conn.Query(ctx, "SELECT component || ' ' || version || ' ' || name FROM meshplane_schema_migrations ORDER BY component, version")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// A binary older than the schema refuses to start, saying so; a migration the database refuses stops
// the start at once and leaves nothing of itself behind.
func TestOpenRefusesNewerSchemaAndFailedMigration(t *testing.T) {
	pg, db := shared, devservertest.PostgresDatabase(t, shared)
	cfg := config(pg, db)
	if _, err := open(t, cfg, migrations); err != nil {
		t.Fatal(err)
	}
	older := fstest.MapFS{"0001_notes.sql": migrations["0001_notes.sql"]}
	_, err := open(t, cfg, older)
	var tooNew *pgstore.SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.DatabaseVersion != 2 || tooNew.KnownVersion != 1 ||
		!strings.Contains(err.Error(), "schema is at version 2, newer than this binary knows (1)") {
		t.Errorf("older binary: got %v, want a SchemaTooNewError at 2 knowing 1", err)
	}

	broken := fstest.MapFS{
		"0001_notes.sql":  migrations["0001_notes.sql"],
		"0002_author.sql": migrations["0002_author.sql"],
		"0003_broken.sql": {Data: []byte("CREATE TABLE half (id int); INSERT INTO no_such_table VALUES (1)")},
	}
	began := time.Now()
	_, err = open(t, cfg, broken)
	if err == nil || !strings.Contains(err.Error(), "migration 0003_broken") || !strings.Contains(err.Error(), "no_such_table") {
		t.Errorf("broken migration: got %v, want an error naming 0003_broken and its cause", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("broken migration failed after %s, want at once (no retry)", d)
	}
	ctx := context.Background()
	conn, err := pg.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var half *string
	if err := conn.QueryRow(ctx, "SELECT to_regclass('half')::text").Scan(&half); err != nil || half != nil {
		t.Errorf("table from the failed migration: got %v %v, want none (rolled back)", half, err)
	}
	if diff := cmp.Diff([]string{"notes 1 notes", "notes 2 author"}, appliedMigrations(t, pg, db)); diff != "" {
		t.Errorf("meshplane_schema_migrations after the failures (-want +got):\n%s", diff)
	}
}

func TestLoadMigrationsRejectsMisnamedAndGaps(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		`"notes.sql"`:                    {"notes.sql": {}},
		"want version 2":                 {"0001_a.sql": {}, "0003_c.sql": {}},
		`"0001_A.sql"`:                   {"0001_A.sql": {}},
		"no migrations found":            {},
		`"0001_a.sql.orig": want a file`: {"0001_a.sql": {}, "0001_a.sql.orig": {}},
	} {
		if _, err := pgstore.LoadMigrations(fsys); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: got %v, want an error containing %s", fsys, err, name)
		}
	}
}

// Start-up waits for a database that is not up yet, rather than failing the process at once.
func TestOpenWaitsForTheDatabase(t *testing.T) {
	pg := devservertest.Postgres(t, "shop")
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		_, err := open(t, config(pg, "shop"), migrations)
		started <- err
	}()
	time.Sleep(time.Second) // the database stays down for a while: the point of the test
	select {
	case err := <-started:
		t.Fatalf("Open returned %v while the database was down, want it to wait", err)
	default:
	}
	if err := pg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Open after the database came up: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Open still waiting 15s after the database came up")
	}
}

// With the database stopped, operations fail at once with Unavailable naming postgres, readiness fails
// naming it, and both recover by themselves once it is back; a query over its deadline is a
// DeadlineExceeded naming postgres, counted as a timeout.
func TestDatabaseDownFailsFastNamingItAndRecovers(t *testing.T) {
	pg := devservertest.Postgres(t, "shop")
	s, err := open(t, config(pg, "shop"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	insert := func(id string) error {
		return s.Tx(ctx, "insert", func(ctx context.Context, tx pgstore.DB) error {
			_, err := tx.Exec(ctx, "INSERT INTO notes (id, body) VALUES ($1, 'x')", id)
			return err
		})
	}
	if err := insert("before"); err != nil {
		t.Fatal(err)
	}
	if code, body := s.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz with the database up: %d %s", code, body)
	}

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	err = insert("during")
	took := time.Since(began)
	dep, _, _ := breaker.FailedDependency(err)
	if status.Code(err) != codes.Unavailable || dep != "postgres" || took > time.Second {
		t.Errorf("insert with the database down: got %v (dependency %q) after %s, want Unavailable naming postgres within 1s", err, dep, took)
	}
	wait.For(t, 5*time.Second, func() error {
		if code, body := s.readyz(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "dependency unreachable: postgres: ") {
			return fmt.Errorf("/readyz: %d %q, want 503 naming postgres", code, body)
		}
		if up := s.metrics(t).Value("meshplane_db_up", nil); up != 0 {
			return fmt.Errorf("meshplane_db_up %v, want 0", up)
		}
		return nil
	})

	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, func() error {
		if code, body := s.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %q, want 200 once the database is back", code, body)
		}
		return insert(fmt.Sprintf("after-%d", time.Now().UnixNano()))
	})
	var found bool
	err = s.Do(ctx, "insert", func(ctx context.Context, db pgstore.DB) error {
		return db.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM notes WHERE id = 'before')").Scan(&found)
	})
	if err != nil || !found {
		t.Errorf("row written before the outage: found %v, %v", found, err)
	}

	short := config(pg, "shop")
	short.DatabaseQueryTimeout = 200 * time.Millisecond
	slow, err := open(t, short, migrations)
	if err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	err = slow.Do(ctx, "insert", func(ctx context.Context, db pgstore.DB) error {
		_, err := db.Exec(ctx, "SELECT pg_sleep(5)")
		return err
	})
	took = time.Since(began)
	dep, _, _ = breaker.FailedDependency(err)
	if status.Code(err) != codes.DeadlineExceeded || dep != "postgres" || took > 2*time.Second {
		t.Errorf("query past its timeout: got %v (dependency %q) after %s, want DeadlineExceeded naming postgres at 200ms", err, dep, took)
	}
	if got := slow.metrics(t).Value("meshplane_db_query_duration_seconds", map[string]string{"operation": "insert", "result": "timeout"}); got != 1 {
		t.Errorf("timeouts counted: got %v, want 1", got)
	}
}

// Answers pass through unchanged and count as ok; a query the database refuses is Internal, not a
// dependency outage.
func TestErrorsOfTheServiceAndOfTheQuery(t *testing.T) {
	s, err := open(t, config(shared, devservertest.PostgresDatabase(t, shared)), migrations)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = s.Do(ctx, "insert", func(ctx context.Context, db pgstore.DB) error {
		var body string
		return db.QueryRow(ctx, "SELECT body FROM notes WHERE id = 'none'").Scan(&body)
	})
	if !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("no row: got %v, want pgx.ErrNoRows unchanged", err)
	}
	mine := status.Error(codes.AlreadyExists, "taken")
	if err := s.Do(ctx, "insert", func(context.Context, pgstore.DB) error { return mine }); err != mine { //nolint:errorlint // the very error
		t.Errorf("the service's own status: got %v, want it unchanged", err)
	}
	err = s.Do(ctx, "insert", func(ctx context.Context, db pgstore.DB) error {
		_, err := db.Exec(ctx, "INSERT INTO notes (id) VALUES ('no body')")
		return err
	})
	if _, _, named := breaker.FailedDependency(err); status.Code(err) != codes.Internal || named || !strings.Contains(err.Error(), "SQLSTATE 23502") {
		t.Errorf("refused query: got %v, want Internal with its SQLSTATE, not a dependency outage", err)
	}
	f := s.metrics(t)
	got := map[string]float64{}
	for _, r := range []string{"ok", "error", "timeout"} {
		got[r] = f.Value("meshplane_db_query_duration_seconds", map[string]string{"operation": "insert", "result": r})
	}
	if diff := cmp.Diff(map[string]float64{"ok": 2, "error": 1, "timeout": 0}, got); diff != "" {
		t.Errorf("operations by result (-want +got):\n%s", diff)
	}
}

// With one connection and two operations, the second waits, and the pool metrics show it.
func TestPoolSaturationIsVisible(t *testing.T) {
	cfg := config(shared, devservertest.PostgresDatabase(t, shared))
	cfg.DatabaseMaxConns = 1
	s, err := open(t, cfg, migrations)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hold, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.Do(ctx, "insert", func(context.Context, pgstore.DB) error {
			close(hold)
			<-release
			return nil
		})
	}()
	<-hold
	second := make(chan error, 1)
	go func() {
		second <- s.Do(ctx, "insert", func(ctx context.Context, db pgstore.DB) error {
			_, err := db.Exec(ctx, "SELECT 1")
			return err
		})
	}()
	wait.For(t, 5*time.Second, func() error {
		f := s.metrics(t)
		got := map[string]float64{
			"in_use":  f.Value("meshplane_db_pool_connections", map[string]string{"state": "in_use"}),
			"max":     f.Value("meshplane_db_pool_max_connections", nil),
			"waiting": f.Value("meshplane_db_pool_waiting", nil),
		}
		if diff := cmp.Diff(map[string]float64{"in_use": 1, "max": 1, "waiting": 1}, got); diff != "" {
			return fmt.Errorf("pool while saturated (-want +got):\n%s", diff)
		}
		return nil
	})
	close(release)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	f := s.metrics(t)
	if w := f.Value("meshplane_db_pool_waiting", nil); w != 0 {
		t.Errorf("waiting after release: %v, want 0", w)
	}
	if w := f.Value("meshplane_db_pool_waits_total", nil); w < 1 {
		t.Errorf("waits counted: %v, want at least 1", w)
	}
}

func TestConfigRejectsPasswordsInTheURLNamingTheVariable(t *testing.T) {
	for name, edit := range map[string]func(*pgstore.DatabaseConfig){
		"DATABASE_URL \"postgres://orders:xxxxx@db:5432/orders\" holds a password": func(c *pgstore.DatabaseConfig) { c.DatabaseURL = "postgres://orders:secret@db:5432/orders" },
		"DATABASE_URL \"mysql://db/orders\": want postgres://":                     func(c *pgstore.DatabaseConfig) { c.DatabaseURL = "mysql://db/orders" },
		"DATABASE_URL: required":                func(c *pgstore.DatabaseConfig) { c.DatabaseURL = "" },
		"DATABASE_MAX_CONNS 0: want 1 to 10000": func(c *pgstore.DatabaseConfig) { c.DatabaseMaxConns = 0 },
		"DATABASE_QUERY_TIMEOUT 0s":             func(c *pgstore.DatabaseConfig) { c.DatabaseQueryTimeout = 0 },
	} {
		cfg := pgstore.DefaultDatabaseConfig("postgres://orders@db:5432/orders")
		edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("got %v, want an error containing %s", err, name)
		}
		if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("the password leaked into the error: %v", err)
		}
	}
}
