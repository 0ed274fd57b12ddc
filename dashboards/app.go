package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/units"

	"fmt"

	"meshplane.dev/dashboards/promql"
	"meshplane.dev/dashboards/signal"
	"meshplane.dev/dashboards/slo"
)

// LogQL pieces. Loki's stream labels are service, namespace and level only (low cardinality); request
// and trace ids are fields of the JSON line. $__auto is Grafana's step-sized window for Loki.
const (
	lokiServices = `service=~"$service"`
	lokiWindow   = "[$__auto]"
)

// LogsDashboard shows the services' logs from Loki, and how well they get there.
func LogsDashboard() Dashboard {
	stream := func(extra string) string {
		if extra != "" {
			return "{" + lokiServices + ", " + extra + "}"
		}
		return "{" + lokiServices + "}"
	}
	countBy := func(sel string) string {
		return "sum by (service) (count_over_time(" + sel + " " + lokiWindow + "))"
	}
	return Dashboard{
		UID:         UIDLogs,
		Title:       "Meshplane / Logs",
		Description: "The services' logs in Loki — volume, errors, the lines themselves — and whether lines reach Loki at all (the services drop lines rather than block requests when Loki is slow).",
		Tags:        []string{"loki"},
		Variables: []Variable{promDatasource, lokiDatasource,
			{Name: "service", Label: "Service", Kind: QueryVariable, Datasource: Loki, Multi: true,
				Description: "Loki's service stream label (the same names as Prometheus's service label).", Query: "label_values(service)"},
			{Name: "level", Label: "Level", Kind: QueryVariable, Datasource: Loki, Multi: true,
				Description: "Log level stream label: debug, info, warn, error.", Query: "label_values(level)"},
			{Name: "search", Label: "Line contains", Kind: TextVariable,
				Description: "Text the lines must contain, e.g. a trace id or request id."},
		},
		Rows: []Row{
			{Title: "Volume (Loki)", Panels: []Panel{
				{Title: "Lines by service", Viz: Bars, Unit: units.Short, Datasource: Loki, Stack: true,
					Description: "Log lines per interval and service, at the selected levels.",
					Queries:     []Query{{Expr: countBy(stream(`level=~"$level"`)), Legend: "{{service}}"}}},
				{Title: "Error lines by service", Viz: Bars, Unit: units.Short, Datasource: Loki, Stack: true,
					Description: "Lines at level error per interval and service.",
					Queries:     []Query{{Expr: countBy(stream(`level="error"`)), Legend: "{{service}}"}}},
				{Title: "Error share", Viz: TimeSeries, Unit: units.PercentUnit, Datasource: Loki, Min: percent,
					Description: "Error lines as a share of all lines, per service.",
					Queries:     []Query{{Expr: countBy(stream(`level="error"`)) + " / " + countBy(stream("")), Legend: "{{service}}"}}},
				{Title: "Top error messages", Viz: Table, Unit: units.Short, Datasource: Loki,
					Description: "The ten most frequent error messages (the JSON msg field) over the interval.",
					Columns:     map[string]string{"A": "Lines"},
					Queries: []Query{{Expr: "topk(10, sum by (service, msg) (count_over_time(" + stream(`level="error"`) +
						` | json | __error__="" ` + lokiWindow + ")))", Instant: true}}},
			}},
			{Title: "Lines", Panels: []Panel{
				{Title: "Lines", Viz: Logs, Datasource: Loki,
					Description: "Log lines of the selected services and levels containing the search text. Each line is JSON; trace_id and request_id link a line to its request.",
					Queries:     []Query{{Expr: stream(`level=~"$level"`) + ` |= "$search"`}}},
			}},
			{Title: "Shipping (Prometheus, reported by the services)", Panels: []Panel{
				{Title: "Lines written", Viz: TimeSeries, Unit: units.CountsPerSecond,
					Description: "Lines per second each service logged, by level, whether or not they reached Loki.",
					Queries: []Query{{Expr: promql.SumRate(signal.LogLines.Sel(svc), rate, "service", "level"),
						Legend: "{{service}} {{level}}"}}},
				{Title: "Lines dropped", Viz: TimeSeries, Unit: units.CountsPerSecond, Steps: []Step{{Color: "green"}, {From: 0.001, Color: "red"}},
					Description: "Lines per second that never reached Loki: queue_full (Loki slow or down), send_failed (Loki refused a batch or stayed unreachable through the retries) — both raise LogLinesDropped — or shutdown (the queue could not drain in time).",
					Queries: []Query{{Expr: floor(promql.SumRate(signal.LogLinesDropped.Sel(svc), rate, "service", "reason"),
						promql.SumRate(signal.LogLines.Sel(svc), rate, "service")),
						Legend: "{{service}} {{reason}}"}}},
				{Title: "Lines sampled out", Viz: TimeSeries, Unit: units.CountsPerSecond,
					Description: "Lines per second below warn kept from Loki while a service's queue was over three quarters full (one in ten still shipped; warnings and errors always; every line is on stdout). Sampling is how a service sheds log load before it has to drop lines at random.",
					Queries: []Query{{Expr: floor(promql.SumRate(signal.LogLinesSampledOut.Sel(svc), rate, "service"),
						promql.SumRate(signal.LogLines.Sel(svc), rate, "service")),
						Legend: "{{service}}"}}},
				{Title: "Queue length", Viz: TimeSeries, Unit: units.Short,
					Description: "Lines waiting in each service's bounded queue in front of the Loki client. Over three quarters of its capacity, lines below warn are sampled; full, lines drop.",
					Queries:     []Query{{Expr: promql.Max(signal.LogQueueLength.Sel(svc).String(), "service"), Legend: "{{service}}"}}},
			}},
		},
	}
}

