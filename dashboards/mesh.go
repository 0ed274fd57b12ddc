package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/units"

	"meshplane.dev/dashboards/promql"
	"meshplane.dev/dashboards/signal"
	"meshplane.dev/dashboards/slo"
)

// Reporter matchers. Each Istio request is reported by the proxy on each side; summing both counts it
// twice. The server side is the destination's sidecar, or its waypoint in ambient mode (where no sidecar
// reports L7); the client side is the caller's sidecar or gateway, or the waypoint. Either view alone
// counts every request once.
var (
	serverSide = promql.Re("reporter", "destination|waypoint")
	clientSide = promql.Re("reporter", "source|waypoint")
)

// notFailed keeps requests that neither got a 5xx nor, for gRPC (which answers HTTP 200), a server-side
// gRPC status. A request without grpc_response_status (plain HTTP) matches the negative matcher, as it
// should.
var notFailed = []promql.Matcher{
	promql.Nre("response_code", "5.."),
	promql.Nre("grpc_response_status", slo.GRPCServerErrorStatuses),
}

// istioFailed is the rate of failed requests among sel, by the by labels: 5xx responses, or gRPC
// server-side statuses behind an HTTP 200. The two sets are disjoint, so "or" is their union.
func istioFailed(sel promql.Selector, by ...string) string {
	http5xx := promql.Rate(sel.With(promql.Re("response_code", "5..")), rate)
	grpcErr := promql.Rate(sel.With(promql.Nre("response_code", "5.."), promql.Re("grpc_response_status", slo.GRPCServerErrorStatuses)), rate)
	return promql.Sum(http5xx+" or "+grpcErr, by...)
}

// istioSuccessRate is the share of sel's requests that did not fail, by the by labels.
func istioSuccessRate(sel promql.Selector, by ...string) string {
	return ratio(promql.SumRate(sel.With(notFailed...), rate, by...), promql.SumRate(sel, rate, by...))
}

// istioErrorRatio is the share of sel's requests that failed, by the by labels.
func istioErrorRatio(sel promql.Selector, by ...string) string {
	return ratio(istioFailed(sel, by...), promql.SumRate(sel, rate, by...))
}

// istioLatency is the q-quantile of Istio's request duration among the requests sel's matchers select.
func istioLatency(q float64, ms []promql.Matcher, by ...string) string {
	return promql.HistogramQuantile(q, signal.IstioRequestDuration.Bucket(ms...), rate, by...)
}

var (
	percent    = ptr(0.0)
	oneHundred = ptr(1.0)
	// successSteps colour a success rate: red below 99%, yellow below 99.9%.
	successSteps = []Step{{Color: "red"}, {From: 0.99, Color: "yellow"}, {From: 0.999, Color: "green"}}
)

// serviceLink opens the Service dashboard for a table row's destination service; seriesServiceLink for a
// time series' (Grafana names the values differently in the two).
var (
	serviceLink = Link{
		Title: "Service ${__data.fields.destination_service_name}",
		URL: dashboardURL(UIDService,
			"var-namespace=${__data.fields.destination_service_namespace}&var-service=${__data.fields.destination_service_name}"),
	}
	seriesServiceLink = Link{
		Title: "Service ${__field.labels.destination_service_name}",
		URL: dashboardURL(UIDService,
			"var-namespace=${__field.labels.destination_service_namespace}&var-service=${__field.labels.destination_service_name}"),
	}
)

