// Package signal declares every metric Meshplane's dashboards and rules read — name, type, labels and
// meaning — as agreed between the services, the operator, the Consul sync, and as Istio and Envoy export
// them. Queries name metrics through these values, and the module's tests reject a query that reads an
// undeclared metric or label, so a renamed metric breaks a test rather than a panel.
package signal

import (
	"slices"
	"strings"

	"meshplane.dev/dashboards/promql"
)

// Type is the Prometheus metric type.
type Type string

// Metric types.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Origin says who exports a metric, which decides where its panels can show data: App metrics come from
// the shop services and are checked against the real services; Istio and Envoy metrics need sidecars in a
// cluster; Operator and ConsulSync metrics come from the operator.
type Origin string

// Origins.
const (
	App        Origin = "app"
	Prometheus Origin = "prometheus"
	Istio      Origin = "istio"
	Envoy      Origin = "envoy"
	Operator   Origin = "operator"
	ConsulSync Origin = "consul-sync"
)

// TargetLabels are added to every series by the scrape: job and instance by Prometheus, service by the
// scrape configuration (relabelled from the Consul service name or the pod's app label).
var TargetLabels = []string{"job", "instance", "service"}

// Metric is one metric family.
type Metric struct {
	// Name is the family name; a histogram's series add _bucket, _sum and _count.
	Name   string
	Type   Type
	Origin Origin
	// Labels are the metric's own labels, without TargetLabels (and without le for histograms).
	Labels []string
	// Help says what the metric counts, in the words of its exporter.
	Help string
}

// Sel selects the metric's series (a counter or gauge).
func (m Metric) Sel(ms ...promql.Matcher) promql.Selector { return promql.Sel(m.Name, ms...) }

// Bucket selects a histogram's _bucket series.
func (m Metric) Bucket(ms ...promql.Matcher) promql.Selector {
	return promql.Sel(m.Name+"_bucket", ms...)
}

// Count selects a histogram's _count series.
func (m Metric) Count(ms ...promql.Matcher) promql.Selector {
	return promql.Sel(m.Name+"_count", ms...)
}

// HasLabel reports whether series of m can carry label (its own, a target label, or le on buckets).
func (m Metric) HasLabel(label string) bool {
	if slices.Contains(m.Labels, label) || slices.Contains(TargetLabels, label) {
		return true
	}
	return label == "le" && m.Type == Histogram
}

// Lookup finds the metric a series name belongs to (histogram series by their suffix).
func Lookup(series string) (Metric, bool) {
	for _, m := range All {
		if m.Name == series {
			return m, true
		}
		if m.Type == Histogram {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if strings.TrimSuffix(series, suffix) == m.Name && strings.HasSuffix(series, suffix) {
					return m, true
				}
			}
		}
	}
	return Metric{}, false
}

