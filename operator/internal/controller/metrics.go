package controller

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
)

// Metrics are the operator's own Prometheus metrics, beside controller-runtime's reconcile and
// workqueue metrics. Their names are a contract with the dashboards module.
type Metrics struct {
	policies       *policyCollector
	Conflicts      *prometheus.CounterVec
	ApplyErrors    *prometheus.CounterVec
	Writes         *prometheus.CounterVec
	ReconcileReady prometheus.Histogram
	// CallGraphFindings is the call-graph controller's latest analysis: findings by severity and kind.
	CallGraphFindings *prometheus.GaugeVec
	// canary are the rollouts' metrics (canary_metrics.go).
	canary canaryMetrics

	mu      sync.Mutex
	pending map[types.NamespacedName]pendingGeneration
}

type pendingGeneration struct {
	generation int64
	since      time.Time
	observed   bool
}

// NewMetrics creates the metrics; policies (read at scrape time) come from reader, normally the
// manager's cached client.
func NewMetrics(reader client.Reader) *Metrics {
	m := &Metrics{
		policies: &policyCollector{reader: reader, desc: prometheus.NewDesc("meshplane_trafficpolicies",
			"TrafficPolicies by condition type, status and reason (read from the operator's cache at scrape time).",
			[]string{"condition", "status", "reason"}, nil)},
		Conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_operator_conflicts_total",
			Help: "Conflicts found, by reason: HostConflict (a VirtualService or DestinationRule Meshplane does not own configures the host) or TargetConflict (an older policy governs the Service).",
		}, []string{"reason"}),
		ApplyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_operator_apply_errors_total",
			Help: "Failed writes of generated objects, by kind.",
		}, []string{"kind"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_operator_writes_total",
			Help: "Writes of generated objects that changed the cluster, by kind and op (create, update, delete).",
		}, []string{"kind", "op"}),
		ReconcileReady: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshplane_operator_reconcile_to_ready_seconds",
			Help:    "Time from the operator first seeing a policy generation to that generation being Ready.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		CallGraphFindings: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshplane_callgraph_findings",
			Help: "Findings of the latest call-graph analysis of the TrafficPolicies together, by severity (info, warning, error) and kind (Amplification, TimeoutBelowCallee, NonIdempotentRetry, ...).",
		}, []string{"severity", "kind"}),
		pending: map[types.NamespacedName]pendingGeneration{},
		canary:  newCanaryMetrics(reader),
	}
	// Every known series starts at 0, so dashboards and rate() see a flat line rather than no data.
	for _, reason := range []string{v1alpha1.ReasonHostConflict, v1alpha1.ReasonTargetConflict} {
		m.Conflicts.WithLabelValues(reason)
	}
	for _, k := range callgraph.Kinds {
		m.CallGraphFindings.WithLabelValues(k.Severity.String(), string(k.Kind))
	}
	for _, kind := range desiredstate.Kinds {
		m.ApplyErrors.WithLabelValues(kind)
		for _, op := range []string{"create", "update", "delete"} {
			m.Writes.WithLabelValues(kind, op)
		}
	}
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{m.policies, m.Conflicts, m.ApplyErrors, m.Writes, m.ReconcileReady, m.CallGraphFindings},
		m.canary.collectors()...)
}

// Register registers every metric with reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors() {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}

// Unregister removes every metric from reg, so a second manager in one process can register its own.
func (m *Metrics) Unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

// seen notes when the operator first saw a policy's current generation; ready observes the time since
// then the first time that generation is Ready. The map only serves the histogram, never a decision;
// forget drops a deleted policy's entry.
func (m *Metrics) seen(p *v1alpha1.TrafficPolicy, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	if g, ok := m.pending[key]; !ok || g.generation != p.Generation {
		m.pending[key] = pendingGeneration{generation: p.Generation, since: now}
	}
}

func (m *Metrics) ready(p *v1alpha1.TrafficPolicy, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	// Later reconciles of a Ready generation (drift, rivals, Services) are not new samples.
	if g, ok := m.pending[key]; ok && g.generation == p.Generation && !g.observed {
		m.ReconcileReady.Observe(now.Sub(g.since).Seconds())
		g.observed = true
		m.pending[key] = g
	}
}

func (m *Metrics) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pending, key)
}

// policyCollector counts policies by condition at scrape time, so the gauge never drifts from the
// cluster (deleted policies disappear with no bookkeeping).
type policyCollector struct {
	reader client.Reader
	desc   *prometheus.Desc
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.TrafficPolicyList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	type key struct{ condition, status, reason string }
	counts := map[key]int{}
	for _, p := range list.Items {
		for _, cond := range p.Status.Conditions {
			counts[key{cond.Type, string(cond.Status), cond.Reason}]++
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k.condition, k.status, k.reason)
	}
}
