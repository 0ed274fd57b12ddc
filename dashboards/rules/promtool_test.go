package rules_test

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"go.yaml.in/yaml/v3"

	"meshplane.dev/dashboards/rules"
	"meshplane.dev/dashboards/slo"
)

var update = flag.Bool("update", false, "rewrite "+unitTestPath+" from the scenarios")

// unitTestPath is the promtool unit-test file: the scenarios below as input series and the alerts
// expected to fire, for `promtool test rules`. Regenerate it with go test ./rules -update.
const unitTestPath = "testdata/meshplane-rules.test.yaml"

// TestPromtoolTestRules runs every scenario through Prometheus's rule unit tester against the committed
// rule file: each alert fires when it should, at the time its for: allows, with its labels and texts,
// and stays silent otherwise.
func TestPromtoolTestRules(t *testing.T) {
	file := generate(t)
	scenarios := allScenarios()
	checkCoverage(t, file, scenarios)
	want, err := unitTests(file, scenarios)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(unitTestPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(unitTestPath)
	if err != nil {
		t.Fatalf("%v (create it with go test ./rules -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run go test ./rules -update", unitTestPath)
	}
	out, err := exec.Command(promtool(t), "test", "rules", unitTestPath).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", unitTestPath, err, out)
	}
	checks := 0
	for _, s := range scenarios {
		checks += len(s.checks)
	}
	t.Logf("%d scenarios, %d alert checks passed", len(scenarios), checks)
}

// scenario is input series and what the alerts must do with them.
type scenario struct {
	name   string
	series []inputSeries
	checks []check
}

// check says which alerts named alert are firing at time at: exactly these, none if firing is empty.
type check struct {
	at     string
	alert  string
	firing []firing
}

// firing is one expected alert: rule picks the rule among those named alike by its labels (e.g. slo and
// long_window), labels are those of the expression's result (all the annotation templates see; the
// rule's own labels are added after), value is its value for {{ $value }}.
type firing struct {
	rule   map[string]string
	labels map[string]string
	value  float64
}

// phase is traffic for a number of minutes: good and bad requests per minute.
type phase struct {
	minutes   int
	good, bad float64
}

// burn expects an SLO's burn-rate alert of the tier with the long window: the recorded series carry the
// SLO's labels.
func burn(s slo.SLO, long string) firing {
	return firing{rule: map[string]string{"slo": s.Name, "long_window": long}, labels: s.Labels()}
}

// absent expects an SLO's absent-metric alert: absent() returns the selector's equality matchers.
func absent(s slo.SLO) firing {
	labels := map[string]string{}
	for _, m := range s.SLI.Source.Matchers {
		if m.Op == "=" {
			labels[m.Label] = m.Value
		}
	}
	return firing{rule: map[string]string{"slo": s.Name}, labels: labels}
}

func sloNamed(name string) slo.SLO {
	for _, s := range slo.All {
		if s.Name == name {
			return s
		}
	}
	panic("no SLO " + name)
}