// The shop services' own metrics (mesh/telemetry, mesh/breaker, mesh/logs).
var (
	HTTPServerDuration = Metric{Name: "http_server_request_duration_seconds", Type: Histogram, Origin: App,
		Labels: []string{"http_route", "http_request_method", "http_response_status_code"},
		Help:   "Duration of HTTP requests at the gateway edge (OpenTelemetry semantic conventions); exemplars carry trace_id."}
	GRPCServerStarted = Metric{Name: "grpc_server_started_total", Type: Counter, Origin: App,
		Labels: grpcLabels, Help: "RPCs started on the server."}
	GRPCServerHandled = Metric{Name: "grpc_server_handled_total", Type: Counter, Origin: App,
		Labels: grpcLabelsWithCode, Help: "RPCs completed on the server, by gRPC status code."}
	GRPCServerHandling = Metric{Name: "grpc_server_handling_seconds", Type: Histogram, Origin: App,
		Labels: grpcLabels, Help: "Time the server took to handle an RPC."}
	GRPCClientStarted = Metric{Name: "grpc_client_started_total", Type: Counter, Origin: App,
		Labels: grpcLabels, Help: "RPCs started by the client."}
	GRPCClientHandled = Metric{Name: "grpc_client_handled_total", Type: Counter, Origin: App,
		Labels: grpcLabelsWithCode, Help: "RPCs completed by the client, by gRPC status code."}
	GRPCClientHandling = Metric{Name: "grpc_client_handling_seconds", Type: Histogram, Origin: App,
		Labels: grpcLabels, Help: "Time from the client's call until the response arrived."}
	BreakerState = Metric{Name: "meshplane_circuit_breaker_state", Type: Gauge, Origin: App,
		Labels: []string{"name", "state"},
		Help:   "1 for the breaker's current state (closed, half_open, open), 0 for the others; read at scrape time."}
	BreakerTransitions = Metric{Name: "meshplane_circuit_breaker_transitions_total", Type: Counter, Origin: App,
		Labels: []string{"name", "from", "to"}, Help: "Breaker state changes."}
	BreakerRequests = Metric{Name: "meshplane_circuit_breaker_requests_total", Type: Counter, Origin: App,
		Labels: []string{"name", "result"},
		Help:   "Calls through a breaker by result: success, failure, excluded, rejected_open, rejected_half_open."}
	LogLines = Metric{Name: "meshplane_log_lines_total", Type: Counter, Origin: App,
		Labels: []string{"level"}, Help: "Log lines written, by level."}
	LogLinesDropped = Metric{Name: "meshplane_log_lines_dropped_total", Type: Counter, Origin: App,
		Labels: []string{"reason"}, Help: "Log lines not shipped to Loki: queue_full (Loki too slow or down), send_failed (Loki refused a batch or stayed unreachable through the retries), shutdown (still unsent at exit)."}
	LogLinesSampledOut = Metric{Name: "meshplane_log_lines_sampled_out_total", Type: Counter, Origin: App,
		Help: "Log lines below warn not shipped to Loki (still written to stdout) because its queue was over three quarters full: meanwhile one in ten of them is shipped (none over seven eighths), and every warning and error."}
	LogQueueLength = Metric{Name: "meshplane_log_queue_length", Type: Gauge, Origin: App,
		Help: "Log lines waiting in the bounded queue in front of the Loki client."}
	BuildInfo = Metric{Name: "meshplane_build_info", Type: Gauge, Origin: App,
		Labels: []string{"version", "goversion"}, Help: "1, labelled with the build's version."}
	Orders = Metric{Name: "meshplane_orders_total", Type: Counter, Origin: App,
		Labels: []string{"result"}, Help: "Orders by result: placed, rejected, payment_failed."}
	PaymentCharges = Metric{Name: "meshplane_payments_charges_total", Type: Counter, Origin: App,
		Labels: []string{"result"}, Help: "Charges by result: charged, duplicate, declined, failed."}
	// The database metrics of orders and payments (mesh/pgstore), by the service's own label.
	DBQueryDuration = Metric{Name: "meshplane_db_query_duration_seconds", Type: Histogram, Origin: App,
		Labels: []string{"operation", "result"},
		Help:   "Database operations (a query or a transaction, waiting for a connection included) by operation and result: ok, error, timeout."}
	DBPoolConnections = Metric{Name: "meshplane_db_pool_connections", Type: Gauge, Origin: App,
		Labels: []string{"state"}, Help: "Open connections of the pool by state: in_use, idle, opening."}
	DBPoolMax = Metric{Name: "meshplane_db_pool_max_connections", Type: Gauge, Origin: App,
		Help: "Most connections the pool may open (DATABASE_MAX_CONNS)."}
	DBPoolWaiting = Metric{Name: "meshplane_db_pool_waiting", Type: Gauge, Origin: App,
		Help: "Operations waiting for a connection right now."}
	DBPoolWaits = Metric{Name: "meshplane_db_pool_waits_total", Type: Counter, Origin: App,
		Help: "Connection requests that found no idle connection and had to wait."}
	DBPoolWaitSeconds = Metric{Name: "meshplane_db_pool_wait_seconds_total", Type: Counter, Origin: App,
		Help: "Time spent waiting for a connection."}
	DBUp = Metric{Name: "meshplane_db_up", Type: Gauge, Origin: App,
		Help: "1 while the database answers the periodic probe, 0 while it does not (the instance is then not ready)."}
	// The event flow: orders' outbox relay (services/orders/internal/outbox), every service's broker
	// connection (mesh/events), fulfillment's consumer (services/fulfillment/internal/consumer).
	OutboxPending = Metric{Name: "meshplane_outbox_pending", Type: Gauge, Origin: App,
		Help: "Events in orders' outbox not yet acknowledged by the broker (every replica reports the whole table; take max)."}
	OutboxOldestAge = Metric{Name: "meshplane_outbox_oldest_pending_age_seconds", Type: Gauge, Origin: App,
		Help: "Age of the oldest event in orders' outbox not yet acknowledged by the broker, 0 when none is pending."}
	OutboxPublished = Metric{Name: "meshplane_outbox_published_total", Type: Counter, Origin: App,
		Labels: []string{"result"}, Help: "Outbox events published by result: ok (the broker stored it, or already had it), error (no acknowledgement; the event stays pending)."}
	OutboxPublishDuration = Metric{Name: "meshplane_outbox_publish_duration_seconds", Type: Histogram, Origin: App,
		Help: "Time from publishing an outbox event to the broker's acknowledgement."}
	BrokerConnected = Metric{Name: "meshplane_events_broker_connected", Type: Gauge, Origin: App,
		Help: "1 while the process is connected to the event broker (NATS), 0 while it is trying to reach it."}
	EventsConsumed = Metric{Name: "meshplane_events_consumed_total", Type: Counter, Origin: App,
		Labels: []string{"consumer", "result"},
		Help:   "Deliveries of events by result: processed, duplicate (acted on before: nothing done), failed (delivered again later), dead_lettered (copied to the dead-letter subject with the reason)."}
	EventsRedelivered = Metric{Name: "meshplane_events_redelivered_total", Type: Counter, Origin: App,
		Labels: []string{"consumer"}, Help: "Deliveries of events delivered before (a failed attempt, or a replica that died or exceeded the ack wait)."}
	EventsProcessingDuration = Metric{Name: "meshplane_events_processing_duration_seconds", Type: Histogram, Origin: App,
		Labels: []string{"consumer"}, Help: "Time to process one delivered event, whatever the result."}
	ConsumerPending = Metric{Name: "meshplane_events_consumer_pending", Type: Gauge, Origin: App,
		Labels: []string{"consumer"}, Help: "Events stored in the stream that the consumer has not delivered yet (the broker's count; take max over replicas)."}
	ConsumerAckPending = Metric{Name: "meshplane_events_consumer_ack_pending", Type: Gauge, Origin: App,
		Labels: []string{"consumer"}, Help: "Events delivered to a replica and not yet acknowledged (the broker's count)."}
	ConsumerLag = Metric{Name: "meshplane_events_consumer_lag_seconds", Type: Gauge, Origin: App,
		Labels: []string{"consumer"}, Help: "Age of the oldest event not yet acknowledged, by the time the broker stored it; 0 when caught up."}
	OrderToShipment = Metric{Name: "meshplane_fulfillment_order_to_shipment_seconds", Type: Histogram, Origin: App,
		Help: "Time from an order being placed (paid, its event written) to its shipment being created: outbox relay, broker and consumer together; once per order."}
	// CatalogCacheLookups is beyond the metric contract: catalog's read cache.
	CatalogCacheLookups = Metric{Name: "meshplane_catalog_cache_lookups_total", Type: Counter, Origin: App,
		Labels: []string{"result"}, Help: "Catalog read-cache lookups by result: hit or miss."}
)

