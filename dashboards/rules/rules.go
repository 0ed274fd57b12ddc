// Package rules generates Meshplane's Prometheus rules from the same Go model as its dashboards: the SLO
// recording rules and multi-window, multi-burn-rate alerts of package slo, and alerts for what the SLOs
// do not cover — a breaker that stays open, an operator that fails or finds conflicts, policies that are
// wrong together along the call graph, a canary rolled back, a Consul sync that lags, logs that never reach Loki, a database that
// is unreachable, failing or short of connections, events that wait in the outbox or the stream, or are
// dead-lettered.
package rules

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"meshplane.dev/dashboards/promql"
	"meshplane.dev/dashboards/signal"
	"meshplane.dev/dashboards/slo"
)

// RunbookBase is where the runbook_url annotations point: dashboards/RUNBOOKS.md, one section per alert.
// Change it to your fork's copy.
const RunbookBase = "https://github.com/meshplane/meshplane/blob/main/dashboards/RUNBOOKS.md"

// File is a Prometheus rule file.
type File struct {
	Groups []Group `yaml:"groups"`
}

// Group is a rule group; its rules are evaluated in order, so alerts see the records above them.
type Group struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record) or an alerting rule (Alert).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// Alert names, also the anchors of their runbook sections.
const (
	AlertBurn              = "SLOErrorBudgetBurn"
	AlertSLOAbsent         = "SLOMetricAbsent"
	AlertBreakerOpen       = "CircuitBreakerOpen"
	AlertReconcileErrors   = "OperatorReconcileErrors"
	AlertApplyErrors       = "OperatorApplyErrors"
	AlertPolicyConflict    = "TrafficPolicyConflict"
	AlertCallGraph         = "TrafficPolicyCallGraph"
	AlertCanaryRolledBack  = "CanaryRolledBack"
	AlertSyncLag           = "ConsulSyncLagHigh"
	AlertSyncErrors        = "ConsulSyncErrors"
	AlertLogLinesDropped   = "LogLinesDropped"
	AlertDBUnreachable     = "DatabaseUnreachable"
	AlertDBQueriesFailing  = "DatabaseQueriesFailing"
	AlertDBPoolSaturated   = "DatabasePoolSaturated"
	AlertOutboxBacklog     = "OutboxBacklogStuck"
	AlertBrokerUnreachable = "EventBrokerUnreachable"
	AlertConsumerLag       = "EventsConsumerLagging"
	AlertDeadLettered      = "EventsDeadLettered"
	severityCritical       = "critical"
	severityWarning        = "warning"
	absentFor              = 10 * time.Minute
	syncLagThresholdSecond = 30
)

// Runbook is the runbook URL of an alert.
func Runbook(alert string) string { return RunbookBase + "#" + anchor(alert) }

// anchor is the GitHub heading anchor of a "## Alert" section: lower case.
func anchor(alert string) string { return strings.ToLower(alert) }

// Generate returns every Meshplane rule group: one per SLO, then the component alerts.
func Generate(slos []slo.SLO) (File, error) {
	var f File
	for _, s := range slos {
		g, err := SLOGroup(s)
		if err != nil {
			return File{}, err
		}
		f.Groups = append(f.Groups, g)
	}
	f.Groups = append(f.Groups, componentGroups()...)
	return f, nil
}

// Marshal renders f as YAML.
func (f File) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("marshal rules: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal rules: %w", err)
	}
	return buf.Bytes(), nil
}

