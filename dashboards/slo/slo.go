// Package slo models Meshplane's service level objectives and the multi-window, multi-burn-rate alerting
// of the Google SRE workbook ("Alerting on SLOs"): for a 30-day objective, page when 2% of the error
// budget burns in an hour or 5% in six hours, open a ticket when 10% burns in a day or in three days, each
// confirmed by a short window so an alert stops soon after the burn does.
package slo

import (
	"fmt"
	"strconv"
	"time"

	"meshplane.dev/dashboards/promql"
	"meshplane.dev/dashboards/signal"
)

// Period is the SLO period every objective is measured over.
const Period = 30 * 24 * time.Hour

// Kind is what an SLI measures.
type Kind string

// SLI kinds.
const (
	Availability Kind = "availability"
	Latency      Kind = "latency"
)

// SLI is a request-based indicator: the rate of all requests and of bad ones over a window.
type SLI struct {
	Kind Kind
	// Total returns the per-second rate of all requests over window, as one unlabelled series.
	Total func(window string) string
	// Errors returns the per-second rate of bad requests over window, as one unlabelled series. It is 0,
	// not empty, while requests flow without errors, and empty when there are no requests at all.
	Errors func(window string) string
	// Source selects the raw series the SLI is computed from; its absence means the SLI is blind.
	Source promql.Selector
}

// SLO is one objective.
type SLO struct {
	// Name identifies the SLO: the slo label of its recorded series and alerts.
	Name string
	// Service is the service label of its series and alerts.
	Service string
	// Objective is the share of good requests promised over Period, e.g. 0.999.
	Objective float64
	// Description says what is promised, in words, for alert texts and the SLO dashboard.
	Description string
	SLI         SLI
}

// Budget is the share of requests allowed to fail.
func (s SLO) Budget() float64 { return 1 - s.Objective }

// Labels are the labels of every series recorded for s and of its alerts.
func (s SLO) Labels() map[string]string {
	return map[string]string{"slo": s.Name, "service": s.Service, "sli": string(s.SLI.Kind)}
}

// Tier is one burn-rate alert: the budget share that may burn within the long window before it fires.
type Tier struct {
	// Long and Short are the windows; both must burn faster than the threshold.
	Long, Short time.Duration
	// BudgetShare is the share of the period's error budget that burns in Long at the threshold rate.
	BudgetShare float64
	// For is how long the condition must hold before the alert fires.
	For time.Duration
	// Severity routes the alert: critical pages, warning opens a ticket.
	Severity string
}

// Burn is the burn-rate threshold: how many times faster than "exactly exhaust the budget over the
// period" errors must arrive for BudgetShare to burn within Long.
func (t Tier) Burn() float64 { return t.BudgetShare * Period.Hours() / t.Long.Hours() }

// Tiers are the SRE workbook's recommended tiers for a 30-day objective: burn rates 14.4, 6, 3 and 1.
var Tiers = []Tier{
	{Long: time.Hour, Short: 5 * time.Minute, BudgetShare: 0.02, For: 2 * time.Minute, Severity: "critical"},
	{Long: 6 * time.Hour, Short: 30 * time.Minute, BudgetShare: 0.05, For: 15 * time.Minute, Severity: "critical"},
	{Long: 24 * time.Hour, Short: 2 * time.Hour, BudgetShare: 0.10, For: time.Hour, Severity: "warning"},
	{Long: 72 * time.Hour, Short: 6 * time.Hour, BudgetShare: 0.10, For: 3 * time.Hour, Severity: "warning"},
}

// MinErrors is the low-traffic guard: a burn-rate alert also needs at least this many failed requests in
// its long window, so one failure on a quiet service cannot page, while a quiet service that fails every
// request still does.
const MinErrors = 5

// Windows are the rate windows recorded for every SLO, shortest first: every tier's long and short window.
func Windows() []time.Duration {
	return []time.Duration{5 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour, 72 * time.Hour}
}

// Duration formats d as a PromQL duration (5m, 1h, 1d, 3d).
func Duration(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	default:
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
}

// Names of the recorded series, per window where they have one.
const (
	ObjectiveRecord       = "slo:objective:ratio"
	BudgetRecord          = "slo:error_budget:ratio"
	BudgetRemainingRecord = "slo:error_budget_remaining:ratio"
)

