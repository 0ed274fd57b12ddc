package dashboards

import (
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/units"

	"meshplane.dev/dashboards/promql"
	"meshplane.dev/dashboards/signal"
)

// serviceVariable lists every scraped service; All selects them all.
func serviceVariable(description, query string) Variable {
	return Variable{Name: "service", Label: "Service", Kind: QueryVariable, Datasource: Prometheus, Multi: true,
		Description: description, Query: query}
}

var svc = promql.Re("service", "$service")

// Breaker state values in the state timeline.
const (
	breakerClosed   = "0"
	breakerHalfOpen = "1"
	breakerOpen     = "2"
)

// breakerOpened marks each time a breaker opened.
var breakerOpened = Annotation{
	Name:  "Breaker opened",
	Expr:  `sum by (service, name) (increase(meshplane_circuit_breaker_transitions_total{to="open"}[$__rate_interval])) > 0`,
	Title: "{{service}}: breaker {{name}} opened",
	Tags:  "service,name",
	Color: "red",
}

// Resilience shows the protections on the calling side of each service: the service's own circuit
// breakers (gobreaker, in-process) beside its sidecar's (connection-pool overflow, outlier ejection,
// retries), with policy changes marked.
func Resilience() Dashboard {
	state := func(s string) string {
		return promql.Max(signal.BreakerState.Sel(svc, promql.Eq("state", s)).String(), "service", "name")
	}
	requests := signal.BreakerRequests.Sel(svc)
	outbound := promql.Re("cluster_name", `outbound\|.+`)
	envoy := func(m signal.Metric) promql.Selector { return m.Sel(svc, outbound) }
	byCluster := []string{"service", "cluster_name"}
	return Dashboard{
		UID:         UIDResilience,
		Title:       "Meshplane / Resilience",
		Description: "What protects each calling service from its dependencies: its in-process circuit breakers and its sidecar's connection-pool limits, outlier detection and retries — with policy changes and breaker openings marked.",
		Variables: []Variable{promDatasource,
			serviceVariable("The calling service: breakers and sidecar clusters live on the caller's side.", "label_values(up, service)")},
		Annotations: []Annotation{policyChanges, breakerOpened},
		Rows: []Row{
			{Title: "Circuit breakers in the services (gobreaker)", Panels: []Panel{
				{Title: "Breaker state", Viz: StateTimeline, Unit: units.NoUnit, Width: 18,
					Description: "State of each breaker (per calling service and dependency), read from the breaker at every scrape: closed (calls flow), half-open (probing), open (calls fail fast with 503).",
					Mappings: []Mapping{
						{Value: breakerClosed, Text: "closed", Color: "green"},
						{Value: breakerHalfOpen, Text: "half-open", Color: "yellow"},
						{Value: breakerOpen, Text: "open", Color: "red"},
					},
					Queries: []Query{{Expr: state("half_open") + " + 2 * " + state("open"), Legend: "{{service}} → {{name}}"}}},
				{Title: "Breakers not closed", Viz: Stat, Unit: units.Short, Steps: []Step{{Color: "green"}, {From: 1, Color: "red"}},
					Description: "Breakers currently open or half-open among the selected services.",
					Queries:     []Query{{Expr: promql.Sum("1 - " + signal.BreakerState.Sel(svc, promql.Eq("state", "closed")).String())}}},
				{Title: "Calls through breakers by result", Viz: TimeSeries, Unit: units.RequestsPerSecond, Stack: true,
					Description: "Calls per second through each breaker: success, failure (counts toward opening), excluded (e.g. cancelled by the caller), rejected_open and rejected_half_open (failed fast without reaching the dependency).",
					Queries: []Query{{Expr: promql.SumRate(requests, rate, "service", "name", "result"),
						Legend: "{{service}} → {{name}} {{result}}"}}},
				{Title: "Rejected share", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent, Max: oneHundred,
					Description: "Share of calls each breaker failed fast instead of sending.",
					Queries: []Query{{Expr: ratio(
						promql.SumRate(requests.With(promql.Re("result", "rejected_open|rejected_half_open")), rate, "service", "name"),
						promql.SumRate(requests, rate, "service", "name")),
						Legend: "{{service}} → {{name}}"}}},
				{Title: "State changes", Viz: Bars, Unit: units.Short, Width: 24, Height: 6,
					Description: "Breaker state changes per interval, by the state entered.",
					Queries: []Query{{Expr: promql.Sum(promql.Increase(signal.BreakerTransitions.Sel(svc), rate), "service", "name", "to"),
						Legend: "{{service}} → {{name}} to {{to}}"}}},
			}},
			{Title: "Circuit breaking in the sidecars (Envoy)", Panels: []Panel{
				{Title: "Hosts ejected", Viz: TimeSeries, Unit: units.Short,
					Description: "Upstream hosts each caller's sidecar has ejected now by outlier detection (DestinationRule outlierDetection), per destination cluster. Needs Envoy cluster stats (proxyStatsMatcher).",
					Queries: []Query{{Expr: promql.Sum(envoy(signal.EnvoyEjectionsActive).String(), byCluster...),
						Legend: "{{service}} → {{cluster_name}}"}}},
				{Title: "Connection-pool overflows", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests per second failed fast because a connection-pool limit was reached (DestinationRule connectionPool; response flag UO).",
					Queries: []Query{{Expr: promql.SumRate(envoy(signal.EnvoyPendingOverflow), rate, byCluster...),
						Legend: "{{service}} → {{cluster_name}}"}}},
				{Title: "Retries", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Retries per second each caller's sidecar made, per destination cluster (VirtualService retries).",
					Queries: []Query{{Expr: promql.SumRate(envoy(signal.EnvoyRetries), rate, byCluster...),
						Legend: "{{service}} → {{cluster_name}}"}}},
				{Title: "Requests cut short by the proxy", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests the caller's proxy failed itself: UO overflow, UH no healthy host left after ejections, URX retries exhausted.",
					Queries: []Query{{
						Expr: promql.SumRate(signal.IstioRequests.Sel(clientSide, promql.Re("source_canonical_service", "$service"),
							promql.Re("response_flags", ".*(UO|UH|URX).*")), rate, "source_canonical_service", "destination_service_name", "response_flags"),
						Legend: "{{source_canonical_service}} → {{destination_service_name}} {{response_flags}}",
					}}},
			}},
		},
	}
}