func allScenarios() []scenario {
	orders := sloNamed("orders-availability")
	payments := sloNamed("payments-availability")
	gatewayLatency := sloNamed("gateway-latency")
	meshOrders := sloNamed("orders-mesh-availability")
	var out []scenario

	// Every SLO's SLI, availability or latency, app metrics or Istio's, is proven by a fast burn.
	for _, s := range slo.All {
		out = append(out, scenario{
			name:   s.Name + ": 20% bad requests page within minutes, through the 1h/5m tier only",
			series: traffic(s, phase{20, 80, 20}),
			checks: []check{
				{at: "1m", alert: rules.AlertBurn},
				{at: "10m", alert: rules.AlertBurn, firing: []firing{burn(s, "1h")}},
			},
		})
	}
	out = append(out,
		scenario{
			name:   "orders-availability: 1% errors fire the 6h/30m tier after its 15 minutes, never the 1h tier",
			series: traffic(orders, phase{40, 99, 1}),
			checks: []check{
				{at: "10m", alert: rules.AlertBurn},
				{at: "30m", alert: rules.AlertBurn, firing: []firing{burn(orders, "6h")}},
			},
		},
		scenario{
			name:   "gateway-latency: 4% slow requests fire the 1d/2h ticket after an hour",
			series: traffic(gatewayLatency, phase{90, 96, 4}),
			checks: []check{
				{at: "50m", alert: rules.AlertBurn},
				{at: "80m", alert: rules.AlertBurn, firing: []firing{burn(gatewayLatency, "1d")}},
			},
		},
		scenario{
			name:   "orders-mesh-availability: 0.2% errors (gRPC Unavailable behind HTTP 200, and 503s) fire the 3d/6h ticket after three hours",
			series: traffic(meshOrders, phase{215, 99.8, 0.2}),
			checks: []check{
				{at: "3h", alert: rules.AlertBurn},
				{at: "3h30m", alert: rules.AlertBurn, firing: []firing{burn(meshOrders, "3d")}},
			},
		},
		scenario{
			name:   "orders-availability: the page stops five minutes after the errors, the slower tier keeps reporting",
			series: traffic(orders, phase{20, 80, 20}, phase{15, 100, 0}),
			checks: []check{
				{at: "19m", alert: rules.AlertBurn, firing: []firing{burn(orders, "1h"), burn(orders, "6h")}},
				{at: "30m", alert: rules.AlertBurn, firing: []firing{burn(orders, "6h")}},
			},
		},
		scenario{
			name:   "orders-availability: a one-minute spike after six quiet hours does not page",
			series: traffic(orders, phase{360, 100, 0}, phase{1, 50, 50}, phase{5, 100, 0}),
			checks: []check{
				{at: "363m", alert: rules.AlertBurn},
			},
		},
		scenario{
			name:   "payments-availability: a quiet service failing every request pages once 5 requests failed",
			series: traffic(payments, phase{40, 0, 0.2}),
			checks: []check{
				{at: "20m", alert: rules.AlertBurn},
				{at: "35m", alert: rules.AlertBurn, firing: []firing{burn(payments, "1h")}},
			},
		},
		scenario{
			name:   "payments-availability: one failed request on a quiet service does not page",
			series: traffic(payments, phase{30, 0.2, 0}, phase{1, 0, 1}, phase{10, 0.2, 0}),
			checks: []check{
				{at: "33m", alert: rules.AlertBurn},
				{at: "40m", alert: rules.AlertBurn},
			},
		},
	)

	// The absent guard: every SLI has its series except the gateway's.
	var present []inputSeries
	for _, s := range slo.All {
		if s.Service != "gateway" {
			present = append(present, traffic(s, phase{20, 100, 0})...)
		}
	}
	out = append(out, scenario{
		name:   "the gateway's SLOs are blind without its metric, the others are not",
		series: present,
		checks: []check{
			{at: "5m", alert: rules.AlertSLOAbsent},
			{at: "15m", alert: rules.AlertSLOAbsent, firing: []firing{absent(sloNamed("gateway-availability")), absent(sloNamed("gateway-latency"))}},
		},
	})

	alert := func(labels map[string]string) firing { return firing{labels: labels} }
	out = append(out,
		scenario{
			name: "a breaker that stays open or half-open for 5 minutes alerts, and clears once it closes",
			series: []inputSeries{
				{`meshplane_circuit_breaker_state{service="orders", name="payments", state="closed"}`, "1x10 0x19 1x10"},
				{`meshplane_circuit_breaker_state{service="orders", name="payments", state="open"}`, "0x10 1x4 0x1 1x4 0x1 1x8 0x10"},
				{`meshplane_circuit_breaker_state{service="gateway", name="catalog", state="closed"}`, "1x40"},
			},
			checks: []check{
				{at: "14m", alert: rules.AlertBreakerOpen},
				{at: "20m", alert: rules.AlertBreakerOpen, firing: []firing{alert(map[string]string{"service": "orders", "name": "payments"})}},
				{at: "40m", alert: rules.AlertBreakerOpen},
			},
		},
		scenario{
			name: "a controller failing 1 reconcile in 6 alerts after 15 minutes; one failing 1 in 20 does not",
			series: []inputSeries{
				{`controller_runtime_reconcile_total{controller="trafficpolicy", result="success"}`, "0+10x40"},
				{`controller_runtime_reconcile_total{controller="trafficpolicy", result="error"}`, "0+2x40"},
				{`controller_runtime_reconcile_errors_total{controller="trafficpolicy"}`, "0+2x40"},
				{`controller_runtime_reconcile_total{controller="consulsync", result="success"}`, "0+10x40"},
				{`controller_runtime_reconcile_total{controller="consulsync", result="error"}`, "0+0.5x40"},
				{`controller_runtime_reconcile_errors_total{controller="consulsync"}`, "0+0.5x40"},
			},
			checks: []check{
				{at: "10m", alert: rules.AlertReconcileErrors},
				{at: "30m", alert: rules.AlertReconcileErrors, firing: []firing{alert(map[string]string{"controller": "trafficpolicy"})}},
			},
		},
		scenario{
			name: "apply errors that keep coming alert; old ones do not",
			series: []inputSeries{
				{`meshplane_operator_apply_errors_total{kind="VirtualService"}`, "0+1x30"},
				{`meshplane_operator_apply_errors_total{kind="DestinationRule"}`, "3x30"},
			},
			checks: []check{
				{at: "5m", alert: rules.AlertApplyErrors},
				{at: "25m", alert: rules.AlertApplyErrors, firing: []firing{alert(map[string]string{"kind": "VirtualService"})}},
			},
		},
		scenario{
			name: "policies held back by a conflict alert with their number",
			series: []inputSeries{
				{`meshplane_trafficpolicies{condition="Accepted", status="False", reason="HostConflict"}`, "2x20"},
				{`meshplane_trafficpolicies{condition="Accepted", status="False", reason="TargetConflict"}`, "0x20"},
				{`meshplane_trafficpolicies{condition="Accepted", status="False", reason="ServiceNotFound"}`, "1x20"},
				{`meshplane_trafficpolicies{condition="Ready", status="True", reason="Applied"}`, "5x20"},
			},
			checks: []check{
				{at: "3m", alert: rules.AlertPolicyConflict},
				{at: "10m", alert: rules.AlertPolicyConflict, firing: []firing{{labels: map[string]string{"reason": "HostConflict"}, value: 2}}},
			},
		},
		scenario{
			name: "call-graph warnings and errors alert after 30 minutes by kind; info findings do not",
			series: []inputSeries{
				{`meshplane_callgraph_findings{severity="warning", kind="Amplification"}`, "2x60"},
				{`meshplane_callgraph_findings{severity="warning", kind="TimeoutBelowCallee"}`, "0x60"},
				{`meshplane_callgraph_findings{severity="error", kind="NonIdempotentRetry"}`, "0x10 1x50"},
				{`meshplane_callgraph_findings{severity="info", kind="RedundantRetries"}`, "4x60"},
			},
			checks: []check{
				{at: "20m", alert: rules.AlertCallGraph},
				{at: "35m", alert: rules.AlertCallGraph, firing: []firing{{labels: map[string]string{"kind": "Amplification"}, value: 2}}},
				{at: "45m", alert: rules.AlertCallGraph, firing: []firing{
					{labels: map[string]string{"kind": "Amplification"}, value: 2},
					{labels: map[string]string{"kind": "NonIdempotentRetry"}, value: 1},
				}},
			},
		},
		scenario{
			name: "a rolled-back canary alerts after a minute, until the policy changes; a progressing or promoted one does not",
			series: []inputSeries{
				{`meshplane_canary_phase{policy_namespace="shop", policy="payments", target_service="payments", candidate="v2", phase="Progressing"}`, "1x10 0x10 1x10"},
				{`meshplane_canary_phase{policy_namespace="shop", policy="payments", target_service="payments", candidate="v2", phase="RolledBack"}`, "0x10 1x10 0x10"},
				{`meshplane_canary_phase{policy_namespace="shop", policy="orders", target_service="orders", candidate="v3", phase="Promoted"}`, "1x30"},
				{`meshplane_canary_phase{policy_namespace="shop", policy="orders", target_service="orders", candidate="v3", phase="RolledBack"}`, "0x30"},
			},
			checks: []check{
				{at: "5m", alert: rules.AlertCanaryRolledBack},
				{at: "10m", alert: rules.AlertCanaryRolledBack},
				{at: "12m", alert: rules.AlertCanaryRolledBack, firing: []firing{{labels: map[string]string{
					"policy_namespace": "shop", "policy": "payments", "target_service": "payments", "candidate": "v2"}, value: 1}}},
				{at: "25m", alert: rules.AlertCanaryRolledBack},
			},
		},
		scenario{
			name: "a sync direction whose p99 lag is above 30s alerts after 10 minutes",
			series: append(lagBuckets("to_consul", map[string]string{"1": "0x30", "10": "0x30", "30": "0x30", "60": "0+10x30", "+Inf": "0+10x30"}),
				lagBuckets("to_istio", map[string]string{"1": "0+10x30", "10": "0+10x30", "30": "0+10x30", "60": "0+10x30", "+Inf": "0+10x30"})...),
			checks: []check{
				{at: "5m", alert: rules.AlertSyncLag},
				{at: "25m", alert: rules.AlertSyncLag, firing: []firing{alert(map[string]string{"direction": "to_consul"})}},
			},
		},
		scenario{
			name: "a sync direction that keeps failing alerts after 15 minutes",
			series: []inputSeries{
				{`meshplane_consul_sync_errors_total{direction="to_istio"}`, "0+1x30"},
				{`meshplane_consul_sync_errors_total{direction="to_consul"}`, "0x30"},
			},
			checks: []check{
				{at: "10m", alert: rules.AlertSyncErrors},
				{at: "25m", alert: rules.AlertSyncErrors, firing: []firing{alert(map[string]string{"direction": "to_istio"})}},
			},
		},
		scenario{
			name: "every instance of a service failing its database probe for 2 minutes alerts; one instance cut off does not",
			series: []inputSeries{
				{`meshplane_db_up{service="orders", instance="a"}`, "1x5 0x10 1x5"},
				{`meshplane_db_up{service="orders", instance="b"}`, "1x5 0x10 1x5"},
				{`meshplane_db_up{service="payments", instance="a"}`, "1x5 0x10 1x5"},
				{`meshplane_db_up{service="payments", instance="b"}`, "1x20"},
			},
			checks: []check{
				{at: "6m", alert: rules.AlertDBUnreachable},
				{at: "9m", alert: rules.AlertDBUnreachable, firing: []firing{alert(map[string]string{"service": "orders"})}},
				{at: "18m", alert: rules.AlertDBUnreachable},
			},
		},
		scenario{
			name: "a service with 10% of its database operations failing alerts after 5 minutes; one with 1% does not",
			series: []inputSeries{
				{`meshplane_db_query_duration_seconds_count{service="orders", operation="create_order", result="ok"}`, "0+90x30"},
				{`meshplane_db_query_duration_seconds_count{service="orders", operation="create_order", result="error"}`, "0+5x30"},
				{`meshplane_db_query_duration_seconds_count{service="orders", operation="create_order", result="timeout"}`, "0+5x30"},
				{`meshplane_db_query_duration_seconds_count{service="payments", operation="insert_charge", result="ok"}`, "0+99x30"},
				{`meshplane_db_query_duration_seconds_count{service="payments", operation="insert_charge", result="error"}`, "0+1x30"},
			},
			checks: []check{
				{at: "4m", alert: rules.AlertDBQueriesFailing},
				{at: "15m", alert: rules.AlertDBQueriesFailing, firing: []firing{alert(map[string]string{"service": "orders"})}},
			},
		},
		scenario{
			name: "a pool with every connection in use and operations waiting alerts after 10 minutes; a busy pool nobody waits on does not",
			series: []inputSeries{
				{`meshplane_db_pool_connections{service="orders", instance="a", state="in_use"}`, "10x30"},
				{`meshplane_db_pool_max_connections{service="orders", instance="a"}`, "10x30"},
				{`meshplane_db_pool_waits_total{service="orders", instance="a"}`, "0+20x30"},
				{`meshplane_db_pool_connections{service="payments", instance="a", state="in_use"}`, "10x30"},
				{`meshplane_db_pool_max_connections{service="payments", instance="a"}`, "10x30"},
				{`meshplane_db_pool_waits_total{service="payments", instance="a"}`, "3x30"},
			},
			checks: []check{
				{at: "8m", alert: rules.AlertDBPoolSaturated},
				{at: "20m", alert: rules.AlertDBPoolSaturated, firing: []firing{alert(map[string]string{"service": "orders"})}},
			},
		},
		scenario{
			name: "an outbox whose oldest event waits more than 2 minutes for 5 minutes alerts; a burst that drains does not",
			series: []inputSeries{
				// The broker down from minute 5: the oldest event ages a minute a minute; back at 20.
				{`meshplane_outbox_oldest_pending_age_seconds{service="orders", instance="a"}`, "0x5 0+60x14 0x10"},
				{`meshplane_outbox_oldest_pending_age_seconds{service="orders", instance="b"}`, "0x5 0+60x14 0x10"},
				// A burst: a long backlog, never old.
				{`meshplane_outbox_oldest_pending_age_seconds{service="billing", instance="a"}`, "0x5 3x10 0x15"},
			},
			checks: []check{
				{at: "9m", alert: rules.AlertOutboxBacklog},
				{at: "14m", alert: rules.AlertOutboxBacklog, firing: []firing{alert(map[string]string{"service": "orders"})}},
				{at: "25m", alert: rules.AlertOutboxBacklog},
			},
		},
		scenario{
			name: "every instance of a service disconnected from the broker for 5 minutes alerts; one instance reconnecting does not",
			series: []inputSeries{
				{`meshplane_events_broker_connected{service="orders", instance="a"}`, "1x5 0x10 1x5"},
				{`meshplane_events_broker_connected{service="orders", instance="b"}`, "1x5 0x10 1x5"},
				{`meshplane_events_broker_connected{service="fulfillment", instance="a"}`, "1x5 0x10 1x5"},
				{`meshplane_events_broker_connected{service="fulfillment", instance="b"}`, "1x20"},
			},
			checks: []check{
				{at: "8m", alert: rules.AlertBrokerUnreachable},
				{at: "12m", alert: rules.AlertBrokerUnreachable, firing: []firing{alert(map[string]string{"service": "orders"})}},
				{at: "18m", alert: rules.AlertBrokerUnreachable},
			},
		},
		scenario{
			name: "a consumer more than 2 minutes behind for 5 minutes alerts",
			series: []inputSeries{
				{`meshplane_events_consumer_lag_seconds{service="fulfillment", instance="a", consumer="fulfillment"}`, "0x5 0+30x20"},
				{`meshplane_events_consumer_lag_seconds{service="fulfillment", instance="b", consumer="fulfillment"}`, "0x5 0+30x20"},
			},
			checks: []check{
				{at: "12m", alert: rules.AlertConsumerLag},
				{at: "16m", alert: rules.AlertConsumerLag, firing: []firing{alert(map[string]string{"service": "fulfillment", "consumer": "fulfillment"})}},
			},
		},
		scenario{
			// As in the shop's test: a poison event fails its 3 deliveries, the last one dead-letters it.
			name: "a dead-lettered event alerts at once, and clears 15 minutes later",
			series: []inputSeries{
				{`meshplane_events_consumed_total{service="fulfillment", instance="a", consumer="fulfillment", result="processed"}`, "0+60x30"},
				{`meshplane_events_consumed_total{service="fulfillment", instance="a", consumer="fulfillment", result="failed"}`, "0x5 2x25"},
				{`meshplane_events_consumed_total{service="fulfillment", instance="a", consumer="fulfillment", result="dead_lettered"}`, "0x5 1x25"},
			},
			checks: []check{
				{at: "4m", alert: rules.AlertDeadLettered},
				{at: "8m", alert: rules.AlertDeadLettered, firing: []firing{alert(map[string]string{"service": "fulfillment", "consumer": "fulfillment"})}},
				{at: "25m", alert: rules.AlertDeadLettered},
			},
		},
		scenario{
			name: "log lines dropped on a full queue or a failed push alert; lines dropped at shutdown do not",
			series: []inputSeries{
				{`meshplane_log_lines_dropped_total{service="gateway", reason="queue_full"}`, "0+5x30"},
				{`meshplane_log_lines_dropped_total{service="payments", reason="send_failed"}`, "0+5x30"},
				{`meshplane_log_lines_dropped_total{service="orders", reason="shutdown"}`, "0+5x30"},
			},
			checks: []check{
				{at: "5m", alert: rules.AlertLogLinesDropped},
				{at: "25m", alert: rules.AlertLogLinesDropped, firing: []firing{
					alert(map[string]string{"service": "gateway"}), alert(map[string]string{"service": "payments"})}},
			},
		},
	)
	return out
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

// traffic is the series an SLO's SLI reads, as its exporter writes them, for the phases.
func traffic(s slo.SLO, phases ...phase) []inputSeries {
	good := counter(phases, func(p phase) float64 { return p.good })
	bad := counter(phases, func(p phase) float64 { return p.bad })
	all := counter(phases, func(p phase) float64 { return p.good + p.bad })
	half := counter(phases, func(p phase) float64 { return p.bad / 2 })
	svc := s.Service
	switch s.SLI.Source.Metric {
	case "http_server_request_duration_seconds_count":
		series := `http_server_request_duration_seconds_%s{service="` + svc + `", http_route="/api/orders", http_request_method="POST"%s}`
		if s.SLI.Kind == slo.Availability {
			return []inputSeries{
				{fmt.Sprintf(series, "count", `, http_response_status_code="201"`), good},
				{fmt.Sprintf(series, "count", `, http_response_status_code="503"`), bad},
			}
		}
		return []inputSeries{
			{fmt.Sprintf(series, "bucket", `, http_response_status_code="201", le="0.5"`), good},
			{fmt.Sprintf(series, "bucket", `, http_response_status_code="201", le="+Inf"`), all},
			{fmt.Sprintf(series, "count", `, http_response_status_code="201"`), all},
		}
	case "grpc_server_handled_total":
		series := `grpc_server_handled_total{service="` + svc + `", grpc_type="unary", grpc_service="meshplane.shop.v1.Shop", grpc_method="Call", grpc_code="%s"}`
		return []inputSeries{{fmt.Sprintf(series, "OK"), good}, {fmt.Sprintf(series, "Unavailable"), bad}}
	case "istio_requests_total":
		series := `istio_requests_total{reporter="destination", destination_service_name="` + svc + `", destination_service_namespace="` +
			slo.Namespace + `", request_protocol="grpc", response_code="%s", grpc_response_status="%s", response_flags="%s"}`
		// Half the failures are gRPC errors behind HTTP 200, half 503s from the proxy.
		return []inputSeries{
			{fmt.Sprintf(series, "200", "0", "-"), good},
			{fmt.Sprintf(series, "200", "14", "-"), half},
			{fmt.Sprintf(series, "503", "14", "UH"), half},
		}
	case "meshplane_fulfillment_order_to_shipment_seconds_count":
		// Prometheus 3 stores the bucket bound 5 as "5.0".
		series := `meshplane_fulfillment_order_to_shipment_seconds_%s{service="` + svc + `"%s}`
		return []inputSeries{
			{fmt.Sprintf(series, "bucket", `, le="5.0"`), good},
			{fmt.Sprintf(series, "bucket", `, le="+Inf"`), all},
			{fmt.Sprintf(series, "count", ""), all},
		}
	case "istio_request_duration_milliseconds_count":
		// Prometheus 3 stores the bucket bound 250 as "250.0".
		series := `istio_request_duration_milliseconds_%s{reporter="destination", destination_service_name="` + svc +
			`", destination_service_namespace="` + slo.Namespace + `", response_code="200"%s}`
		return []inputSeries{
			{fmt.Sprintf(series, "bucket", `, le="250.0"`), good},
			{fmt.Sprintf(series, "bucket", `, le="+Inf"`), all},
			{fmt.Sprintf(series, "count", ""), all},
		}
	}
	panic("no test traffic for the SLI of " + s.Name)
}

func lagBuckets(direction string, le map[string]string) []inputSeries {
	var out []inputSeries
	for _, b := range slices.Sorted(maps.Keys(le)) {
		out = append(out, inputSeries{fmt.Sprintf(`meshplane_consul_sync_lag_seconds_bucket{direction="%s", le="%s"}`, direction, b), le[b]})
	}
	return out
}

// counter writes a counter growing by perMinute(p) each minute of each phase, in promtool's expanding
// notation, one sample a minute from 0.
func counter(phases []phase, perMinute func(phase) float64) string {
	var parts []string
	v := 0.0
	for i, p := range phases {
		r := perMinute(p)
		if i == 0 {
			parts = append(parts, fmt.Sprintf("0+%sx%d", num(r), p.minutes))
		} else {
			parts = append(parts, fmt.Sprintf("%s+%sx%d", num(v+r), num(r), p.minutes-1))
		}
		v += r * float64(p.minutes)
	}
	return strings.Join(parts, " ")
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// The promtool unit-test file format.
type unitTestFile struct {
	RuleFiles          []string    `yaml:"rule_files"`
	EvaluationInterval string      `yaml:"evaluation_interval"`
	Tests              []testGroup `yaml:"tests"`
}

type testGroup struct {
	Name           string        `yaml:"name"`
	Interval       string        `yaml:"interval"`
	InputSeries    []inputSeries `yaml:"input_series"`
	AlertRuleTests []alertTest   `yaml:"alert_rule_test"`
}

type alertTest struct {
	EvalTime  string     `yaml:"eval_time"`
	Alertname string     `yaml:"alertname"`
	ExpAlerts []expAlert `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// unitTests renders the scenarios as a promtool unit-test file: expected labels and annotations come
// from the rule each firing alert names, with its templates expanded as Prometheus would.
func unitTests(file rules.File, scenarios []scenario) ([]byte, error) {
	u := unitTestFile{
		RuleFiles:          []string{"../../generated/prometheus/meshplane-rules.yaml"},
		EvaluationInterval: "1m",
	}
	for _, s := range scenarios {
		g := testGroup{Name: s.name, Interval: "1m", InputSeries: s.series}
		for _, c := range s.checks {
			at := alertTest{EvalTime: c.at, Alertname: c.alert, ExpAlerts: []expAlert{}}
			for _, f := range c.firing {
				r, err := findRule(file, c.alert, f.rule)
				if err != nil {
					return nil, fmt.Errorf("scenario %q: %w", s.name, err)
				}
				labels := maps.Clone(r.Labels)
				maps.Copy(labels, f.labels)
				ann := map[string]string{}
				for k, text := range r.Annotations {
					if ann[k], err = expand(text, f.labels, f.value); err != nil {
						return nil, fmt.Errorf("scenario %q: %s annotation %s: %w", s.name, c.alert, k, err)
					}
				}
				at.ExpAlerts = append(at.ExpAlerts, expAlert{ExpLabels: labels, ExpAnnotations: ann})
			}
			g.AlertRuleTests = append(g.AlertRuleTests, at)
		}
		u.Tests = append(u.Tests, g)
	}
	var buf bytes.Buffer
	buf.WriteString("# Generated by go test ./rules -update from the scenarios in rules/promtool_test.go. DO NOT EDIT.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(u); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func findRule(file rules.File, alert string, pick map[string]string) (rules.Rule, error) {
	var found []rules.Rule
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert != alert {
				continue
			}
			match := true
			for k, v := range pick {
				match = match && r.Labels[k] == v
			}
			if match {
				found = append(found, r)
			}
		}
	}
	if len(found) != 1 {
		return rules.Rule{}, fmt.Errorf("%d %s rules have labels %v, want 1", len(found), alert, pick)
	}
	return found[0], nil
}

// expand expands an annotation template the way Prometheus does: $labels and $value defined first.
func expand(text string, labels map[string]string, value float64) (string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Parse("{{$labels := .Labels}}{{$value := .Value}}" + text)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, struct {
		Labels map[string]string
		Value  float64
	}{labels, value}); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// checkCoverage wants every alert seen firing and seen silent, each burn-rate tier seen firing and
// silent, and each SLO's burn alert seen firing.
func checkCoverage(t *testing.T, file rules.File, scenarios []scenario) {
	t.Helper()
	fired, silent, sloFired := map[string]bool{}, map[string]bool{}, map[string]bool{}
	key := func(alert string, labels map[string]string) string {
		if w := labels["long_window"]; w != "" {
			return alert + " " + w
		}
		return alert
	}
	for _, s := range scenarios {
		for _, c := range s.checks {
			firingKeys := map[string]bool{}
			for _, f := range c.firing {
				r, err := findRule(file, c.alert, f.rule)
				if err != nil {
					t.Fatalf("scenario %q: %v", s.name, err)
				}
				firingKeys[key(c.alert, r.Labels)] = true
				fired[key(c.alert, r.Labels)] = true
				sloFired[r.Labels["slo"]] = true
			}
			for _, g := range file.Groups {
				for _, r := range g.Rules {
					if r.Alert == c.alert && !firingKeys[key(c.alert, r.Labels)] {
						silent[key(c.alert, r.Labels)] = true
					}
				}
			}
		}
	}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			k := key(r.Alert, r.Labels)
			if !fired[k] {
				t.Errorf("no scenario shows %s firing", k)
			}
			if !silent[k] {
				t.Errorf("no scenario shows %s staying silent", k)
			}
			if r.Alert == rules.AlertBurn && !sloFired[r.Labels["slo"]] {
				t.Errorf("no scenario shows a burn-rate alert of SLO %s firing", r.Labels["slo"])
			}
		}
	}
}
