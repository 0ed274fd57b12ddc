package dashboards_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"meshplane.dev/dashboards/internal/dashboardtest"
	"meshplane.dev/dashboards/slo"
	"meshplane.dev/mesh/devkit/wait"
)

// TestQueriesOnSyntheticMesh runs every Prometheus query of every dashboard — and both operands of
// every "or" on their own — against a real Prometheus holding an hour of synthetic series with the
// exact names and labels Istio's sidecars, Envoy's cluster stats (with proxyStatsMatcher), the shop
// services, the operator and the Consul sync export, with the generated rules loaded. Each must return
// data. The Istio and Envoy series stand in for a cluster this machine does not have; the services'
// own series are checked again against the real services in TestAppPanelsOnRealShop.
func TestQueriesOnSyntheticMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus")
	}
	end := time.Now().Truncate(15 * time.Second).Add(-30 * time.Second)
	om := syntheticMesh(end.Add(-70*time.Minute), end)
	rulesYAML, err := os.ReadFile(dashboardtest.RulesFile())
	if err != nil {
		t.Fatal(err)
	}
	config := []byte("global:\n  scrape_interval: 15s\n  evaluation_interval: 1s\nrule_files:\n  - meshplane-rules.yaml\n")
	started := time.Now()
	prom := dashboardtest.BackfilledPrometheus(t, om.Bytes(), config, map[string][]byte{"meshplane-rules.yaml": rulesYAML})
	t.Logf("%d synthetic series backfilled and Prometheus ready in %s", om.Series(), time.Since(started).Round(time.Millisecond))
	api := dashboardtest.Prom{URL: prom.URL()}

	files := dashboardtest.Load(t)
	queries, err := dashboardtest.PrometheusQueries(files, singles)
	if err != nil {
		t.Fatal(err)
	}
	// The rules' own expressions too: every SLI (Istio's included) must match the series it is meant for.
	queries = append(queries, recordingRuleQueries(t)...)

	ctx := context.Background()
	// Recorded SLO series appear with the first rule evaluation after start; raw series are there at once.
	wait.For(t, 60*time.Second, func() error {
		n, err := api.QueryRange(ctx, slo.ErrorRatioRecord("30d"), end.Add(-10*time.Minute), time.Now(), 15*time.Second)
		if err == nil && n < len(slo.All) {
			err = fmt.Errorf("%d of %d SLOs recorded", n, len(slo.All))
		}
		return err
	})
	empty := 0
	for _, q := range queries {
		n, err := api.QueryRange(ctx, q.Expr, end.Add(-10*time.Minute), time.Now(), 15*time.Second)
		if err != nil {
			t.Errorf("%s: %v\n%s", q.Where, err, q.Expr)
			continue
		}
		if n == 0 {
			empty++
			t.Errorf("%s returns no data\n%s", q.Where, q.Expr)
		}
	}
	for _, v := range variableSelectors(t, files) {
		n, err := api.Series(ctx, v.Expr, end.Add(-10*time.Minute), time.Now())
		if err != nil || n == 0 {
			t.Errorf("%s lists no values (%d series, %v): %s", v.Where, n, err, v.Expr)
		}
	}
	t.Logf("%d queries (%d of them operands of \"or\") returned data; %d empty", len(queries)-empty, countOr(queries), empty)
}

func countOr(qs []dashboardtest.Query) int {
	n := 0
	for _, q := range qs {
		if strings.Contains(q.Where, "operand") {
			n++
		}
	}
	return n
}

