// Package devservertest starts real Consul, Prometheus, Loki, PostgreSQL, NATS and istiod servers, and the shop's own
// binaries, for a test: on 127.0.0.1, free ports, a temporary data directory, stopped in t.Cleanup. A missing binary fails the
// test with the command that builds it.
package devservertest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
)

// Consul starts a Consul dev agent for the test.
func Consul(t testing.TB) *devserver.Server {
	t.Helper()
	return startT(t, func(ctx context.Context, o devserver.Options) (*devserver.Server, error) {
		return devserver.StartConsul(ctx, o)
	}, devserver.Options{})
}

// ConsulOnPort starts a Consul dev agent on a given HTTP port, e.g. to restart one where clients
// already point.
func ConsulOnPort(t testing.TB, port int) *devserver.Server {
	t.Helper()
	return startT(t, func(ctx context.Context, o devserver.Options) (*devserver.Server, error) {
		return devserver.StartConsul(ctx, o)
	}, devserver.Options{Port: port})
}

// Prometheus starts Prometheus with config for the test on port (0 picks a free one). files are written
// into its directory first (e.g. rule files the config names), keyed by file name.
func Prometheus(t testing.TB, port int, config []byte, files map[string][]byte) *devserver.Server {
	t.Helper()
	return startT(t, func(ctx context.Context, o devserver.Options) (*devserver.Server, error) {
		return devserver.StartPrometheus(ctx, o, config, files)
	}, devserver.Options{Port: port})
}

// Loki starts a single-binary Loki for the test.
func Loki(t testing.TB) *devserver.Server {
	t.Helper()
	return startT(t, devserver.StartLoki, devserver.Options{})
}

// Istiod starts istiod (pilot-discovery) for the test against the apiserver of kubeconfig, with
// devserver.DefaultMeshConfig. The namespace devserver.IstiodNamespace must exist.
func Istiod(t testing.TB, kubeconfig string) *devserver.Istiod {
	t.Helper()
	var d *devserver.Istiod
	startT(t, func(ctx context.Context, o devserver.Options) (*devserver.Server, error) {
		var err error
		if d, err = devserver.StartIstiod(ctx, o, kubeconfig, nil); err != nil {
			return nil, err
		}
		return d.Server, nil
	}, devserver.Options{})
	return d
}

// Run starts p for the test (see devserver.Run) and waits for p.Ready if it is set; its log tail is
// logged if the test fails.
func Run(t testing.TB, p devserver.Program) *devserver.Server {
	t.Helper()
	return startT(t, func(ctx context.Context, o devserver.Options) (*devserver.Server, error) {
		return devserver.Run(ctx, o, p)
	}, devserver.Options{})
}

// Service runs binary with env and nothing else from the test's environment (see devserver.Program's
// OnlyEnv), without waiting for it to serve.
func Service(t testing.TB, binary string, env map[string]string) *devserver.Server {
	t.Helper()
	var list []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		list = append(list, k+"="+env[k])
	}
	return Run(t, devserver.Program{Name: filepath.Base(binary), Bin: binary, Env: list, OnlyEnv: true})
}

func startT(t testing.TB, start func(context.Context, devserver.Options) (*devserver.Server, error), o devserver.Options) *devserver.Server {
	t.Helper()
	o.Dir = t.TempDir()
	o.ReadyTimeout = 90 * time.Second
	s, err := start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Stop()
		if t.Failed() {
			t.Logf("--- %s log tail ---\n%s", s.Name, s.LogTail(4000))
		}
	})
	return s
}

// NATS starts a NATS server with JetStream (file storage in the test's directory) for the test; it is
// stopped at cleanup, and its log tail is logged if the test fails.
func NATS(t testing.TB) *devserver.NATS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n, err := devserver.StartNATS(ctx, devserver.Options{Dir: t.TempDir(), ReadyTimeout: 90 * time.Second}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.Stop()
		if t.Failed() {
			t.Logf("--- nats log tail ---\n%s", n.LogTail(4000))
		}
	})
	return n
}

// Postgres starts a PostgreSQL dev server for the test, with databases dbs created; Close (stop and
// remove its data) runs at cleanup.
func Postgres(t testing.TB, dbs ...string) *devserver.Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := devserver.StartPostgres(ctx, devserver.Options{Dir: t.TempDir(), ReadyTimeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- postgres log tail ---\n%s", p.LogTail(4000))
		}
		_ = p.Close()
	})
	for _, db := range dbs {
		if err := p.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// MainWithPostgres runs a package's tests with one PostgreSQL dev server started first and stored in
// *pg, and stops it (removing its data) after them: call it from TestMain, and give each test a database
// of its own with PostgresDatabase. Starting a server per test costs an initdb each.
func MainWithPostgres(m *testing.M, pg **devserver.Postgres) int {
	dir, err := os.MkdirTemp("", "meshplane-postgres-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "postgres for the tests:", err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	*pg, err = devserver.StartPostgres(ctx, devserver.Options{Dir: dir, ReadyTimeout: 90 * time.Second})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "postgres for the tests:", err)
		return 1
	}
	defer func() { _ = (*pg).Close() }()
	return m.Run()
}

var databases atomic.Int64

// PostgresDatabase creates a database of the test's own on pg and returns its name; it is dropped when
// the test ends.
func PostgresDatabase(t testing.TB, pg *devserver.Postgres) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", databases.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pg.Connect(ctx, "postgres"); err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(ctx)
		}
	})
	return name
}
