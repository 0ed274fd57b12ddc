package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"meshplane.dev/mesh/devkit/runtest"
)

// run with a fake environment serves the public API on HTTP_ADDR; with catalog unreachable a product
// listing is a 503 naming catalog, and run returns nil when its context ends.
func TestRunServesAndDrains(t *testing.T) {
	addrs := runtest.Addrs(t, 5) // gateway, its admin, and nothing listening at catalog's, orders' and fulfillment's
	p := runtest.Start(t, run, runtest.Env{"HTTP_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn",
		"CATALOG_TARGET": addrs[2], "ORDERS_TARGET": addrs[3], "FULFILLMENT_TARGET": addrs[4]})
	resp, err := http.Get("http://" + addrs[0] + "/v1/products")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Dependency string }
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Dependency != "catalog" {
		t.Errorf("GET /v1/products with catalog down: got %d %s, want 503 naming catalog", resp.StatusCode, body)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after its context ended, want nil\noutput:\n%s", err, p.Output())
	}
}

func TestRunRejectsBadSettingsNamingThem(t *testing.T) {
	for name, env := range map[string]runtest.Env{
		"HTTP_ADDR":          {"HTTP_ADDR": "8080"},
		"ORDERS_TARGET":      {"ORDERS_TARGET": "ftp://orders"},
		"FULFILLMENT_TARGET": {"FULFILLMENT_TARGET": "ftp://fulfillment"},
		"CALL_TIMEOUT":       {"CALL_TIMEOUT": "-1s"},
		"LOKI_URL":           {"LOKI_URL": "loki:3100"},
	} {
		err := run(context.Background(), nil, env.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: run returned %v, want an error naming %s", env, err, name)
		}
	}
}