// SLO shows each objective: its error budget and how fast it burns, in the windows the alerts use.
func SLO() Dashboard {
	sel := func(record string) string { return promql.Sel(record, promql.Re("slo", "$slo")).String() }
	burn := func(d string) string { return sel(slo.ErrorRatioRecord(d)) + " / " + sel(slo.BudgetRecord) }
	period := slo.Duration(slo.Period)
	var pageSteps, ticketSteps []Step
	for i, t := range slo.Tiers {
		step := Step{From: t.Burn(), Color: "red"}
		if i < 2 {
			pageSteps = append(pageSteps, step)
		} else {
			ticketSteps = append(ticketSteps, step)
		}
	}
	tier := func(i int) (string, string) { return slo.Duration(slo.Tiers[i].Long), slo.Duration(slo.Tiers[i].Short) }
	burnPanel := func(title string, tiers []int, steps []Step) Panel {
		p := Panel{Title: title, Viz: TimeSeries, Unit: burnUnit, Steps: append([]Step{{Color: "green"}}, steps...),
			Description: "Error ratio divided by the error budget: 1 spends exactly the budget over " + period +
				". The dashed lines are the alert thresholds; an alert fires when both its long and short window are above its line."}
		for _, i := range tiers {
			long, short := tier(i)
			p.Queries = append(p.Queries,
				Query{Expr: burn(long), Legend: "{{slo}} " + long},
				Query{Expr: burn(short), Legend: "{{slo}} " + short})
		}
		return p
	}
	return Dashboard{
		UID:         UIDSLO,
		Title:       "Meshplane / SLOs",
		Description: fmt.Sprintf("Service level objectives over %s: how much error budget is left and how fast it burns, in the windows of the multi-window burn-rate alerts (SRE workbook).", period),
		Tags:        []string{"slo"},
		Variables: []Variable{promDatasource,
			{Name: "slo", Label: "SLO", Kind: QueryVariable, Datasource: Prometheus, Multi: true,
				Description: "Objective, from the recorded slo:objective:ratio series.", Query: "label_values(" + slo.ObjectiveRecord + ", slo)"}},
		Rows: []Row{
			{Title: "Objectives", Panels: []Panel{
				{Title: "Objectives", Viz: Table, Unit: units.PercentUnit,
					Description: "Each SLO now: objective, share of good requests over " + period + ", error budget left, and burn rates over the page windows (1h, 6h).",
					Columns: map[string]string{"A": "Objective", "B": "Good over " + period, "C": "Budget left",
						"D": "Burn rate 1h", "E": "Burn rate 6h"},
					ColumnUnits: map[string]string{"D": burnUnit, "E": burnUnit},
					Queries: []Query{
						{Expr: sel(slo.ObjectiveRecord), Instant: true},
						{Expr: "1 - " + sel(slo.ErrorRatioRecord(period)), Instant: true},
						{Expr: sel(slo.BudgetRemainingRecord), Instant: true},
						{Expr: burn("1h"), Instant: true},
						{Expr: burn("6h"), Instant: true},
					}},
				{Title: "Error budget left", Viz: TimeSeries, Unit: units.PercentUnit, Max: oneHundred,
					Steps:       []Step{{Color: "red"}, {From: 0, Color: "yellow"}, {From: 0.25, Color: "green"}},
					Description: "Share of the " + period + " error budget not yet spent. Below 0 the objective is missed.",
					Queries:     []Query{{Expr: sel(slo.BudgetRemainingRecord), Legend: "{{slo}}"}}},
				{Title: "Requests", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests per second each SLO counts (5m rate). Burn-rate alerts also need at least " +
						fmt.Sprint(slo.MinErrors) + " failed requests in their long window, so a quiet service does not page on one failure.",
					Queries: []Query{{Expr: sel(slo.RequestsRecord("5m")), Legend: "{{slo}}"}}},
			}},
			{Title: "Burn rates", Panels: []Panel{
				burnPanel("Burn rate, page windows", []int{0, 1}, pageSteps),
				burnPanel("Burn rate, ticket windows", []int{2, 3}, ticketSteps),
				{Title: "Error ratio", Viz: TimeSeries, Unit: units.PercentUnit, Width: 24, Min: percent,
					Description: "Share of bad requests over 5m and 1h, with the budget (1 − objective) for comparison.",
					Queries: []Query{
						{Expr: sel(slo.ErrorRatioRecord("5m")), Legend: "{{slo}} 5m"},
						{Expr: sel(slo.ErrorRatioRecord("1h")), Legend: "{{slo}} 1h"},
						{Expr: sel(slo.BudgetRecord), Legend: "{{slo}} budget"},
					}},
			}},
		},
	}
}