// Operator shows the operator's work: reconciles, errors, latency to Ready, policies by condition,
// conflicts, call-graph findings and writes.
func Operator() Dashboard {
	ctrl := promql.Re("controller", "$controller")
	return Dashboard{
		UID:         UIDOperator,
		Title:       "Meshplane / Operator",
		Description: "The Meshplane operator: how fast and how well it turns TrafficPolicies into Istio objects, which policies are not in force and why.",
		Variables: []Variable{promDatasource,
			{Name: "controller", Label: "Controller", Kind: QueryVariable, Datasource: Prometheus, Multi: true,
				Description: "controller-runtime controller.", Query: "label_values(controller_runtime_reconcile_total, controller)"}},
		Annotations: []Annotation{policyChanges},
		Rows: []Row{
			{Title: "TrafficPolicies", Panels: []Panel{
				{Title: "Not accepted", Viz: Stat, Unit: units.Short, Steps: []Step{{Color: "green"}, {From: 1, Color: "red"}},
					Description: "Policies whose Accepted condition is False: not in force, because of a conflict, a missing Service or an invalid spec.",
					Queries: []Query{{Expr: floor(promql.Sum(signal.TrafficPolicies.Sel(promql.Eq("condition", "Accepted"), promql.Eq("status", "False")).String()),
						promql.Sum(signal.TrafficPolicies.Sel().String()))}}},
				{Title: "Not ready", Viz: Stat, Unit: units.Short, Steps: []Step{{Color: "green"}, {From: 1, Color: "yellow"}},
					Description: "Policies whose Ready condition is False: some generated Istio object is not applied or does not match.",
					Queries: []Query{{Expr: floor(promql.Sum(signal.TrafficPolicies.Sel(promql.Eq("condition", "Ready"), promql.Eq("status", "False")).String()),
						promql.Sum(signal.TrafficPolicies.Sel().String()))}}},
				{Title: "Policies by condition", Viz: Table, Unit: units.Short, Width: 12,
					Description: "Number of TrafficPolicies per condition, status and reason (HostConflict, TargetConflict, ServiceNotFound, Invalid, ApplyFailed, ...).",
					Columns:     map[string]string{"A": "Policies"},
					Queries:     []Query{{Expr: promql.Sum(signal.TrafficPolicies.Sel().String(), "condition", "status", "reason"), Instant: true}}},
				{Title: "Time to Ready", Viz: TimeSeries, Unit: units.Seconds,
					Description: "Time from a policy change until its Ready condition turned True (percentiles over the interval).",
					Queries: []Query{
						{Expr: promql.HistogramQuantile(0.5, signal.ReconcileToReady.Bucket(), rate), Legend: "p50"},
						{Expr: promql.HistogramQuantile(0.99, signal.ReconcileToReady.Bucket(), rate), Legend: "p99"},
					}},
				{Title: "Conflicts", Viz: Bars, Unit: units.Short,
					Description: "Policies refused per interval because another policy governs the same Service (TargetConflict) or an Istio object Meshplane does not own configures the host (HostConflict).",
					Queries:     []Query{{Expr: promql.Sum(promql.Increase(signal.OperatorConflicts.Sel(), rate), "reason"), Legend: "{{reason}}"}}},
			}},
			{Title: "Call graph", Panels: []Panel{
				{Title: "Call-graph warnings", Viz: Stat, Unit: units.Short, Steps: []Step{{Color: "green"}, {From: 1, Color: "yellow"}},
					Description: "Findings of warning or error severity in the latest analysis of the policies together along the call graph: retries that multiply down a chain, timeouts shorter than what they call, retries of calls that must not be repeated. The policies involved carry CallGraph=False with the fix; `meshplane check` shows the same offline.",
					Queries: []Query{{Expr: floor(promql.Sum(signal.CallGraphFindings.Sel(promql.Re("severity", "warning|error")).String()),
						promql.Sum(signal.CallGraphFindings.Sel().String()))}}},
				{Title: "Call-graph findings by kind", Viz: Table, Unit: units.Short, Width: 12,
					Description: "Findings of the latest call-graph analysis per severity and kind (Amplification, TimeoutBelowCallee, NonIdempotentRetry, RedundantRetries, ...).",
					Columns:     map[string]string{"A": "Findings"},
					Queries:     []Query{{Expr: promql.Sum(signal.CallGraphFindings.Sel().String(), "severity", "kind"), Instant: true}}},
			}},
			{Title: "Canary rollouts", Panels: []Panel{
				{Title: "Rollouts", Viz: Table, Unit: units.Percent, Width: 24,
					Description: "Every TrafficPolicy with spec.canary: its candidate's weight now and the rollout's phase (Initialized, Progressing, Paused, Promoted, RolledBack). The Service dashboard's Canary rollout row shows the weight over time beside each version's success rate.",
					Columns:     map[string]string{"A": "Weight"},
					Queries:     []Query{{Expr: rolloutsTable, Instant: true}}},
			}},
			{Title: "Reconciles", Panels: []Panel{
				{Title: "Reconciles by result", Viz: TimeSeries, Unit: units.OpsPerSecond, Stack: true,
					Description: "Reconciles per second per controller and result (success, error, requeue, requeue_after).",
					Queries: []Query{{Expr: promql.SumRate(signal.ReconcileTotal.Sel(ctrl), rate, "controller", "result"),
						Legend: "{{controller}} {{result}}"}}},
				{Title: "Reconcile errors", Viz: TimeSeries, Unit: units.OpsPerSecond,
					Description: "Reconciles per second that returned an error; each is retried with backoff.",
					Queries:     []Query{{Expr: promql.SumRate(signal.ReconcileErrors.Sel(ctrl), rate, "controller"), Legend: "{{controller}}"}}},
				{Title: "Reconcile duration", Viz: TimeSeries, Unit: units.Seconds,
					Description: "Time per reconcile, p50 and p99, per controller.",
					Queries: []Query{
						{Expr: promql.HistogramQuantile(0.5, signal.ReconcileTime.Bucket(ctrl), rate, "controller"), Legend: "{{controller}} p50"},
						{Expr: promql.HistogramQuantile(0.99, signal.ReconcileTime.Bucket(ctrl), rate, "controller"), Legend: "{{controller}} p99"},
					}},
				{Title: "Work queue depth", Viz: TimeSeries, Unit: units.Short,
					Description: "Objects waiting to be reconciled. A queue that keeps growing means the operator cannot keep up.",
					Queries:     []Query{{Expr: promql.Sum(signal.WorkqueueDepth.Sel(ctrl).String(), "controller"), Legend: "{{controller}}"}}},
			}},
			{Title: "Writes to the cluster", Panels: []Panel{
				{Title: "Writes by kind", Viz: TimeSeries, Unit: units.OpsPerSecond,
					Description: "Writes of generated Istio objects per second, by kind and operation. Idle, this is 0: the operator writes only when something changed.",
					Queries:     []Query{{Expr: promql.SumRate(signal.OperatorWrites.Sel(), rate, "kind", "op"), Legend: "{{op}} {{kind}}"}}},
				{Title: "Apply errors", Viz: TimeSeries, Unit: units.OpsPerSecond,
					Description: "Failed server-side applies per second, by kind: the mesh keeps running the previous configuration.",
					Queries:     []Query{{Expr: promql.SumRate(signal.OperatorApplyErrors.Sel(), rate, "kind"), Legend: "{{kind}}"}}},
			}},
		},
	}
}