// RequestsRecord is the recorded request rate over window.
func RequestsRecord(window string) string { return "slo:sli_requests:rate" + window }

// ErrorsRecord is the recorded bad-request rate over window.
func ErrorsRecord(window string) string { return "slo:sli_errors:rate" + window }

// ErrorRatioRecord is the recorded share of bad requests over window (30d included).
func ErrorRatioRecord(window string) string { return "slo:sli_error:ratio_rate" + window }

// RecordLabels are the labels of every recorded SLO series.
var RecordLabels = []string{"slo", "service", "sli"}

// withErrorsFloor turns an empty error rate into 0 while there is traffic: a counter for 5xx responses
// only exists after the first one, and a missing error series would hide the SLO from the dashboard.
func withErrorsFloor(errors, total string) string { return errors + " or 0 * " + total }

// GRPCServerErrorCodes are the gRPC codes that mean the server failed, as opposed to refusing a bad
// request, as a regular expression over grpc_code.
const GRPCServerErrorCodes = "Unknown|DeadlineExceeded|Unimplemented|Internal|Unavailable|DataLoss"

// GRPCServerErrorStatuses are the same codes as numbers, as Istio's grpc_response_status label has them.
const GRPCServerErrorStatuses = "2|4|12|13|14|15"

// HTTPAvailability is the share of a service's HTTP responses that are not 5xx, from its own edge metrics.
func HTTPAvailability(service string) SLI {
	count := signal.HTTPServerDuration.Count(promql.Eq("service", service))
	total := func(w string) string { return promql.SumRate(count, w) }
	return SLI{
		Kind:  Availability,
		Total: total,
		Errors: func(w string) string {
			return withErrorsFloor(promql.SumRate(count.With(promql.Re("http_response_status_code", "5..")), w), total(w))
		},
		Source: count,
	}
}

// HTTPLatency is the share of a service's HTTP requests answered within threshold seconds (a bucket
// bound of the histogram).
func HTTPLatency(service string, threshold float64) SLI {
	svc := promql.Eq("service", service)
	count := signal.HTTPServerDuration.Count(svc)
	fast := signal.HTTPServerDuration.Bucket(svc, promql.Le(threshold))
	total := func(w string) string { return promql.SumRate(count, w) }
	return SLI{
		Kind:   Latency,
		Total:  total,
		Errors: func(w string) string { return total(w) + " - " + promql.SumRate(fast, w) },
		Source: count,
	}
}

// HistogramLatency is the share of what histogram m of service observed that took at most threshold
// seconds (a bucket bound): for work that is not a request, such as an order reaching fulfilment.
func HistogramLatency(m signal.Metric, service string, threshold float64) SLI {
	svc := promql.Eq("service", service)
	count := m.Count(svc)
	fast := m.Bucket(svc, promql.Le(threshold))
	total := func(w string) string { return promql.SumRate(count, w) }
	return SLI{
		Kind:   Latency,
		Total:  total,
		Errors: func(w string) string { return total(w) + " - " + promql.SumRate(fast, w) },
		Source: count,
	}
}

// GRPCAvailability is the share of a service's RPCs that did not end in a server-side error code.
func GRPCAvailability(service string) SLI {
	handled := signal.GRPCServerHandled.Sel(promql.Eq("service", service))
	total := func(w string) string { return promql.SumRate(handled, w) }
	return SLI{
		Kind:  Availability,
		Total: total,
		Errors: func(w string) string {
			return withErrorsFloor(promql.SumRate(handled.With(promql.Re("grpc_code", GRPCServerErrorCodes)), w), total(w))
		},
		Source: handled,
	}
}

// istioServer selects what the server side of a service reported: its sidecars, or its waypoint in
// ambient mode. Exactly one of them reports each request, so nothing is counted twice.
func istioServer(service, namespace string) []promql.Matcher {
	return []promql.Matcher{
		promql.Re("reporter", "destination|waypoint"),
		promql.Eq("destination_service_name", service),
		promql.Eq("destination_service_namespace", namespace),
	}
}

