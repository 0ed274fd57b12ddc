package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshplane.dev/mesh/devkit/runtest"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
)

// run with a fake environment serves products on GRPC_ADDR, reports ready on ADMIN_ADDR, and returns
// nil when its context ends, as on SIGTERM.
func TestRunServesAndDrains(t *testing.T) {
	addrs := runtest.Addrs(t, 2)
	p := runtest.Start(t, run, runtest.Env{"GRPC_ADDR": addrs[0], "ADMIN_ADDR": addrs[1], "LOG_LEVEL": "warn"})
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	product, err := catalogv1.NewCatalogServiceClient(conn).GetProduct(context.Background(), &catalogv1.GetProductRequest{Id: "moka-pot"})
	if err != nil || product.GetPriceCents() <= 0 {
		t.Errorf("GetProduct(moka-pot) = %v, %v; want a priced product", product, err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("run returned %v after its context ended, want nil\noutput:\n%s", err, p.Output())
	}
}

func TestRunRejectsBadSettingsNamingThem(t *testing.T) {
	for env, want := range map[string]string{"CACHE_TTL": "banana", "GRPC_ADDR": "no-port"} {
		err := run(context.Background(), nil, runtest.Env{env: want}.Getenv, &strings.Builder{}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%q: run returned %v, want an error naming %s", env, want, err, env)
		}
	}
}

func TestRunConfigDocListsEverySetting(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), []string{"-config-doc"}, runtest.Env{}.Getenv, &out, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"GRPC_ADDR", "CACHE_TTL", "ADMIN_ADDR", "XDS_SERVER"} {
		if !strings.Contains(out.String(), "`"+v+"`") {
			t.Errorf("-config-doc does not list %s:\n%s", v, out.String())
		}
	}
}