var (
	grpcLabels         = []string{"grpc_type", "grpc_service", "grpc_method"}
	grpcLabelsWithCode = []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}
)

// Up is Prometheus's own scrape health series.
var Up = Metric{Name: "up", Type: Gauge, Origin: Prometheus, Help: "1 if the last scrape of the target succeeded."}

// The operator's metrics: controller-runtime's and Meshplane's own.
var (
	ReconcileTotal = Metric{Name: "controller_runtime_reconcile_total", Type: Counter, Origin: Operator,
		Labels: []string{"controller", "result"}, Help: "Reconciles by result (success, error, requeue, requeue_after)."}
	ReconcileErrors = Metric{Name: "controller_runtime_reconcile_errors_total", Type: Counter, Origin: Operator,
		Labels: []string{"controller"}, Help: "Reconciles that returned an error."}
	ReconcileTime = Metric{Name: "controller_runtime_reconcile_time_seconds", Type: Histogram, Origin: Operator,
		Labels: []string{"controller"}, Help: "Time per reconcile."}
	WorkqueueDepth = Metric{Name: "workqueue_depth", Type: Gauge, Origin: Operator,
		Labels: []string{"name", "controller", "priority"}, Help: "Items waiting in a controller's work queue."}
	TrafficPolicies = Metric{Name: "meshplane_trafficpolicies", Type: Gauge, Origin: Operator,
		Labels: []string{"condition", "status", "reason"}, Help: "TrafficPolicies by condition type, status and reason."}
	OperatorConflicts = Metric{Name: "meshplane_operator_conflicts_total", Type: Counter, Origin: Operator,
		Labels: []string{"reason"}, Help: "Policies refused because another policy owns the host or target (HostConflict, TargetConflict)."}
	OperatorApplyErrors = Metric{Name: "meshplane_operator_apply_errors_total", Type: Counter, Origin: Operator,
		Labels: []string{"kind"}, Help: "Failed server-side applies of generated Istio objects, by kind."}
	ReconcileToReady = Metric{Name: "meshplane_operator_reconcile_to_ready_seconds", Type: Histogram, Origin: Operator,
		Help: "Time from a policy's change to its Ready condition."}
	OperatorWrites = Metric{Name: "meshplane_operator_writes_total", Type: Counter, Origin: Operator,
		Labels: []string{"kind", "op"}, Help: "Writes of Istio objects by kind and operation: the policy changes the mesh sees."}
	CallGraphFindings = Metric{Name: "meshplane_callgraph_findings", Type: Gauge, Origin: Operator,
		Labels: []string{"severity", "kind"},
		Help:   "Findings of the latest analysis of the TrafficPolicies together along the call graph (retry amplification, a timeout shorter than a callee's wait, retries of calls that must not be repeated, ...), by severity (info, warning, error) and kind."}
	// A rollout's labels name its policy and Service as policy_namespace and target_service: the scrape
	// adds namespace and service labels of its own, the operator's.
	CanaryWeight = Metric{Name: "meshplane_canary_weight", Type: Gauge, Origin: Operator,
		Labels: []string{"policy_namespace", "policy", "target_service", "candidate"},
		Help:   "Percentage of calls the canary's candidate gets now, per TrafficPolicy with spec.canary."}
	CanaryPhase = Metric{Name: "meshplane_canary_phase", Type: Gauge, Origin: Operator,
		Labels: []string{"policy_namespace", "policy", "target_service", "candidate", "phase"},
		Help:   "1 for the phase a TrafficPolicy's rollout is in (Initialized, Progressing, Paused, Promoted, RolledBack), 0 for the others."}
	CanaryChecks = Metric{Name: "meshplane_canary_checks_total", Type: Counter, Origin: Operator,
		Labels: []string{"policy_namespace", "policy", "target_service", "candidate", "result"},
		Help:   "Checks of canary candidates per TrafficPolicy, by result: Passed, Failed, InsufficientTraffic, MetricsUnavailable."}
)

