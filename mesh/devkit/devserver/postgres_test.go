package devserver_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devservertest"
)

// A dev PostgreSQL accepts the superuser with its password only, keeps what was committed across a
// stop and a start on the same port, and leaves no data directory behind.
func TestPostgresKeepsDataAcrossRestartAndCleansUp(t *testing.T) {
	began := time.Now()
	pg := devservertest.Postgres(t, "shop")
	t.Logf("initdb and start: %s", time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pg.Connect(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')"); err != nil {
		t.Fatal(err)
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "meshplane" {
		t.Errorf("current_user: got %q %v, want meshplane", user, err)
	}
	_ = conn.Close(ctx)

	wrong := *pg
	wrong.Password = "not-the-password"
	if c, err := wrong.Connect(ctx, "shop"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("connect with a wrong password: got %v, want password authentication failed", err)
		if c != nil {
			_ = c.Close(ctx)
		}
	}

	began = time.Now()
	if err := pg.StopWithin(10 * time.Second); err != nil {
		t.Errorf("stop: %v (want a clean fast shutdown)", err)
	}
	if _, err := pg.Connect(ctx, "shop"); err == nil {
		t.Fatal("connected to a stopped server")
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop and start again: %s", time.Since(began).Round(time.Millisecond))
	conn, err = pg.Connect(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "before restart" {
		t.Errorf("after restart: got %q %v, want the row written before", v, err)
	}
	_ = conn.Close(ctx)

	if err := pg.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := os.Stat(pg.DataDir); !os.IsNotExist(err) {
		t.Errorf("data directory %s after Close: %v, want it removed", pg.DataDir, err)
	}
}
