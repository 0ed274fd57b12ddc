package dashboards_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshplane.dev/dashboards/internal/dashboardtest"
	"meshplane.dev/dashboards/signal"
	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
)

// shopScrapeConfig scrapes every service registered in Consul on its admin port (the metrics_port
// meta key of its registration) and labels its series with service = the Consul service name, as the
// dashboards expect; the same configuration works for `make up`.
const shopScrapeConfig = `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - meshplane-rules.yaml
scrape_configs:
  - job_name: shop
    consul_sd_configs:
      - server: %s
    relabel_configs:
      - source_labels: [__meta_consul_service_metadata_metrics_port]
        regex: .+
        action: keep
      - source_labels: [__meta_consul_address, __meta_consul_service_metadata_metrics_port]
        separator: ":"
        target_label: __address__
      - source_labels: [__meta_consul_service_metadata_metrics_path]
        regex: (.+)
        target_label: __metrics_path__
      - source_labels: [__meta_consul_service]
        target_label: service
`

// TestAppPanelsOnRealShop starts the shop's five services as real processes (discovery through a real
// Consul, logs to a real Loki, orders, payments and fulfillment keeping their state in a real PostgreSQL,
// orders' events reaching fulfillment through a real NATS JetStream), a real
// Prometheus scraping them with the generated rules loaded, and
// loadgen driving traffic while payments fails half its charges, so errors, 5xx and an opening and
// closing breaker are real. Every panel query that reads the services' own metrics (or the SLO series
// recorded from them) must return data — each operand of an "or" on its own — and so must every LogQL
// query on the services' logs.
func TestAppPanelsOnRealShop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the shop")
	}
	began := time.Now()
	bin := dashboardtest.BuildServices(t, "catalog", "payments", "orders", "fulfillment", "gateway", "loadgen")
	t.Logf("services built in %s", time.Since(began).Round(time.Millisecond))

	consul := devservertest.Consul(t)
	loki := devservertest.Loki(t)
	pg := devservertest.Postgres(t, "orders", "payments", "fulfillment")
	broker := devservertest.NATS(t)
	ports, err := devserver.FreePorts(11)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	env := func(admin string, extra ...string) map[string]string {
		e := map[string]string{
			"ADMIN_ADDR": admin, "NAMESPACE": "shop", "LOG_LEVEL": "info",
			"CONSUL_HTTP_ADDR": consul.Addr, "CONSUL_REGISTER": "true", "CONSUL_CHECK_INTERVAL": "500ms",
			"LOKI_URL": loki.URL(), "LOG_BATCH_WAIT": "200ms",
			// Breakers that open after three failures in a row and probe again after a second.
			"BREAKER_CONSECUTIVE_FAILURES": "3", "BREAKER_FAILURE_RATIO": "0", "BREAKER_OPEN_TIMEOUT": "1s",
			"NATS_URL": broker.ClientURL(),
		}
		for i := 0; i < len(extra); i += 2 {
			e[extra[i]] = extra[i+1]
		}
		return e
	}
	services := []*devserver.Server{
		devservertest.Service(t, filepath.Join(bin, "catalog"), env(addr(1), "GRPC_ADDR", addr(0))),
		// Half of all charges fail with Unavailable: orders' breaker opens and closes, orders fail, the
		// gateway answers 503.
		devservertest.Service(t, filepath.Join(bin, "payments"), env(addr(3), "GRPC_ADDR", addr(2),
			"FAULTS", `[{"target":"Charge","errorRate":0.5}]`,
			"DATABASE_URL", pg.URL("payments"), "DATABASE_PASSWORD", pg.Password)),
		devservertest.Service(t, filepath.Join(bin, "orders"), env(addr(5), "GRPC_ADDR", addr(4),
			"CATALOG_TARGET", "consul:///catalog", "PAYMENTS_TARGET", "consul:///payments",
			"DATABASE_URL", pg.URL("orders"), "DATABASE_PASSWORD", pg.Password)),
		devservertest.Service(t, filepath.Join(bin, "fulfillment"), env(addr(10), "GRPC_ADDR", addr(9),
			"CONSUMER_LAG_INTERVAL", "500ms", "DATABASE_URL", pg.URL("fulfillment"), "DATABASE_PASSWORD", pg.Password)),
		devservertest.Service(t, filepath.Join(bin, "gateway"), env(addr(7), "HTTP_ADDR", addr(6),
			"CATALOG_TARGET", "consul:///catalog", "ORDERS_TARGET", "consul:///orders", "FULFILLMENT_TARGET", "consul:///fulfillment")),
	}
	gatewayURL := "http://" + addr(6)
	wait.For(t, 60*time.Second, func() error {
		for _, p := range services {
			if done, err := p.Exited(); done {
				t.Fatalf("%s exited: %v\n%s", p.Name, err, p.LogTail(2000))
			}
		}
		resp, err := http.Get(gatewayURL + "/v1/products")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v1/products: %s", resp.Status)
		}
		return nil
	})

	rulesYAML, err := os.ReadFile(dashboardtest.RulesFile())
	if err != nil {
		t.Fatal(err)
	}
	prom := devservertest.Prometheus(t, 0, fmt.Appendf(nil, shopScrapeConfig, consul.Addr),
		map[string][]byte{"meshplane-rules.yaml": rulesYAML})
	api := dashboardtest.Prom{URL: prom.URL()}
	t.Logf("shop, Consul, Loki and Prometheus up in %s", time.Since(began).Round(time.Millisecond))

	loadStart := time.Now()
	loadgen := devservertest.Service(t, filepath.Join(bin, "loadgen"), map[string]string{
		"TARGET_URL": gatewayURL, "RATE": "25", "DURATION": "90s", "CONCURRENCY": "16",
		"SCENARIOS": "browse=3,product=2,order=3", "ADMIN_ADDR": addr(8), "LOKI_URL": loki.URL(), "SEED": "7",
	})

	// The queries that read only what the services export (and the SLO series recorded from it).
	files := dashboardtest.Load(t)
	// $__rate_interval is four scrape intervals (1s here), as Grafana computes it.
	given := map[string]string{"__rate_interval": "4s", "__interval": "1s", "__auto": "1m"}
	maps.Copy(given, singles)
	all, err := dashboardtest.PrometheusQueries(files, given)
	if err != nil {
		t.Fatal(err)
	}
	var pending []dashboardtest.Query
	for _, q := range all {
		if appLevel(q) {
			pending = append(pending, q)
		}
	}
	total := len(pending)
	if total == 0 {
		t.Fatal("no app-level queries found")
	}
	ctx := context.Background()
	deadline := 150 * time.Second
	wait.For(t, deadline, func() error {
		if done, err := loadgen.Exited(); done && err != nil {
			t.Fatalf("loadgen failed: %v\n%s", err, loadgen.LogTail(2000))
		}
		var still []dashboardtest.Query
		for _, q := range pending {
			n, err := api.QueryRange(ctx, q.Expr, loadStart, time.Now(), time.Second)
			if err != nil {
				t.Fatalf("%s: %v\n%s", q.Where, err, q.Expr)
			}
			if n == 0 {
				still = append(still, q)
			}
		}
		pending = still
		if len(pending) > 0 {
			var b strings.Builder
			for _, q := range pending {
				fmt.Fprintf(&b, "\n  %s: %s", q.Where, q.Expr)
			}
			return fmt.Errorf("%d of %d app-level queries still without data:%s", len(pending), total, b.String())
		}
		return nil
	})
	t.Logf("all %d app-level queries (operands of \"or\" included) returned data %s after load started",
		total, time.Since(loadStart).Round(time.Second))

	// The services' logs, through the Logs dashboard's LogQL.
	logQL := 0
	for _, f := range files {
		values, err := dashboardtest.Values(f.Dashboard, singles)
		if err != nil {
			t.Fatal(err)
		}
		targets, err := dashboardtest.Targets(f.Dashboard)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range targets {
			if tg.Datasource != "loki" {
				continue
			}
			expr, err := dashboardtest.Substitute(tg.Expr, values)
			if err != nil {
				t.Fatal(err)
			}
			logQL++
			wait.For(t, 30*time.Second, func() error {
				n, err := lokiQuery(loki.URL(), expr, time.Now(), tg.Instant)
				if err == nil && n == 0 {
					err = fmt.Errorf("%s returns no data from the services' logs: %s", tg, expr)
				}
				return err
			})
		}
	}
	t.Logf("all %d LogQL queries returned the services' log lines", logQL)
}

// appLevel reports whether q reads only the services' own metrics, Prometheus's up, or SLO series
// recorded from them.
func appLevel(q dashboardtest.Query) bool {
	for _, name := range q.Metrics {
		if strings.Contains(name, ":") {
			continue // recorded by the SLO rules
		}
		m, ok := signal.Lookup(name)
		if !ok || (m.Origin != signal.App && m.Origin != signal.Prometheus) {
			return false
		}
	}
	return len(q.Metrics) > 0
}