// RED shows the services' own metrics: requests, errors and duration at the HTTP edge and for every
// gRPC call between services, then the business outcomes.
func RED() Dashboard {
	httpCount := signal.HTTPServerDuration.Count(svc)
	handled := signal.GRPCServerHandled.Sel(svc)
	clientHandled := signal.GRPCClientHandled.Sel(svc)
	grpcFailed := promql.Re("grpc_code", slo.GRPCServerErrorCodes)
	byRoute := []string{"service", "http_route"}
	return Dashboard{
		UID:         UIDRED,
		Title:       "Meshplane / Services (RED)",
		Description: "Rate, errors and duration from the services' own metrics: the public HTTP API at the gateway, and every gRPC call between services from both ends. Works with or without a mesh.",
		Tags:        []string{"services"},
		Variables: []Variable{promDatasource,
			serviceVariable("Service (the Consul service name or the pod's app label).", "label_values("+signal.BuildInfo.Name+", service)")},
		Annotations: []Annotation{policyChanges, breakerOpened},
		Rows: []Row{
			{Title: "HTTP edge", Panels: []Panel{
				{Title: "Requests by route", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "Requests per second at the public API, by route and status code.",
					Queries: []Query{{Expr: promql.SumRate(httpCount, rate, "http_route", "http_response_status_code"),
						Legend: "{{http_route}} {{http_response_status_code}}"}}},
				{Title: "5xx ratio by route", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent,
					Description: "Share of each route's requests answered with a 5xx (4xx are the client's fault).",
					Queries: []Query{{Expr: ratio(promql.SumRate(httpCount.With(promql.Re("http_response_status_code", "5..")), rate, byRoute...),
						promql.SumRate(httpCount, rate, byRoute...)), Legend: "{{service}} {{http_route}}"}}},
				{Title: "Latency", Viz: TimeSeries, Unit: units.Seconds,
					Description: "Percentiles of request duration at the public API, all routes. Exemplars (dots) carry the trace_id of a request in the bucket: search for it in the Logs dashboard.",
					Links:       []Link{{Title: "Logs", URL: dashboardURL(UIDLogs, "")}},
					Queries: []Query{
						{Expr: promql.HistogramQuantile(0.5, signal.HTTPServerDuration.Bucket(svc), rate), Legend: "p50", Exemplars: true},
						{Expr: promql.HistogramQuantile(0.9, signal.HTTPServerDuration.Bucket(svc), rate), Legend: "p90", Exemplars: true},
						{Expr: promql.HistogramQuantile(0.99, signal.HTTPServerDuration.Bucket(svc), rate), Legend: "p99", Exemplars: true},
					}},
				{Title: "p99 latency by route", Viz: TimeSeries, Unit: units.Seconds,
					Description: "99th percentile of request duration per route.",
					Queries: []Query{{Expr: promql.HistogramQuantile(0.99, signal.HTTPServerDuration.Bucket(svc), rate, "http_route"),
						Legend: "{{http_route}}"}}},
			}},
			{Title: "gRPC servers", Panels: []Panel{
				{Title: "RPCs by method", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "RPCs per second each service completed, by method.",
					Queries: []Query{{Expr: promql.SumRate(handled, rate, "service", "grpc_method"),
						Legend: "{{service}} {{grpc_method}}"}}},
				{Title: "Server-error ratio", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent,
					Description: "Share of each service's RPCs that ended in a server-side code (" + slo.GRPCServerErrorCodes + "); client mistakes such as InvalidArgument or NotFound do not count.",
					Queries: []Query{{Expr: ratio(promql.SumRate(handled.With(grpcFailed), rate, "service"), promql.SumRate(handled, rate, "service")),
						Legend: "{{service}}"}}},
				{Title: "Codes other than OK", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "RPCs per second by service and gRPC code, OK excluded.",
					Queries: []Query{{Expr: promql.SumRate(handled.With(promql.Neq("grpc_code", "OK")), rate, "service", "grpc_code"),
						Legend: "{{service}} {{grpc_code}}"}}},
				{Title: "p99 latency by method", Viz: TimeSeries, Unit: units.Seconds,
					Description: "99th percentile of the time each service took to handle an RPC, by method.",
					Queries: []Query{{Expr: promql.HistogramQuantile(0.99, signal.GRPCServerHandling.Bucket(svc), rate, "service", "grpc_method"),
						Legend: "{{service}} {{grpc_method}}", Exemplars: true}}},
			}},
			{Title: "gRPC clients (calls between services)", Panels: []Panel{
				{Title: "Calls by target", Viz: TimeSeries, Unit: units.RequestsPerSecond,
					Description: "RPCs per second each service made, by called gRPC service and code: what it asked of its dependencies, failed-fast calls (Unavailable from an open breaker) included.",
					Queries: []Query{{Expr: promql.SumRate(clientHandled, rate, "service", "grpc_service", "grpc_code"),
						Legend: "{{service}} → {{grpc_service}} {{grpc_code}}"}}},
				{Title: "Call failure ratio", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent,
					Description: "Share of each service's calls to each gRPC service that ended in a server-side code, as the caller saw them.",
					Queries: []Query{{Expr: ratio(promql.SumRate(clientHandled.With(grpcFailed), rate, "service", "grpc_service"),
						promql.SumRate(clientHandled, rate, "service", "grpc_service")), Legend: "{{service}} → {{grpc_service}}"}}},
				{Title: "p99 call latency", Viz: TimeSeries, Unit: units.Seconds, Width: 24,
					Description: "99th percentile of call duration as the caller measured it (network and queueing included), per called gRPC service.",
					Queries: []Query{{Expr: promql.HistogramQuantile(0.99, signal.GRPCClientHandling.Bucket(svc), rate, "service", "grpc_service"),
						Legend: "{{service}} → {{grpc_service}}"}}},
			}},
			{Title: "Business", Panels: []Panel{
				{Title: "Orders by result", Viz: TimeSeries, Unit: units.OpsPerSecond, Stack: true,
					Description: "Orders per second: placed, rejected (invalid or unknown product), payment_failed.",
					Queries:     []Query{{Expr: promql.SumRate(signal.Orders.Sel(svc), rate, "result"), Legend: "{{result}}"}}},
				{Title: "Charges by result", Viz: TimeSeries, Unit: units.OpsPerSecond, Stack: true,
					Description: "Payment charges per second: charged, duplicate (a retried request with the same idempotency key, not charged twice), declined, failed.",
					Queries:     []Query{{Expr: promql.SumRate(signal.PaymentCharges.Sel(svc), rate, "result"), Legend: "{{result}}"}}},
				{Title: "Catalog cache hit ratio", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent, Max: oneHundred, Width: 24, Height: 6,
					Description: "Share of catalog reads answered from its read cache. A drop sends every read to the repository.",
					Queries: []Query{{Expr: ratio(promql.SumRate(signal.CatalogCacheLookups.Sel(svc, promql.Eq("result", "hit")), rate, "service"),
						promql.SumRate(signal.CatalogCacheLookups.Sel(svc), rate, "service")), Legend: "{{service}}"}}},
			}},
			{Title: "Database (PostgreSQL: orders, payments)", Panels: []Panel{
				{Title: "Database reachable", Viz: Stat, Unit: units.Short, Width: 6,
					Steps:       []Step{{Color: "red"}, {From: 1, Color: "green"}},
					Description: "Instances per service whose periodic probe of the database succeeds (meshplane_db_up); an instance whose probe fails is not ready and answers 503 naming postgres. Alert: DatabaseUnreachable.",
					Queries:     []Query{{Expr: promql.Sum(signal.DBUp.Sel(svc).String(), "service"), Legend: "{{service}}"}}},
				{Title: "Operations by result", Viz: TimeSeries, Unit: units.OpsPerSecond, Stack: true, Width: 9,
					Description: "Database operations per second (a query, or a transaction such as placing an order), by operation and result: ok, error (unreachable, shutting down, refused), timeout (DATABASE_QUERY_TIMEOUT or the request's deadline).",
					Queries: []Query{{Expr: promql.SumRate(signal.DBQueryDuration.Count(svc), rate, "service", "operation", "result"),
						Legend: "{{service}} {{operation}} {{result}}"}}},
				{Title: "Failing share", Viz: TimeSeries, Unit: units.PercentUnit, Min: percent, Max: oneHundred, Width: 9,
					Steps:       []Step{{Color: "green"}, {From: 0.05, Color: "red"}},
					Description: "Share of each service's database operations that failed or timed out. Alert: DatabaseQueriesFailing above 5%.",
					Queries: []Query{{Expr: ratio(promql.SumRate(signal.DBQueryDuration.Count(svc, promql.Neq("result", "ok")), rate, "service"),
						promql.SumRate(signal.DBQueryDuration.Count(svc), rate, "service")), Legend: "{{service}}"}}},
				{Title: "p99 latency by operation", Viz: TimeSeries, Unit: units.Seconds,
					Description: "99th percentile of each database operation's duration, waiting for a connection included.",
					Queries: []Query{{Expr: promql.HistogramQuantile(0.99, signal.DBQueryDuration.Bucket(svc), rate, "service", "operation"),
						Legend: "{{service}} {{operation}}"}}},
				{Title: "Pool connections", Viz: TimeSeries, Unit: units.Short,
					Description: "Connections of each service's pools by state (in_use, idle, opening), summed over its instances, against the most they may open (DATABASE_MAX_CONNS per instance).",
					Queries: []Query{
						{Expr: promql.Sum(signal.DBPoolConnections.Sel(svc).String(), "service", "state"), Legend: "{{service}} {{state}}"},
						{Expr: promql.Sum(signal.DBPoolMax.Sel(svc).String(), "service"), Legend: "{{service}} max"},
					}},
				{Title: "Waiting for a connection", Viz: TimeSeries, Unit: units.Short,
					Description: "Operations waiting for a pooled connection now, and the average number waiting over the interval (seconds waited per second). Waiting with every connection in use is a saturated pool. Alert: DatabasePoolSaturated.",
					Queries: []Query{
						{Expr: promql.Sum(signal.DBPoolWaiting.Sel(svc).String(), "service"), Legend: "{{service}} waiting now"},
						{Expr: promql.SumRate(signal.DBPoolWaitSeconds.Sel(svc), rate, "service"), Legend: "{{service}} average waiting"},
					}},
			}},
			eventsRow(),
			{Title: "Targets", Panels: []Panel{
				{Title: "Scrape targets up", Viz: TimeSeries, Unit: units.Short, Min: percent,
					Description: "Instances per service whose last scrape succeeded.",
					Queries:     []Query{{Expr: promql.Sum(signal.Up.Sel(svc).String(), "service"), Legend: "{{service}}"}}},
				{Title: "Versions", Viz: Table, Unit: units.Short, Width: 12,
					Description: "Instances per service, version and Go version.",
					Columns:     map[string]string{"A": "Instances"},
					Queries:     []Query{{Expr: promql.Sum(signal.BuildInfo.Sel(svc).String(), "service", "version", "goversion"), Instant: true}}},
			}},
		},
	}
}