// The Consul catalog sync's metrics (in the operator).
var (
	SyncServices = Metric{Name: "meshplane_consul_sync_services", Type: Gauge, Origin: ConsulSync,
		Labels: []string{"direction"}, Help: "Services in sync, per direction (to_consul, to_istio)."}
	SyncWrites = Metric{Name: "meshplane_consul_sync_writes_total", Type: Counter, Origin: ConsulSync,
		Labels: []string{"direction", "op"}, Help: "Writes to Consul or the apiserver; a resync with no change writes nothing."}
	SyncErrors = Metric{Name: "meshplane_consul_sync_errors_total", Type: Counter, Origin: ConsulSync,
		Labels: []string{"direction"}, Help: "Failed sync operations."}
	SyncLag = Metric{Name: "meshplane_consul_sync_lag_seconds", Type: Histogram, Origin: ConsulSync,
		Labels: []string{"direction"}, Help: "Time from a change on one side to its write on the other."}
)

// IstioLabels are the labels of Istio's standard HTTP/gRPC metrics (istio.io "Istio Standard Metrics").
var IstioLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// Istio's standard metrics, reported by every sidecar, gateway and waypoint.
var (
	IstioRequests = Metric{Name: "istio_requests_total", Type: Counter, Origin: Istio, Labels: IstioLabels,
		Help: "Requests handled by an Istio proxy."}
	IstioRequestDuration = Metric{Name: "istio_request_duration_milliseconds", Type: Histogram, Origin: Istio,
		Labels: IstioLabels, Help: "Request duration seen by an Istio proxy, in milliseconds."}
)

