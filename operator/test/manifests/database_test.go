package manifests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
)

// TestDevDatabaseInitServesTheServices runs the dev PostgreSQL's init script, as the image runs it on
// its first start, against a real PostgreSQL with the passwords the overlay ships. Then each service
// logs in with its Deployment's DATABASE_URL and the password its Secret holds, and may create tables
// in its own database (as its migrations do) but not enter the other's.
func TestDevDatabaseInitServesTheServices(t *testing.T) {
	objs := rendered(t, "dev").objs
	sts := find(t, objs, "StatefulSet", "shop-db", "postgres")
	volumes, _, _ := unstructured.NestedSlice(sts.Object, "spec", "template", "spec", "volumes")
	var initConfigMap string
	for _, v := range volumes {
		if name, _, _ := unstructured.NestedString(v.(map[string]any), "configMap", "name"); name != "" {
			initConfigMap = name
		}
	}
	script, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", "shop-db", initConfigMap).Object, "data", "10-shop-databases.sh")
	if script == "" {
		t.Fatalf("ConfigMap shop-db/%s has no 10-shop-databases.sh", initConfigMap)
	}
	creds := secretData(t, find(t, objs, "Secret", "shop-db", "postgres-credentials"))

	pg := devservertest.Postgres(t)
	binDir, err := devserver.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "10-shop-databases.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", path)
	cmd.Env = []string{"PATH=" + binDir + ":/usr/bin:/bin", "POSTGRES_USER=" + devserver.PostgresSuperuser,
		"PGHOST=127.0.0.1", "PGPORT=" + pg.Addr[strings.LastIndex(pg.Addr, ":")+1:], "PGPASSWORD=" + pg.Password,
		"ORDERS_DB_PASSWORD=" + creds["orders-password"], "PAYMENTS_DB_PASSWORD=" + creds["payments-password"],
		"FULFILLMENT_DB_PASSWORD=" + creds["fulfillment-password"]}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init script: %v\n%s", err, out)
	}

	for svc, other := range map[string]string{"orders": "payments", "payments": "fulfillment", "fulfillment": "orders"} {
		env := containerEnv(t, find(t, objs, "Deployment", "shop", svc))
		cfg, err := pgx.ParseConfig(env["DATABASE_URL"].(string))
		if err != nil {
			t.Fatalf("%s DATABASE_URL: %v", svc, err)
		}
		ref := env["DATABASE_PASSWORD"].(map[string]any)
		secret, _, _ := unstructured.NestedString(ref, "valueFrom", "secretKeyRef", "name")
		key, _, _ := unstructured.NestedString(ref, "valueFrom", "secretKeyRef", "key")
		cfg.Host, cfg.Port, cfg.Password = "127.0.0.1", uint16(pg.Port()), secretData(t, find(t, objs, "Secret", "shop", secret))[key]
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Errorf("%s logs in as %s to database %s: %v", svc, cfg.User, cfg.Database, err)
			continue
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE migration_probe (id int PRIMARY KEY)"); err != nil {
			t.Errorf("%s creates a table in %s: %v", svc, cfg.Database, err)
		}
		_ = conn.Close(ctx)
		cfg.Database = other
		if c, err := pgx.ConnectConfig(ctx, cfg); err == nil || !strings.Contains(err.Error(), "permission denied for database") {
			t.Errorf("%s enters database %s: %v, want permission denied", svc, other, err)
			if c != nil {
				_ = c.Close(ctx)
			}
		}
	}
}

// secretData is a Secret's values, from stringData (as the manifests write them) or data.
func secretData(t *testing.T, u *unstructured.Unstructured) map[string]string {
	t.Helper()
	out, _, err := unstructured.NestedStringMap(u.Object, "stringData")
	if err != nil || len(out) == 0 {
		t.Fatalf("%s: no stringData (%v)", ID(u), err)
	}
	return out
}

// containerEnv is the first container's env by name: a value string, or the whole entry when it has
// valueFrom.
func containerEnv(t *testing.T, u *unstructured.Unstructured) map[string]any {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	env, _, _ := unstructured.NestedSlice(containers[0].(map[string]any), "env")
	out := map[string]any{}
	for _, e := range env {
		m := e.(map[string]any)
		if v, ok := m["value"]; ok {
			out[m["name"].(string)] = v
		} else {
			out[m["name"].(string)] = m
		}
	}
	return out
}