// Mesh is the overview of every service in the mesh, from Istio's standard metrics.
func Mesh() Dashboard {
	server := signal.IstioRequests.Sel(serverSide)
	byService := []string{"destination_service_namespace", "destination_service_name"}
	svcLegend := "{{destination_service_name}}.{{destination_service_namespace}}"
	return Dashboard{
		UID:         UIDMesh,
		Title:       "Meshplane / Mesh overview",
		Description: "Every service in the mesh as its server-side proxies (sidecars or waypoints) see it: traffic, success, latency; and what the callers' proxies did on their behalf.",
		Tags:        []string{"istio"},
		Variables:   []Variable{promDatasource},
		Annotations: []Annotation{policyChanges},
		Rows: []Row{
			{Title: "Mesh", Panels: []Panel{
				{Title: "Requests", Viz: Stat, Unit: units.RequestsPerSecond,
					Description: "Requests per second received by all services in the mesh, counted once each by the server side (reporter destination, or waypoint in ambient mode).",
					Queries:     []Query{{Expr: promql.SumRate(server, rate)}}},
				{Title: "Success rate", Viz: Stat, Unit: units.PercentUnit, Steps: successSteps, Min: percent, Max: oneHundred,
					Description: "Share of requests that got neither a 5xx nor a server-side gRPC status (Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss). 4xx are the caller's fault and count as success.",
					Queries:     []Query{{Expr: istioSuccessRate(server)}}},
				{Title: "Failed requests", Viz: Stat, Unit: units.RequestsPerSecond, Steps: []Step{{Color: "green"}, {From: 0.001, Color: "red"}},
					Description: "Requests per second that failed (5xx or server-side gRPC status), mesh-wide.",
					Queries:     []Query{{Expr: floor(istioFailed(server), promql.SumRate(server, rate))}}},
				{Title: "p99 latency", Viz: Stat, Unit: units.Milliseconds,
					Description: "99th percentile of request duration measured by the server-side proxies, all services together.",
					Queries:     []Query{{Expr: istioLatency(0.99, []promql.Matcher{serverSide})}}},
			}},
			{Title: "Services", Panels: []Panel{
				{Title: "Services (server side)", Viz: Table, Unit: units.Short, DataLinks: []Link{serviceLink},
					Description: "Every service that received requests in the time range's last moment: rate, success and latency percentiles. Click a row for its Service dashboard.",
					Columns:     map[string]string{"A": "Requests/s", "B": "Success", "C": "p50", "D": "p90", "E": "p99"},
					ColumnUnits: map[string]string{"A": units.RequestsPerSecond, "B": units.PercentUnit, "C": units.Milliseconds, "D": units.Milliseconds, "E": units.Milliseconds},
					Queries: []Query{
						{Expr: promql.SumRate(server, rate, byService...), Instant: true},
						{Expr: istioSuccessRate(server, byService...), Instant: true},
						{Expr: istioLatency(0.5, []promql.Matcher{serverSide}, byService...), Instant: true},
						{Expr: istioLatency(0.9, []promql.Matcher{serverSide}, byService...), Instant: true},
						{Expr: istioLatency(0.99, []promql.Matcher{serverSide}, byService...), Instant: true},
					}},
				{Title: "Requests by service", Viz: TimeSeries, Unit: units.RequestsPerSecond, DataLinks: []Link{seriesServiceLink},
					Description: "Requests per second each service received (server side).",
					Queries:     []Query{{Expr: promql.SumRate(server, rate, byService...), Legend: svcLegend}}},
				{Title: "Error ratio by service", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent,
					Description: "Share of each service's requests that failed (5xx or server-side gRPC status), server side.",
					Queries:     []Query{{Expr: istioErrorRatio(server, byService...), Legend: svcLegend}}},
				{Title: "p99 latency by service", Viz: TimeSeries, Unit: units.Milliseconds,
					Description: "99th percentile of request duration per service, measured by its server-side proxies.",
					Queries:     []Query{{Expr: istioLatency(0.99, []promql.Matcher{serverSide}, byService...), Legend: svcLegend}}},
				{Title: "gRPC statuses other than OK", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "gRPC requests per second by service and status code (numeric, e.g. 14 = Unavailable), server side. gRPC errors arrive with HTTP 200, so only this label shows them.",
					Queries: []Query{{
						Expr:   promql.SumRate(server.With(promql.Eq("request_protocol", "grpc"), promql.Neq("grpc_response_status", "0")), rate, "destination_service_name", "grpc_response_status"),
						Legend: "{{destination_service_name}} status {{grpc_response_status}}",
					}}},
			}},
			{Title: "What the callers' proxies did", Panels: []Panel{
				{Title: "Requests by response flag (client side)", Viz: TimeSeries, Unit: units.RequestsPerSecond, Width: 24,
					Description: "Requests per second the callers' proxies answered or cut short themselves, by Envoy response flag: UO overflow (connection-pool circuit breaker), UH no healthy upstream (all ejected), URX retry limit reached, UT timeout, UF connection failure, NR no route, DC downstream closed.",
					Queries: []Query{{
						Expr:   promql.SumRate(signal.IstioRequests.Sel(clientSide, promql.Neq("response_flags", "-")), rate, "destination_service_name", "response_flags"),
						Legend: "{{response_flags}} → {{destination_service_name}}",
					}}},
			}},
		},
	}
}