// eventsRow follows an order's event from orders' outbox through NATS JetStream to fulfillment: the
// backlog on each side of the broker, how fast each hop goes, what redelivery and dead-lettering did, and
// the order-to-fulfilment latency of its SLO.
func eventsRow() Row {
	consumed := signal.EventsConsumed.Sel(svc)
	return Row{Title: "Events (orders' outbox → NATS JetStream → fulfillment)", Panels: []Panel{
		{Title: "Outbox backlog", Viz: TimeSeries, Unit: units.Short, Width: 6,
			Description: "Events orders has committed and the broker has not acknowledged yet (every replica reads the whole table: max). It grows while the broker is unreachable — orders still succeed — and drains when it returns.",
			Queries:     []Query{{Expr: promql.Max(signal.OutboxPending.Sel(svc).String(), "service"), Legend: "{{service}} pending"}}},
		{Title: "Oldest unpublished event", Viz: TimeSeries, Unit: units.Seconds, Width: 6,
			Steps:       []Step{{Color: "green"}, {From: 120, Color: "red"}},
			Description: "Age of the oldest event still in the outbox; 0 when it is empty. Alert: OutboxBacklogStuck above 2 minutes.",
			Queries:     []Query{{Expr: promql.Max(signal.OutboxOldestAge.Sel(svc).String(), "service"), Legend: "{{service}}"}}},
		{Title: "Published by result", Viz: TimeSeries, Unit: units.OpsPerSecond, Stack: true, Width: 6,
			Description: "Outbox events published per second: ok (the broker stored it, or dropped it as a duplicate of one it had), error (no acknowledgement: the event stays pending and is published again).",
			Queries:     []Query{{Expr: promql.SumRate(signal.OutboxPublished.Sel(svc), rate, "service", "result"), Legend: "{{service}} {{result}}"}}},
		{Title: "Publish latency p99", Viz: TimeSeries, Unit: units.Seconds, Width: 6,
			Description: "99th percentile of the time from publishing an outbox event to the broker's acknowledgement (the event is stored in the stream, on every replica of it).",
			Queries: []Query{{Expr: promql.HistogramQuantile(0.99, signal.OutboxPublishDuration.Bucket(svc), rate, "service"),
				Legend: "{{service}}"}}},
		{Title: "Consumer backlog", Viz: TimeSeries, Unit: units.Short, Width: 6,
			Description: "Events in the stream the consumer has not delivered yet (pending), and delivered but not yet acknowledged (in flight), as the broker counts them.",
			Queries: []Query{
				{Expr: promql.Max(signal.ConsumerPending.Sel(svc).String(), "consumer"), Legend: "{{consumer}} pending"},
				{Expr: promql.Max(signal.ConsumerAckPending.Sel(svc).String(), "consumer"), Legend: "{{consumer}} in flight"},
			}},
		{Title: "Consumer lag", Viz: TimeSeries, Unit: units.Seconds, Width: 6,
			Steps:       []Step{{Color: "green"}, {From: 120, Color: "red"}},
			Description: "Age of the oldest event the consumer has not acknowledged, by when the broker stored it; 0 when caught up. Alert: EventsConsumerLagging above 2 minutes.",
			Queries:     []Query{{Expr: promql.Max(signal.ConsumerLag.Sel(svc).String(), "consumer"), Legend: "{{consumer}}"}}},
		{Title: "Deliveries by result", Viz: TimeSeries, Unit: units.OpsPerSecond, Stack: true, Width: 6,
			Description: "Deliveries per second by result: processed, duplicate (acted on before: a redelivery changed nothing), failed (delivered again after a delay), dead_lettered (the last delivery failed: copied to the dead-letter subject with the reason).",
			Queries:     []Query{{Expr: promql.SumRate(consumed, rate, "consumer", "result"), Legend: "{{consumer}} {{result}}"}}},
		{Title: "Redeliveries and dead letters", Viz: TimeSeries, Unit: units.Short, Width: 6,
			Description: "Events delivered again (a failed attempt, or a replica that died holding it) and events dead-lettered, per interval. Alert: EventsDeadLettered on any dead letter.",
			Queries: []Query{
				{Expr: promql.Sum(promql.Increase(signal.EventsRedelivered.Sel(svc), rate), "consumer"), Legend: "{{consumer}} redelivered"},
				{Expr: promql.Sum(promql.Increase(consumed.With(promql.Eq("result", "dead_lettered")), rate), "consumer"), Legend: "{{consumer}} dead-lettered"},
			}},
		{Title: "Processing latency p99", Viz: TimeSeries, Unit: units.Seconds, Width: 8,
			Description: "99th percentile of the time a consumer took to process one delivery, whatever the result.",
			Queries: []Query{{Expr: promql.HistogramQuantile(0.99, signal.EventsProcessingDuration.Bucket(svc), rate, "consumer"),
				Legend: "{{consumer}}"}}},
		{Title: "Order → shipment latency", Viz: TimeSeries, Unit: units.Seconds, Width: 8,
			Description: "Percentiles of the time from an order being placed to its shipment being created: the outbox relay, the broker and the consumer together. SLO order-fulfilment-latency: 99% within 5s. Exemplars carry the order's trace_id: search for it in the Logs dashboard to see both sides of the hop.",
			Links:       []Link{{Title: "Logs", URL: dashboardURL(UIDLogs, "")}},
			Queries: []Query{
				{Expr: promql.HistogramQuantile(0.5, signal.OrderToShipment.Bucket(svc), rate), Legend: "p50", Exemplars: true},
				{Expr: promql.HistogramQuantile(0.99, signal.OrderToShipment.Bucket(svc), rate), Legend: "p99", Exemplars: true},
			}},
		{Title: "Connected to the broker", Viz: Stat, Unit: units.Short, Width: 8,
			Steps:       []Step{{Color: "red"}, {From: 1, Color: "green"}},
			Description: "Instances per service connected to NATS now. Alert: EventBrokerUnreachable when none of a service's is, for 5 minutes.",
			Queries:     []Query{{Expr: promql.Sum(signal.BrokerConnected.Sel(svc).String(), "service"), Legend: "{{service}}"}}},
	}}
}
