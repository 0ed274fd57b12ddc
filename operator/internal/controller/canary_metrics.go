package controller

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/operator/api/v1alpha1"
)

// canaryMetrics are the rollouts' metrics: where each stands, read from the cache at scrape time so a
// deleted policy's series go with it, and the checks made, by result. The policy's namespace is
// policy_namespace and its Service target_service: a scrape adds namespace and service labels of its own
// (the operator's), which would rename these.
type canaryMetrics struct {
	rollouts *canaryCollector
	checks   *prometheus.CounterVec
}

// CanaryPhases are the phases meshplane_canary_phase reports, one series each.
var CanaryPhases = []v1alpha1.CanaryPhase{v1alpha1.CanaryInitialized, v1alpha1.CanaryProgressing, v1alpha1.CanaryPaused,
	v1alpha1.CanaryPromoted, v1alpha1.CanaryRolledBack}

func newCanaryMetrics(reader client.Reader) canaryMetrics {
	m := canaryMetrics{
		rollouts: &canaryCollector{reader: reader,
			weight: prometheus.NewDesc("meshplane_canary_weight",
				"Percentage of calls the canary's candidate gets now, per TrafficPolicy with spec.canary (read from the operator's cache at scrape time).",
				canaryLabels, nil),
			phase: prometheus.NewDesc("meshplane_canary_phase",
				"1 for the phase a TrafficPolicy's rollout is in (Initialized, Progressing, Paused, Promoted, RolledBack), 0 for the others.",
				append(slices.Clone(canaryLabels), "phase"), nil)},
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_canary_checks_total",
			Help: "Checks of canary candidates per TrafficPolicy, by result: Passed, Failed, InsufficientTraffic, MetricsUnavailable.",
		}, append(slices.Clone(canaryLabels), "result")),
	}
	return m
}

// canaryLabels name a rollout in the canary metrics.
var canaryLabels = []string{"policy_namespace", "policy", "target_service", "candidate"}

// checked counts a check of p's candidate.
func (m canaryMetrics) checked(p *v1alpha1.TrafficPolicy, result v1alpha1.CanaryCheckResult) {
	m.checks.WithLabelValues(p.Namespace, p.Name, p.Spec.TargetRef.Name, p.Spec.Canary.Candidate, string(result)).Inc()
}

func (m canaryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rollouts, m.checks}
}

// canaryCollector reports each rollout's weight and phase from the policies' status.
type canaryCollector struct {
	reader        client.Reader
	weight, phase *prometheus.Desc
}

func (c *canaryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.weight; ch <- c.phase }

func (c *canaryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.TrafficPolicyList
	// Read only: the cache's objects are not copied for every scrape.
	if err := c.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		ch <- prometheus.NewInvalidMetric(c.weight, err)
		return
	}
	for _, p := range list.Items {
		st := p.Status.Canary
		if p.Spec.Canary == nil || st == nil {
			continue
		}
		rollout := []string{p.Namespace, p.Name, p.Spec.TargetRef.Name, p.Spec.Canary.Candidate}
		ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, float64(st.Weight), rollout...)
		for _, phase := range CanaryPhases {
			v := 0.0
			if st.Phase == phase {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, append(slices.Clone(rollout), string(phase))...)
		}
	}
}