// Envoy cluster statistics, exported by sidecars only when the mesh's proxyStatsMatcher includes them.
// Istio's bootstrap turns the cluster name into the cluster_name label (outbound|port|subset|host), and
// Envoy's Prometheus output does not add _total to counters: the names are Envoy's stat names.
var (
	EnvoyUpstreamRequests = Metric{Name: "envoy_cluster_upstream_rq_total", Type: Counter, Origin: Envoy,
		Labels: []string{"cluster_name"}, Help: "Requests the proxy sent upstream, retries included."}
	EnvoyRetries = Metric{Name: "envoy_cluster_upstream_rq_retry", Type: Counter, Origin: Envoy,
		Labels: []string{"cluster_name"}, Help: "Retries the proxy made."}
	EnvoyRetryOverflow = Metric{Name: "envoy_cluster_upstream_rq_retry_overflow", Type: Counter, Origin: Envoy,
		Labels: []string{"cluster_name"}, Help: "Retries not made because the retry budget or circuit breaker was exhausted."}
	EnvoyPendingOverflow = Metric{Name: "envoy_cluster_upstream_rq_pending_overflow", Type: Counter, Origin: Envoy,
		Labels: []string{"cluster_name"}, Help: "Requests failed fast by the connection-pool circuit breaker (response flag UO)."}
	EnvoyEjectionsActive = Metric{Name: "envoy_cluster_outlier_detection_ejections_active", Type: Gauge, Origin: Envoy,
		Labels: []string{"cluster_name"}, Help: "Hosts currently ejected by outlier detection."}
	EnvoyEjectionsEnforced = Metric{Name: "envoy_cluster_outlier_detection_ejections_enforced_total", Type: Counter, Origin: Envoy,
		Labels: []string{"cluster_name"}, Help: "Ejections outlier detection enforced."}
)

// All lists every declared metric.
var All = []Metric{
	HTTPServerDuration, GRPCServerStarted, GRPCServerHandled, GRPCServerHandling,
	GRPCClientStarted, GRPCClientHandled, GRPCClientHandling,
	BreakerState, BreakerTransitions, BreakerRequests,
	LogLines, LogLinesDropped, LogLinesSampledOut, LogQueueLength, BuildInfo, Orders, PaymentCharges, CatalogCacheLookups,
	DBQueryDuration, DBPoolConnections, DBPoolMax, DBPoolWaiting, DBPoolWaits, DBPoolWaitSeconds, DBUp,
	OutboxPending, OutboxOldestAge, OutboxPublished, OutboxPublishDuration, BrokerConnected,
	EventsConsumed, EventsRedelivered, EventsProcessingDuration, ConsumerPending, ConsumerAckPending, ConsumerLag, OrderToShipment,
	Up,
	ReconcileTotal, ReconcileErrors, ReconcileTime, WorkqueueDepth,
	TrafficPolicies, OperatorConflicts, OperatorApplyErrors, ReconcileToReady, OperatorWrites, CallGraphFindings,
	CanaryWeight, CanaryPhase, CanaryChecks,
	SyncServices, SyncWrites, SyncErrors, SyncLag,
	IstioRequests, IstioRequestDuration,
	EnvoyUpstreamRequests, EnvoyRetries, EnvoyRetryOverflow, EnvoyPendingOverflow,
	EnvoyEjectionsActive, EnvoyEjectionsEnforced,
}