// Service is one service in detail: what it receives, what it calls, and what its callers' proxies do
// for it (retries, overflows, ejections).
func Service() Dashboard {
	dst := []promql.Matcher{promql.Eq("destination_service_namespace", "$namespace"), promql.Eq("destination_service_name", "$service")}
	inbound := signal.IstioRequests.Sel(append([]promql.Matcher{serverSide}, dst...)...)
	outbound := signal.IstioRequests.Sel(clientSide, promql.Eq("source_workload_namespace", "$namespace"), promql.Eq("source_canonical_service", "$service"))
	callers := signal.IstioRequests.Sel(append([]promql.Matcher{clientSide}, dst...)...)
	// The callers' sidecars hold an outbound cluster per port and subset of the service:
	// outbound|<port>|<subset>|<service>.<namespace>.svc.<cluster domain>.
	cluster := promql.Re("cluster_name", `outbound\|[0-9]+\|[^|]*\|$service\.$namespace\.svc\..+`)
	envoy := func(m signal.Metric) promql.Selector { return m.Sel(cluster) }
	// The operator's rollout metrics name the policy's Service target_service (the scrape's service label
	// is the operator's).
	rollout := func(m signal.Metric) promql.Selector {
		return m.Sel(promql.Eq("policy_namespace", "$namespace"), promql.Eq("target_service", "$service"))
	}
	return Dashboard{
		UID:         UIDService,
		Title:       "Meshplane / Service",
		Description: "One service: requests it receives (server side), requests it makes (client side), and what its callers' proxies do for it — response flags, retries, connection-pool overflows, outlier ejections.",
		Tags:        []string{"istio"},
		Variables: []Variable{
			promDatasource,
			{Name: "namespace", Label: "Namespace", Kind: QueryVariable, Datasource: Prometheus,
				Description: "Namespace of the service.",
				Query:       "label_values(istio_requests_total{reporter=~\"destination|waypoint\"}, destination_service_namespace)"},
			{Name: "service", Label: "Service", Kind: QueryVariable, Datasource: Prometheus,
				Description: "The service (an exact name: hosts may contain regex characters such as *).",
				Query:       "label_values(istio_requests_total{reporter=~\"destination|waypoint\", destination_service_namespace=\"$namespace\"}, destination_service_name)"},
		},
		Annotations: []Annotation{policyChanges},
		Rows: []Row{
			{Title: "Inbound (server side)", Panels: []Panel{
				{Title: "Requests by response code", Viz: TimeSeries, Unit: units.RequestsPerSecond, Stack: true,
					Description: "Requests per second the service received, by HTTP response code (gRPC answers 200 even when it fails; see gRPC statuses).",
					Queries:     []Query{{Expr: promql.SumRate(inbound, rate, "response_code"), Legend: "{{response_code}}"}}},
				{Title: "Success rate", Viz: TimeSeries, Unit: units.PercentUnit, Steps: successSteps, Max: oneHundred,
					Description: "Share of requests that got neither a 5xx nor a server-side gRPC status.",
					Queries:     []Query{{Expr: istioSuccessRate(inbound), Legend: "success"}}},
				{Title: "Latency", Viz: TimeSeries, Unit: units.Milliseconds,
					Description: "Percentiles of request duration measured by the service's own proxy.",
					Queries: []Query{
						{Expr: istioLatency(0.5, append([]promql.Matcher{serverSide}, dst...)), Legend: "p50"},
						{Expr: istioLatency(0.9, append([]promql.Matcher{serverSide}, dst...)), Legend: "p90"},
						{Expr: istioLatency(0.99, append([]promql.Matcher{serverSide}, dst...)), Legend: "p99"},
					}},
				{Title: "Requests by caller", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests per second by calling workload, as the service's proxy identified it (from the peer's mTLS identity).",
					Queries: []Query{{Expr: promql.SumRate(inbound, rate, "source_workload_namespace", "source_workload"),
						Legend: "{{source_workload}}.{{source_workload_namespace}}"}}},
				{Title: "gRPC statuses", Viz: TimeSeries, Unit: units.RequestsPerSecond, Stack: true,
					Description: "gRPC requests per second by status code (0 OK, 4 DeadlineExceeded, 13 Internal, 14 Unavailable, ...).",
					Queries: []Query{{Expr: promql.SumRate(inbound.With(promql.Eq("request_protocol", "grpc")), rate, "grpc_response_status"),
						Legend: "status {{grpc_response_status}}"}}},
				{Title: "Requests by revision", Viz: TimeSeries, Unit: units.RequestsPerSecond, Stack: true,
					Description: "Requests per second by canonical revision of the receiving workload: the split of a canary rollout.",
					Queries: []Query{{Expr: promql.SumRate(inbound, rate, "destination_canonical_revision"),
						Legend: "{{destination_canonical_revision}}"}}},
			}},
			{Title: "Canary rollout", Panels: []Panel{
				{Title: "Candidate weight", Viz: TimeSeries, Unit: units.Percent, Min: percent, Max: ptr(100.0),
					Description: "Percentage of calls the operator gives the candidate of the service's TrafficPolicy rollout (spec.canary), step by step after each passed check; it drops to 0 at once on a rollback or an abort (the CanaryRolledBack alert). `kubectl get tp` shows the phase and weight, status.canary the last check's values.",
					Queries:     []Query{{Expr: promql.Sum(rollout(signal.CanaryWeight).String(), "policy", "candidate"), Legend: "{{candidate}} ({{policy}})"}}},
				{Title: "Success rate by version", Viz: TimeSeries, Unit: units.PercentUnit, Steps: successSteps, Max: oneHundred,
					Description: "Share of the service's requests that got neither a 5xx nor a server-side gRPC status, per version of the receiving workload: the candidate beside stable, as the rollout's checks compare them (each check over its step's interval rather than this panel's rate window).",
					Queries:     []Query{{Expr: istioSuccessRate(inbound, "destination_version"), Legend: "{{destination_version}}"}}},
				{Title: "Canary checks", Viz: Bars, Unit: units.Short,
					Description: "The rollout's checks per interval, by result: Passed moves the candidate a step on (or promotes it at 100%), Failed counts towards the rollback, InsufficientTraffic and MetricsUnavailable hold the step.",
					Queries:     []Query{{Expr: promql.Sum(promql.Increase(rollout(signal.CanaryChecks), rate), "result"), Legend: "{{result}}"}}},
			}},
			{Title: "Outbound (client side)", Panels: []Panel{
				{Title: "Requests by destination", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests per second this service sent, by destination service and response code, as its own proxy saw them.",
					Queries: []Query{{Expr: promql.SumRate(outbound, rate, "destination_service_name", "response_code"),
						Legend: "{{destination_service_name}} {{response_code}}"}}},
				{Title: "Error ratio by destination", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent,
					Description: "Share of this service's calls to each destination that failed (5xx or server-side gRPC status), including failures its proxy produced itself (see response flags).",
					Queries:     []Query{{Expr: istioErrorRatio(outbound, "destination_service_name"), Legend: "{{destination_service_name}}"}}},
				{Title: "p99 latency by destination", Viz: TimeSeries, Unit: units.Milliseconds,
					Description: "99th percentile of the duration of this service's calls, per destination, measured by its own proxy (retries and queueing included).",
					Queries: []Query{{Expr: istioLatency(0.99, []promql.Matcher{clientSide, promql.Eq("source_workload_namespace", "$namespace"), promql.Eq("source_canonical_service", "$service")}, "destination_service_name"),
						Legend: "{{destination_service_name}}"}}},
			}},
			{Title: "Callers' proxies (client side, Envoy)", Panels: []Panel{
				{Title: "Response flags", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests to this service the callers' proxies answered or cut short themselves: UO connection-pool overflow (circuit breaker), UH no healthy host (outlier ejection), URX retries exhausted, UT timeout, UF connection failure.",
					Queries: []Query{{Expr: promql.SumRate(callers.With(promql.Neq("response_flags", "-")), rate, "source_workload", "response_flags"),
						Legend: "{{response_flags}} from {{source_workload}}"}}},
				{Title: "Retries", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Retries per second the callers' sidecars made to this service, and retries they skipped because the retry budget or circuit breaker was exhausted. Needs Envoy cluster stats (proxyStatsMatcher).",
					Queries: []Query{
						{Expr: promql.SumRate(envoy(signal.EnvoyRetries), rate, "service"), Legend: "{{service}} retries"},
						{Expr: promql.SumRate(envoy(signal.EnvoyRetryOverflow), rate, "service"), Legend: "{{service}} retries skipped (overflow)"},
					}},
				{Title: "Retry share", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent,
					Description: "Retries as a share of all requests the callers' sidecars sent to this service: how much load retries add.",
					Queries: []Query{{Expr: promql.Div(promql.SumRate(envoy(signal.EnvoyRetries), rate, "service"), promql.SumRate(envoy(signal.EnvoyUpstreamRequests), rate, "service")),
						Legend: "{{service}}"}}},
				{Title: "Connection-pool overflows", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests per second failed fast by the callers' connection-pool circuit breaker (DestinationRule connectionPool limits; response flag UO).",
					Queries:     []Query{{Expr: promql.SumRate(envoy(signal.EnvoyPendingOverflow), rate, "service"), Legend: "{{service}}"}}},
				{Title: "Outlier ejections", Viz: TimeSeries, Unit: units.Short,
					Description: "Hosts of this service each caller's sidecar has ejected now (outlier detection), and ejections enforced per interval.",
					Queries: []Query{
						{Expr: promql.Sum(envoy(signal.EnvoyEjectionsActive).String(), "service"), Legend: "{{service}} hosts ejected"},
						{Expr: promql.Sum(promql.Increase(envoy(signal.EnvoyEjectionsEnforced), rate), "service"), Legend: "{{service}} ejections"},
					}},
			}},
		},
	}
}