// recordingRuleQueries are the generated recording rules' expressions, each with its or-operands.
func recordingRuleQueries(t *testing.T) []dashboardtest.Query {
	t.Helper()
	var out []dashboardtest.Query
	for _, r := range generatedRules(t) {
		if r.Record == "" || strings.Contains(r.Expr, "30d") {
			continue // 30d rules read recorded series, checked through the dashboards
		}
		where := "rule " + r.Record + " " + r.Labels["slo"]
		out = append(out, dashboardtest.Query{Where: where, Expr: r.Expr})
		parsed, err := dashboardtest.Parse(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		for i, sides := range dashboardtest.OrSides(parsed) {
			for j, s := range sides {
				out = append(out, dashboardtest.Query{Where: fmt.Sprintf("%s, operand %d of \"or\" #%d", where, j+1, i+1), Expr: s})
			}
		}
	}
	return out
}

// variableSelectors are the series selectors of the Prometheus variables' label_values queries.
func variableSelectors(t *testing.T, files []dashboardtest.File) []dashboardtest.Query {
	t.Helper()
	var out []dashboardtest.Query
	for _, f := range files {
		values, err := dashboardtest.Values(f.Dashboard, singles)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range f.Dashboard.Templating.List {
			if v.Query == nil || v.Datasource == nil || deref(v.Datasource.Type) != "prometheus" {
				continue
			}
			sel, err := labelValuesSelector(deref(v.Query.String))
			if err != nil {
				t.Fatal(err)
			}
			if sel, err = dashboardtest.Substitute(sel, values); err != nil {
				t.Fatal(err)
			}
			out = append(out, dashboardtest.Query{Where: *f.Dashboard.Uid + " variable " + v.Name, Expr: sel})
		}
	}
	return out
}

// istioBuckets are Istio's default request-duration buckets, in milliseconds.
var istioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// latencyShares spreads requests over buckets: ~30% under 5ms, ~2% over 250ms.
func latencyShares(bounds []float64, scale float64) []float64 {
	out := make([]float64, len(bounds))
	for i, b := range bounds {
		out[i] = 1 - math.Exp(-b/scale)
	}
	return out
}

// syntheticMesh is an hour of the shop running in a mesh (metric and label names spelled out here, not
// taken from package signal, so a misspelt name there fails the test): gateway → catalog, gateway → orders,
// orders → catalog, orders → payments, all gRPC over sidecars with mutual TLS, a canary of orders at
// v2, some failures of every kind, and the operator and Consul sync at work.
func syntheticMesh(start, end time.Time) *dashboardtest.OpenMetrics {
	om := &dashboardtest.OpenMetrics{Start: start, End: end, Step: 15 * time.Second}
	target := func(service string) map[string]string {
		return map[string]string{"job": "kubernetes-pods", "instance": service + ".pod:15020", "service": service}
	}
	with := func(base map[string]string, kv ...string) map[string]string {
		out := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	const ns = "shop"
	type edge struct {
		src, dst string
		rps      float64
	}
	edges := []edge{{"gateway", "catalog", 20}, {"gateway", "orders", 4}, {"orders", "catalog", 4}, {"orders", "payments", 4}}
	for _, e := range edges {
		for _, rev := range []struct {
			name  string
			share float64
		}{{"v1", 0.9}, {"v2", 0.1}} {
			for _, reporter := range []string{"source", "destination"} {
				reporterService, security := e.src, "unknown"
				if reporter == "destination" {
					reporterService, security = e.dst, "mutual_tls"
				}
				labels := with(target(reporterService),
					"reporter", reporter,
					"source_workload", e.src, "source_workload_namespace", ns, "source_app", e.src, "source_version", "v1",
					"source_principal", "spiffe://cluster.local/ns/shop/sa/"+e.src,
					"source_canonical_service", e.src, "source_canonical_revision", "v1", "source_cluster", "Kubernetes",
					"destination_workload", e.dst+"-"+rev.name, "destination_workload_namespace", ns, "destination_app", e.dst,
					"destination_version", rev.name, "destination_principal", "spiffe://cluster.local/ns/shop/sa/"+e.dst,
					"destination_service", e.dst+".shop.svc.cluster.local", "destination_service_name", e.dst,
					"destination_service_namespace", ns, "destination_canonical_service", e.dst,
					"destination_canonical_revision", rev.name, "destination_cluster", "Kubernetes",
					"request_protocol", "grpc", "connection_security_policy", security)
				rps := e.rps * rev.share
				outcomes := []struct {
					code, grpc, flags string
					share             float64
					clientOnly        bool
				}{
					{"200", "0", "-", 0.95, false},
					{"200", "5", "-", 0.01, false},    // NotFound: the caller's mistake
					{"200", "14", "-", 0.02, false},   // Unavailable behind HTTP 200
					{"503", "14", "UC", 0.002, false}, // the app's connection reset mid-request: both proxies see it
					{"503", "14", "UH", 0.005, true},
					{"503", "14", "UO", 0.005, true},
					{"503", "14", "URX", 0.005, true},
					{"504", "4", "UT", 0.005, true},
				}
				for _, o := range outcomes {
					if o.clientOnly && reporter == "destination" {
						continue // the caller's proxy answered these itself
					}
					l := with(labels, "response_code", o.code, "grpc_response_status", o.grpc, "response_flags", o.flags)
					om.Counter("istio_requests_total", l, rps*o.share)
					om.Histogram("istio_request_duration_milliseconds", l, rps*o.share, istioBuckets, latencyShares(istioBuckets, 40))
				}
			}
		}
		// The caller's sidecar's Envoy cluster stats for the destination (proxyStatsMatcher inclusion).
		cluster := with(target(e.src), "cluster_name", "outbound|9090||"+e.dst+".shop.svc.cluster.local")
		om.Counter("envoy_cluster_upstream_rq_total", cluster, e.rps*1.05)
		om.Counter("envoy_cluster_upstream_rq_retry", cluster, e.rps*0.05)
		om.Counter("envoy_cluster_upstream_rq_retry_overflow", cluster, e.rps*0.005)
		om.Counter("envoy_cluster_upstream_rq_pending_overflow", cluster, e.rps*0.005)
		om.Gauge("envoy_cluster_outlier_detection_ejections_active", cluster, func(t float64) float64 { return float64(int(t/300) % 2) })
		om.Steps("envoy_cluster_outlier_detection_ejections_enforced_total", cluster, 2*time.Minute)
	}

	// The services' own metrics.
	secondsBuckets := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	gw := target("gateway")
	for _, r := range []struct{ route, method, code string }{
		{"GET /api/products", "GET", "200"}, {"POST /api/orders", "POST", "201"}, {"POST /api/orders", "POST", "400"},
		{"POST /api/orders", "POST", "503"}, {"GET /api/products/{id}", "GET", "404"},
	} {
		om.Histogram("http_server_request_duration_seconds", with(gw, "http_route", r.route, "http_request_method", r.method,
			"http_response_status_code", r.code), 2, secondsBuckets, latencyShares(secondsBuckets, 0.05))
	}
	grpcServices := map[string]string{"catalog": "meshplane.catalog.v1.Catalog", "orders": "meshplane.orders.v1.Orders", "payments": "meshplane.payments.v1.Payments"}
	codes := []struct {
		code  string
		share float64
	}{{"OK", 0.95}, {"NotFound", 0.02}, {"Unavailable", 0.03}}
	received := map[string]float64{}
	for _, e := range edges {
		received[e.dst] += e.rps
	}
	// A server's metrics do not say who called: one series per method and code, all callers together.
	for dst, rps := range received {
		method := with(target(dst), "grpc_type", "unary", "grpc_service", grpcServices[dst], "grpc_method", "Call")
		for _, c := range codes {
			om.Counter("grpc_server_handled_total", with(method, "grpc_code", c.code), rps*c.share)
		}
		om.Counter("grpc_server_started_total", method, rps)
		om.Histogram("grpc_server_handling_seconds", method, rps, secondsBuckets, latencyShares(secondsBuckets, 0.02))
	}
	for _, e := range edges {
		method := with(target(e.src), "grpc_type", "unary", "grpc_service", grpcServices[e.dst], "grpc_method", "Call")
		for _, c := range codes {
			om.Counter("grpc_client_handled_total", with(method, "grpc_code", c.code), e.rps*c.share)
		}
		om.Counter("grpc_client_started_total", method, e.rps)
		om.Histogram("grpc_client_handling_seconds", method, e.rps, secondsBuckets, latencyShares(secondsBuckets, 0.03))
		breaker := with(target(e.src), "name", e.dst)
		for _, st := range []string{"closed", "half_open", "open"} {
			state := st
			om.Gauge("meshplane_circuit_breaker_state", with(breaker, "state", state), func(t float64) float64 {
				// The orders → payments breaker cycles closed, open, half-open every 3 minutes.
				phase := "closed"
				if e.src == "orders" && e.dst == "payments" {
					phase = []string{"closed", "open", "half_open"}[int(t/60)%3]
				}
				if phase == state {
					return 1
				}
				return 0
			})
		}
		for _, tr := range [][2]string{{"closed", "open"}, {"open", "half_open"}, {"half_open", "closed"}} {
			om.Steps("meshplane_circuit_breaker_transitions_total", with(breaker, "from", tr[0], "to", tr[1]), 3*time.Minute)
		}
		for _, res := range []struct {
			result string
			share  float64
		}{{"success", 0.9}, {"failure", 0.05}, {"excluded", 0.01}, {"rejected_open", 0.03}, {"rejected_half_open", 0.01}} {
			om.Counter("meshplane_circuit_breaker_requests_total", with(breaker, "result", res.result), e.rps*res.share)
		}
	}
	for _, svc := range []string{"gateway", "catalog", "orders", "payments", "fulfillment"} {
		t := target(svc)
		om.Gauge("up", t, func(float64) float64 { return 1 })
		om.Gauge("meshplane_build_info", with(t, "version", "v0.1.0", "goversion", "go1.26.8"), func(float64) float64 { return 1 })
		for _, level := range []string{"debug", "info", "warn", "error"} {
			om.Counter("meshplane_log_lines_total", with(t, "level", level), 1)
		}
		om.Counter("meshplane_log_lines_dropped_total", with(t, "reason", "queue_full"), 0.1)
		om.Counter("meshplane_log_lines_dropped_total", with(t, "reason", "send_failed"), 0.05)
		om.Steps("meshplane_log_lines_dropped_total", with(t, "reason", "shutdown"), 20*time.Minute)
		om.Counter("meshplane_log_lines_sampled_out_total", t, 2)
		om.Gauge("meshplane_log_queue_length", t, func(t float64) float64 { return float64(int(t) % 50) })
	}
	for _, r := range []struct {
		result string
		rate   float64
	}{{"placed", 3.5}, {"rejected", 0.3}, {"payment_failed", 0.2}} {
		om.Counter("meshplane_orders_total", with(target("orders"), "result", r.result), r.rate)
	}
	om.Counter("meshplane_catalog_cache_lookups_total", with(target("catalog"), "result", "hit"), 20)
	om.Counter("meshplane_catalog_cache_lookups_total", with(target("catalog"), "result", "miss"), 4)
	for _, r := range []struct {
		result string
		rate   float64
	}{{"charged", 3.5}, {"duplicate", 0.1}, {"declined", 0.1}, {"failed", 0.2}} {
		om.Counter("meshplane_payments_charges_total", with(target("payments"), "result", r.result), r.rate)
	}

	// orders' and payments' databases (mesh/pgstore).
	for _, db := range []struct {
		service    string
		operations []string
	}{{"orders", []string{"create_order", "order_by_key", "mark_paid"}}, {"payments", []string{"insert_charge"}}} {
		t := target(db.service)
		for _, op := range db.operations {
			for _, r := range []struct {
				result string
				rate   float64
			}{{"ok", 3.5}, {"error", 0.05}, {"timeout", 0.01}} {
				om.Histogram("meshplane_db_query_duration_seconds", with(t, "operation", op, "result", r.result), r.rate,
					secondsBuckets, latencyShares(secondsBuckets, 0.002))
			}
		}
		for state, n := range map[string]float64{"in_use": 2, "idle": 6, "opening": 0} {
			om.Gauge("meshplane_db_pool_connections", with(t, "state", state), func(float64) float64 { return n })
		}
		om.Gauge("meshplane_db_pool_max_connections", t, func(float64) float64 { return 10 })
		om.Gauge("meshplane_db_pool_waiting", t, func(t float64) float64 { return float64(int(t/60) % 2) })
		om.Counter("meshplane_db_pool_waits_total", t, 0.1)
		om.Counter("meshplane_db_pool_wait_seconds_total", t, 0.002)
		om.Gauge("meshplane_db_up", t, func(float64) float64 { return 1 })
	}

	// The event flow: orders' outbox relay, the broker connections, fulfillment's consumer.
	ord, ful := target("orders"), target("fulfillment")
	om.Gauge("meshplane_outbox_pending", ord, func(t float64) float64 { return float64(int(t) % 20) })
	om.Gauge("meshplane_outbox_oldest_pending_age_seconds", ord, func(t float64) float64 { return float64(int(t)%20) / 10 })
	om.Counter("meshplane_outbox_published_total", with(ord, "result", "ok"), 3.5)
	om.Counter("meshplane_outbox_published_total", with(ord, "result", "error"), 0.01)
	om.Histogram("meshplane_outbox_publish_duration_seconds", ord, 3.5, secondsBuckets, latencyShares(secondsBuckets, 0.002))
	for _, t := range []map[string]string{ord, ful} {
		om.Gauge("meshplane_events_broker_connected", t, func(float64) float64 { return 1 })
	}
	cons := with(ful, "consumer", "fulfillment")
	for _, r := range []struct {
		result string
		rate   float64
	}{{"processed", 3.5}, {"duplicate", 0.05}, {"failed", 0.02}, {"dead_lettered", 0.001}} {
		om.Counter("meshplane_events_consumed_total", with(cons, "result", r.result), r.rate)
	}
	om.Counter("meshplane_events_redelivered_total", cons, 0.05)
	om.Histogram("meshplane_events_processing_duration_seconds", cons, 3.6, secondsBuckets, latencyShares(secondsBuckets, 0.005))
	om.Gauge("meshplane_events_consumer_pending", cons, func(t float64) float64 { return float64(int(t) % 10) })
	om.Gauge("meshplane_events_consumer_ack_pending", cons, func(t float64) float64 { return float64(int(t) % 5) })
	om.Gauge("meshplane_events_consumer_lag_seconds", cons, func(t float64) float64 { return float64(int(t)%10) / 10 })
	om.Histogram("meshplane_fulfillment_order_to_shipment_seconds", ful, 3.5, secondsBuckets, latencyShares(secondsBuckets, 0.05))

	// The operator.
	op := target("meshplane-operator")
	for _, ctrl := range []string{"trafficpolicy", "consulsync-to-consul"} {
		c := with(op, "controller", ctrl)
		om.Counter("controller_runtime_reconcile_total", with(c, "result", "success"), 1)
		om.Counter("controller_runtime_reconcile_total", with(c, "result", "error"), 0.05)
		om.Counter("controller_runtime_reconcile_total", with(c, "result", "requeue_after"), 0.2)
		om.Counter("controller_runtime_reconcile_errors_total", c, 0.05)
		om.Histogram("controller_runtime_reconcile_time_seconds", c, 1.25, secondsBuckets, latencyShares(secondsBuckets, 0.03))
		om.Gauge("workqueue_depth", with(c, "name", ctrl, "priority", ""), func(t float64) float64 { return float64(int(t/15) % 4) })
	}
	for _, c := range []struct{ condition, status, reason string }{
		{"Accepted", "True", "Accepted"}, {"Accepted", "False", "HostConflict"}, {"Accepted", "False", "TargetConflict"},
		{"Ready", "True", "Applied"}, {"Ready", "False", "ApplyFailed"}, {"Ready", "False", "NotAccepted"},
	} {
		om.Gauge("meshplane_trafficpolicies", with(op, "condition", c.condition, "status", c.status, "reason", c.reason),
			func(float64) float64 { return map[string]float64{"True": 5, "False": 1}[c.status] })
	}
	for _, reason := range []string{"HostConflict", "TargetConflict"} {
		om.Steps("meshplane_operator_conflicts_total", with(op, "reason", reason), 30*time.Second)
	}
	for _, kind := range []string{"VirtualService", "DestinationRule", "PeerAuthentication"} {
		om.Steps("meshplane_operator_apply_errors_total", with(op, "kind", kind), 30*time.Second)
		for _, o := range []string{"create", "update"} {
			om.Steps("meshplane_operator_writes_total", with(op, "kind", kind, "op", o), 30*time.Second)
		}
	}
	om.Histogram("meshplane_operator_reconcile_to_ready_seconds", op, 0.2, secondsBuckets, latencyShares(secondsBuckets, 0.5))
	for _, f := range []struct {
		severity, kind string
		n              float64
	}{{"warning", "Amplification", 1}, {"warning", "TimeoutBelowCallee", 0}, {"error", "NonIdempotentRetry", 0}, {"info", "RedundantRetries", 2}} {
		om.Gauge("meshplane_callgraph_findings", with(op, "severity", f.severity, "kind", f.kind), func(float64) float64 { return f.n })
	}
	// The canary of orders at v2 (the Istio series' 10%): at 10% for the first half hour, 25% since, its
	// checks passing every minute; a rollout of payments' v3 rolled back.
	for _, r := range []struct {
		policy, candidate, phase string
		weight                   func(float64) float64
	}{
		{"orders", "v2", "Progressing", func(t float64) float64 { return map[bool]float64{true: 10, false: 25}[t < 1800] }},
		{"payments", "v3", "RolledBack", func(float64) float64 { return 0 }},
	} {
		rollout := with(op, "policy_namespace", ns, "policy", r.policy, "target_service", r.policy, "candidate", r.candidate)
		om.Gauge("meshplane_canary_weight", rollout, r.weight)
		for _, phase := range []string{"Initialized", "Progressing", "Paused", "Promoted", "RolledBack"} {
			om.Gauge("meshplane_canary_phase", with(rollout, "phase", phase), func(float64) float64 { return map[bool]float64{true: 1}[phase == r.phase] })
		}
		om.Steps("meshplane_canary_checks_total", with(rollout, "result", "Passed"), time.Minute)
	}

	// The Consul sync.
	for _, dir := range []string{"to_consul", "to_istio"} {
		d := with(op, "direction", dir)
		om.Gauge("meshplane_consul_sync_services", d, func(float64) float64 { return 12 })
		for _, o := range []string{"register", "deregister"} {
			om.Steps("meshplane_consul_sync_writes_total", with(d, "op", o), 30*time.Second)
		}
		om.Steps("meshplane_consul_sync_errors_total", d, 30*time.Second)
		om.Histogram("meshplane_consul_sync_lag_seconds", d, 0.1, secondsBuckets, latencyShares(secondsBuckets, 1))
	}
	return om
}