// SLOGroup records an SLO's request and error rates over every window, its error ratio over the period
// and its remaining budget, and alerts on each burn-rate tier and on a missing SLI.
func SLOGroup(s slo.SLO) (Group, error) {
	if err := s.Validate(); err != nil {
		return Group{}, err
	}
	labels := s.Labels()
	sel := func(record string) string {
		return promql.Sel(record, promql.Eq("slo", s.Name)).String()
	}
	g := Group{Name: "slo-" + s.Name}
	for _, d := range slo.Windows() {
		w := slo.Duration(d)
		g.Rules = append(g.Rules,
			Rule{Record: slo.RequestsRecord(w), Expr: s.SLI.Total(w), Labels: labels},
			Rule{Record: slo.ErrorsRecord(w), Expr: s.SLI.Errors(w), Labels: labels},
			Rule{Record: slo.ErrorRatioRecord(w), Expr: sel(slo.ErrorsRecord(w)) + " / " + sel(slo.RequestsRecord(w)), Labels: labels},
		)
	}
	period := slo.Duration(slo.Period)
	first := slo.Duration(slo.Windows()[0])
	g.Rules = append(g.Rules,
		Rule{Record: slo.ObjectiveRecord, Expr: "vector(" + num(s.Objective) + ")", Labels: labels},
		Rule{Record: slo.BudgetRecord, Expr: "vector(" + num(s.Budget()) + ")", Labels: labels},
		// Weighted by traffic: the sum of recorded rates over the period, not the mean of ratios, so a
		// quiet night does not count as much as a busy day.
		Rule{Record: slo.ErrorRatioRecord(period),
			Expr:   fmt.Sprintf("sum_over_time(%s[%s]) / sum_over_time(%s[%s])", sel(slo.ErrorsRecord(first)), period, sel(slo.RequestsRecord(first)), period),
			Labels: labels},
		Rule{Record: slo.BudgetRemainingRecord,
			Expr:   fmt.Sprintf("1 - %s / %s", sel(slo.ErrorRatioRecord(period)), sel(slo.BudgetRecord)),
			Labels: labels},
	)
	for _, t := range slo.Tiers {
		g.Rules = append(g.Rules, burnAlert(s, t, sel))
	}
	g.Rules = append(g.Rules, Rule{
		Alert:  AlertSLOAbsent,
		Expr:   "absent(" + s.SLI.Source.String() + ")",
		For:    slo.Duration(absentFor),
		Labels: merge(labels, map[string]string{"severity": severityWarning}),
		Annotations: annotations(AlertSLOAbsent,
			// absent() keeps only the selector's equality matchers, so the SLO's name is written out
			// rather than read from $labels.
			"SLO "+s.Name+" cannot be measured: no "+s.SLI.Source.Metric+" series",
			"Prometheus has no "+s.SLI.Source.String()+" series for "+slo.Duration(absentFor)+
				", so the SLO \""+s.Description+"\" and its burn-rate alerts are blind. The service may be down, "+
				"not scraped, or its metric renamed."),
	})
	return g, nil
}

func burnAlert(s slo.SLO, t slo.Tier, sel func(string) string) Rule {
	long, short := slo.Duration(t.Long), slo.Duration(t.Short)
	threshold := fmt.Sprintf("(%s * %s)", num(t.Burn()), num(s.Budget()))
	expr := fmt.Sprintf("%s > %s\nand\n%s > %s\nand\n%s * %d >= %d",
		sel(slo.ErrorRatioRecord(long)), threshold,
		sel(slo.ErrorRatioRecord(short)), threshold,
		sel(slo.ErrorsRecord(long)), int(t.Long.Seconds()), slo.MinErrors)
	return Rule{
		Alert: AlertBurn,
		Expr:  expr,
		For:   slo.Duration(t.For),
		Labels: merge(s.Labels(), map[string]string{
			"severity": t.Severity, "long_window": long, "short_window": short,
		}),
		Annotations: annotations(AlertBurn,
			fmt.Sprintf("SLO {{ $labels.slo }} is burning its error budget %s× too fast", num(t.Burn())),
			fmt.Sprintf("Over the last %s and %s more than %s%% of requests failed the SLO \"%s\"; at this rate %s%% of the "+
				"30-day error budget is gone within %s.", long, short, num(100*t.Burn()*s.Budget()), s.Description,
				num(100*t.BudgetShare), long)),
	}
}