// IstioAvailability is the share of requests to a service, as the mesh saw them, that neither got a
// 5xx nor (for gRPC, which answers HTTP 200) a server-side gRPC status.
func IstioAvailability(service, namespace string) SLI {
	reqs := signal.IstioRequests.Sel(istioServer(service, namespace)...)
	total := func(w string) string { return promql.SumRate(reqs, w) }
	return SLI{
		Kind:  Availability,
		Total: total,
		Errors: func(w string) string {
			http5xx := promql.Rate(reqs.With(promql.Re("response_code", "5..")), w)
			grpcErr := promql.Rate(reqs.With(promql.Nre("response_code", "5.."), promql.Re("grpc_response_status", GRPCServerErrorStatuses)), w)
			return withErrorsFloor(promql.Sum(http5xx+" or "+grpcErr), total(w))
		},
		Source: reqs,
	}
}

// IstioLatency is the share of requests to a service answered within thresholdMs milliseconds (a
// bucket bound of Istio's duration histogram), as the server-side proxy measured them.
func IstioLatency(service, namespace string, thresholdMs float64) SLI {
	count := signal.IstioRequestDuration.Count(istioServer(service, namespace)...)
	fast := signal.IstioRequestDuration.Bucket(append(istioServer(service, namespace), promql.Le(thresholdMs))...)
	total := func(w string) string { return promql.SumRate(count, w) }
	return SLI{
		Kind:   Latency,
		Total:  total,
		Errors: func(w string) string { return total(w) + " - " + promql.SumRate(fast, w) },
		Source: count,
	}
}

// Namespace is the Kubernetes namespace the shop runs in, for the mesh-side SLOs.
const Namespace = "shop"

// All are Meshplane's objectives: the shop's edge, each gRPC service from its own metrics, and the
// orders service as the mesh sees it (Istio's metrics, the same for any workload in the mesh).
var All = []SLO{
	{Name: "gateway-availability", Service: "gateway", Objective: 0.995, SLI: HTTPAvailability("gateway"),
		Description: "99.5% of requests to the shop's public API do not fail with a 5xx"},
	{Name: "gateway-latency", Service: "gateway", Objective: 0.99, SLI: HTTPLatency("gateway", 0.5),
		Description: "99% of requests to the shop's public API are answered within 500ms"},
	{Name: "catalog-availability", Service: "catalog", Objective: 0.999, SLI: GRPCAvailability("catalog"),
		Description: "99.9% of catalog RPCs do not end in a server error"},
	{Name: "orders-availability", Service: "orders", Objective: 0.999, SLI: GRPCAvailability("orders"),
		Description: "99.9% of orders RPCs do not end in a server error"},
	{Name: "payments-availability", Service: "payments", Objective: 0.999, SLI: GRPCAvailability("payments"),
		Description: "99.9% of payments RPCs do not end in a server error"},
	{Name: "orders-mesh-availability", Service: "orders", Objective: 0.999, SLI: IstioAvailability("orders", Namespace),
		Description: "99.9% of requests to orders, as its sidecar saw them, get neither a 5xx nor a server-side gRPC status"},
	{Name: "orders-mesh-latency", Service: "orders", Objective: 0.99, SLI: IstioLatency("orders", Namespace, 250),
		Description: "99% of requests to orders, as its sidecar saw them, are answered within 250ms"},
	// Counted when the shipment is created: an order stuck in the outbox or the stream counts (as slow)
	// only once it gets through, so the backlog alerts (OutboxBacklogStuck, EventsConsumerLagging) watch
	// the meantime.
	{Name: "order-fulfilment-latency", Service: "fulfillment", Objective: 0.99,
		SLI:         HistogramLatency(signal.OrderToShipment, "fulfillment", 5),
		Description: "99% of placed orders have their shipment created within 5s"},
}

// Validate reports the first problem that would make s's rules wrong.
func (s SLO) Validate() error {
	switch {
	case s.Name == "":
		return fmt.Errorf("slo: name is empty")
	case s.Service == "":
		return fmt.Errorf("slo %s: service is empty", s.Name)
	case s.Objective <= 0 || s.Objective >= 1:
		return fmt.Errorf("slo %s: objective %v is not between 0 and 1", s.Name, s.Objective)
	case s.SLI.Total == nil || s.SLI.Errors == nil:
		return fmt.Errorf("slo %s: sli has no total or errors query", s.Name)
	case s.SLI.Kind != Availability && s.SLI.Kind != Latency:
		return fmt.Errorf("slo %s: sli kind %q is neither availability nor latency", s.Name, s.SLI.Kind)
	}
	return nil
}