// rolloutsTable is each rollout's weight, labelled with its phase.
var rolloutsTable = func() string {
	rollout := []string{"policy_namespace", "policy", "target_service", "candidate"}
	return promql.Sum(signal.CanaryWeight.Sel().String(), rollout...) + " * on (" + strings.Join(rollout, ", ") + ") group_left (phase) (" +
		signal.CanaryPhase.Sel().String() + " == 1)"
}()

// ConsulSync shows the catalog sync between Kubernetes and Consul, both ways.
func ConsulSync() Dashboard {
	return Dashboard{
		UID:         UIDConsulSync,
		Title:       "Meshplane / Consul sync",
		Description: "The catalog sync: Kubernetes Services registered in Consul (to_consul), Consul services imported as ServiceEntries (to_istio) — how many, how many writes, errors and lag.",
		Tags:        []string{"consul"},
		Variables:   []Variable{promDatasource},
		Rows: []Row{
			{Title: "Sync", Panels: []Panel{
				{Title: "Services in sync", Viz: Stat, Unit: units.Short, Width: 8,
					Description: "Services currently kept in sync, per direction.",
					Queries:     []Query{{Expr: promql.Sum(signal.SyncServices.Sel().String(), "direction"), Legend: "{{direction}}"}}},
				{Title: "Writes in the time range", Viz: Stat, Unit: units.Short, Width: 8,
					Description: "Writes over the dashboard's time range, per direction. A resync with nothing changed writes nothing, so a steady catalog shows 0.",
					Queries:     []Query{{Expr: promql.Sum(promql.Increase(signal.SyncWrites.Sel(), "$__range"), "direction"), Legend: "{{direction}}"}}},
				{Title: "Errors in the time range", Viz: Stat, Unit: units.Short, Width: 8, Steps: []Step{{Color: "green"}, {From: 1, Color: "red"}},
					Description: "Failed sync operations over the dashboard's time range, per direction.",
					Queries:     []Query{{Expr: promql.Sum(promql.Increase(signal.SyncErrors.Sel(), "$__range"), "direction"), Legend: "{{direction}}"}}},
				{Title: "Services in sync over time", Viz: TimeSeries, Unit: units.Short,
					Description: "Services kept in sync, per direction.",
					Queries:     []Query{{Expr: promql.Sum(signal.SyncServices.Sel().String(), "direction"), Legend: "{{direction}}"}}},
				{Title: "Writes", Viz: TimeSeries, Unit: units.OpsPerSecond,
					Description: "Writes per second to Consul (to_consul) or the apiserver (to_istio), by operation.",
					Queries:     []Query{{Expr: promql.SumRate(signal.SyncWrites.Sel(), rate, "direction", "op"), Legend: "{{direction}} {{op}}"}}},
				{Title: "Errors", Viz: TimeSeries, Unit: units.OpsPerSecond,
					Description: "Failed sync operations per second; the sync retries with backoff.",
					Queries:     []Query{{Expr: promql.SumRate(signal.SyncErrors.Sel(), rate, "direction"), Legend: "{{direction}}"}}},
				{Title: "Lag", Viz: TimeSeries, Unit: units.Seconds,
					Description: "Time from a change on one side to its write on the other, p50 and p99 per direction. The ConsulSyncLagHigh alert fires at a p99 above 30s.",
					Steps:       []Step{{Color: "green"}, {From: 30, Color: "red"}},
					Queries: []Query{
						{Expr: promql.HistogramQuantile(0.5, signal.SyncLag.Bucket(), rate, "direction"), Legend: "{{direction}} p50"},
						{Expr: promql.HistogramQuantile(0.99, signal.SyncLag.Bucket(), rate, "direction"), Legend: "{{direction}} p99"},
					}},
			}},
		},
	}
}