// componentGroups are the alerts on the mesh's moving parts.
func componentGroups() []Group {
	return []Group{
		{Name: "meshplane-resilience", Rules: []Rule{{
			Alert: AlertBreakerOpen,
			// Not closed rather than open: an open breaker turns half-open after its timeout and opens
			// again while the dependency still fails, so "open" alone flaps.
			Expr:   promql.Max(signal.BreakerState.Sel(promql.Eq("state", "closed")).String(), "service", "name") + " == 0",
			For:    "5m",
			Labels: map[string]string{"severity": severityWarning},
			Annotations: annotations(AlertBreakerOpen,
				"Breaker {{ $labels.name }} in {{ $labels.service }} has not closed for 5 minutes",
				"{{ $labels.service }} fails calls to {{ $labels.name }} fast instead of sending them: the dependency "+
					"kept failing its probe requests. Requests that need it are answered 503."),
		}}},
		{Name: "meshplane-operator", Rules: []Rule{
			{
				Alert: AlertReconcileErrors,
				Expr: promql.Div(
					promql.SumRate(signal.ReconcileErrors.Sel(), "10m", "controller"),
					promql.SumRate(signal.ReconcileTotal.Sel(), "10m", "controller"),
				) + " > 0.1",
				For:    "15m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertReconcileErrors,
					"Controller {{ $labels.controller }} fails more than 10% of its reconciles",
					"For 15 minutes more than one in ten reconciles of {{ $labels.controller }} returned an error: "+
						"policy changes may not reach the mesh."),
			},
			{
				Alert:  AlertApplyErrors,
				Expr:   promql.Sum(promql.Increase(signal.OperatorApplyErrors.Sel(), "10m"), "kind") + " > 0",
				For:    "10m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertApplyErrors,
					"The operator cannot apply {{ $labels.kind }} objects",
					"Server-side apply of generated {{ $labels.kind }} objects has kept failing for 10 minutes: the mesh "+
						"runs an older configuration than the TrafficPolicies say."),
			},
			{
				Alert: AlertPolicyConflict,
				Expr: promql.Sum(signal.TrafficPolicies.Sel(
					promql.Eq("condition", "Accepted"), promql.Eq("status", "False"),
					promql.Re("reason", "HostConflict|TargetConflict")).String(), "reason") + " > 0",
				For:    "5m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertPolicyConflict,
					"{{ $value }} TrafficPolicies are not in force: {{ $labels.reason }}",
					"Policies stay unaccepted because another TrafficPolicy (TargetConflict) or an Istio object Meshplane "+
						"does not own (HostConflict) already governs their Service; their owners believe a policy protects them."),
			},
			{
				Alert: AlertCallGraph,
				// By kind only: each kind has one severity, and the alert's own severity label would hide
				// the finding's.
				Expr: promql.Sum(signal.CallGraphFindings.Sel(promql.Re("severity", "warning|error")).String(), "kind") + " > 0",
				// A configuration problem that bites under failure, not an outage: it must hold for a while,
				// so a policy edited in two steps does not open a ticket in between.
				For:    "30m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertCallGraph,
					"{{ $value }} call-graph findings of kind {{ $labels.kind }}",
					"The TrafficPolicies are wrong together along the call graph ({{ $labels.kind }}): retries that multiply "+
						"down a chain, a timeout shorter than what it calls can take, or retries of a call that must not be "+
						"repeated. Each policy involved has CallGraph=False with the path, the numbers and the fix; nothing "+
						"is blocked, the policies stay in force."),
			},
		}},
		{Name: "meshplane-canary", Rules: []Rule{
			{
				Alert: AlertCanaryRolledBack,
				Expr: promql.Max(signal.CanaryPhase.Sel(promql.Eq("phase", "RolledBack")).String(),
					"policy_namespace", "policy", "target_service", "candidate") + " == 1",
				// A rollback stays until the team changes the policy, so the alert holds as long as
				// nobody has looked; for: 1m only rides over an operator restart's scrape gap.
				For:    "1m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertCanaryRolledBack,
					"Canary {{ $labels.candidate }} of {{ $labels.policy_namespace }}/{{ $labels.target_service }} was rolled back",
					"The operator rolled back the rollout of TrafficPolicy {{ $labels.policy_namespace }}/{{ $labels.policy }}: "+
						"the candidate {{ $labels.candidate }} failed its checks against the service's SLO (or the rollout was "+
						"aborted) and now serves no calls; every call goes to the stable subset. status.canary.lastCheck holds "+
						"what was measured and the thresholds it broke; the rollout stays rolled back until spec.canary or the "+
						"candidate's labels change."),
			},
		}},
		{Name: "meshplane-consul-sync", Rules: []Rule{
			{
				Alert:  AlertSyncLag,
				Expr:   promql.HistogramQuantile(0.99, signal.SyncLag.Bucket(), "10m", "direction") + " > " + strconv.Itoa(syncLagThresholdSecond),
				For:    "10m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertSyncLag,
					"Consul sync {{ $labels.direction }} lags more than 30s",
					"For 10 minutes the slowest 1% of changes took more than 30s to reach the other side "+
						"({{ $labels.direction }}): discovery there serves stale endpoints."),
			},
			{
				Alert:  AlertSyncErrors,
				Expr:   promql.SumRate(signal.SyncErrors.Sel(), "10m", "direction") + " > 0",
				For:    "15m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertSyncErrors,
					"Consul sync {{ $labels.direction }} keeps failing",
					"Sync operations {{ $labels.direction }} have failed continuously for 15 minutes."),
			},
		}},
		{Name: "meshplane-database", Rules: []Rule{
			{
				Alert: AlertDBUnreachable,
				// Every instance of the service: one instance cut off is a network or node problem its
				// readiness already handles.
				Expr:   promql.Max(signal.DBUp.Sel().String(), "service") + " == 0",
				For:    "2m",
				Labels: map[string]string{"severity": severityCritical},
				Annotations: annotations(AlertDBUnreachable,
					"No instance of {{ $labels.service }} reaches its database",
					"For 2 minutes every instance of {{ $labels.service }} failed its probe of PostgreSQL: none is ready, and "+
						"its requests are answered 503 naming postgres. Orders placed before are safe in the database."),
			},
			{
				Alert: AlertDBQueriesFailing,
				Expr: promql.Div(
					promql.SumRate(signal.DBQueryDuration.Count(promql.Neq("result", "ok")), "5m", "service"),
					promql.SumRate(signal.DBQueryDuration.Count(), "5m", "service"),
				) + " > 0.05",
				For:    "5m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertDBQueriesFailing,
					"More than 5% of {{ $labels.service }}'s database operations fail",
					"For 5 minutes more than 5% of {{ $labels.service }}'s database operations failed or timed out; "+
						"the requests behind them were answered 503 or 504 naming postgres."),
			},
			{
				Alert: AlertDBPoolSaturated,
				// Every connection lent and operations still waiting: more would queue behind them.
				Expr: "(" + promql.Sum(signal.DBPoolConnections.Sel(promql.Eq("state", "in_use")).String(), "service") +
					" / " + promql.Sum(signal.DBPoolMax.Sel().String(), "service") + " >= 0.9) and (" +
					promql.SumRate(signal.DBPoolWaits.Sel(), "5m", "service") + " > 0)",
				For:    "10m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertDBPoolSaturated,
					"{{ $labels.service }}'s database pools are saturated",
					"For 10 minutes at least 90% of {{ $labels.service }}'s pooled connections were in use and operations "+
						"waited for one: its latency grows with the queue, and requests start timing out."),
			},
		}},
		{Name: "meshplane-events", Rules: []Rule{
			{
				Alert: AlertOutboxBacklog,
				// Age, not count: a burst of orders makes a long backlog that drains in seconds; an event
				// that has waited two minutes means the relay cannot publish.
				Expr:   promql.Max(signal.OutboxOldestAge.Sel().String(), "service") + " > 120",
				For:    "5m",
				Labels: map[string]string{"severity": severityCritical},
				Annotations: annotations(AlertOutboxBacklog,
					"{{ $labels.service }}'s outbox has held an event for more than 2 minutes",
					"For 5 minutes the oldest event in {{ $labels.service }}'s outbox was older than 2 minutes: the relay "+
						"cannot publish to the broker. Orders still succeed and their events are kept; fulfilment waits for them."),
			},
			{
				Alert:  AlertBrokerUnreachable,
				Expr:   promql.Max(signal.BrokerConnected.Sel().String(), "service") + " == 0",
				For:    "5m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertBrokerUnreachable,
					"No instance of {{ $labels.service }} reaches the event broker",
					"For 5 minutes every instance of {{ $labels.service }} has been trying to reconnect to NATS. Producers "+
						"keep their events in the outbox, consumers process nothing until it is back."),
			},
			{
				Alert:  AlertConsumerLag,
				Expr:   promql.Max(signal.ConsumerLag.Sel().String(), "service", "consumer") + " > 120",
				For:    "5m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertConsumerLag,
					"Consumer {{ $labels.consumer }} is more than 2 minutes behind",
					"For 5 minutes the oldest event {{ $labels.consumer }} has not acknowledged was more than 2 minutes old: "+
						"its replicas are down, too slow for the rate of events, or stuck retrying."),
			},
			{
				Alert: AlertDeadLettered,
				// Any dead letter: each is an order whose effect did not happen until someone acts on it.
				Expr: promql.Sum(promql.Increase(signal.EventsConsumed.Sel(promql.Eq("result", "dead_lettered")), "15m"), "service", "consumer") + " > 0",
				// Two evaluations: a counter reset (a restarted replica) is not a dead letter.
				For:    "1m",
				Labels: map[string]string{"severity": severityWarning},
				Annotations: annotations(AlertDeadLettered,
					"{{ $labels.consumer }} dead-lettered events in the last 15 minutes",
					"{{ $labels.consumer }} gave up on events after their last delivery failed and copied them to the "+
						"dead-letter stream with the reason. Their effect (a shipment) has not happened; read the reason, fix, "+
						"and republish them."),
			},
		}},
		{Name: "meshplane-logs", Rules: []Rule{{
			Alert: AlertLogLinesDropped,
			// Lines dropped at shutdown are expected on every rollout; a full queue or failed pushes mean
			// Loki is slow, down or refusing.
			Expr:   promql.SumRate(signal.LogLinesDropped.Sel(promql.Neq("reason", "shutdown")), "10m", "service") + " > 0",
			For:    "10m",
			Labels: map[string]string{"severity": severityWarning},
			Annotations: annotations(AlertLogLinesDropped,
				"{{ $labels.service }} drops log lines: Loki does not take them",
				"For 10 minutes {{ $labels.service }} dropped log lines instead of blocking requests: Loki is slow "+
					"or unreachable, and its logs there are incomplete."),
		}}},
	}
}

func annotations(alert, summary, description string) map[string]string {
	return map[string]string{"summary": summary, "description": description, "runbook_url": Runbook(alert)}
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// num formats a float for people: rounded to nine decimals, so 1 - 0.995 reads 0.005, not
// 0.0050000000000000044.
func num(f float64) string { return strconv.FormatFloat(math.Round(f*1e9)/1e9, 'g', -1, 64) }
