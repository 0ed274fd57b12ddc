package consulsync

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Directions label every metric of the sync.
const (
	DirectionToConsul = "to_consul"
	DirectionToIstio  = "to_istio"
)

// Outcomes of a Consul transaction, the label of meshplane_consul_sync_transactions_total.
const (
	// TxnCommitted: every operation written.
	TxnCommitted = "committed"
	// TxnRolledBack: Consul refused operations and wrote none; the others go again without them.
	TxnRolledBack = "rolled_back"
	// TxnFailed: the request failed (Consul unreachable, or it refused the request as a whole).
	TxnFailed = "failed"
)

// Metrics are the sync's Prometheus metrics (names are a contract with the dashboards module).
type Metrics struct {
	Services     *prometheus.GaugeVec
	Writes       *prometheus.CounterVec
	Transactions *prometheus.CounterVec
	Errors       *prometheus.CounterVec
	Lag          *prometheus.HistogramVec
}

// NewMetrics creates the metrics; Register adds them to a registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshplane_consul_sync_services",
			Help: "Services currently synced, by direction (to_consul: Consul services registered from Kubernetes; to_istio: ServiceEntries from Consul).",
		}, []string{"direction"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_consul_sync_writes_total",
			Help: "Writes the sync performed, by direction and operation (register, deregister, apply, delete); to Consul, one per instance committed, however many share a transaction. A no-op resync adds none.",
		}, []string{"direction", "op"}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_consul_sync_transactions_total",
			Help: "Consul transactions (/v1/txn) of the Kubernetes to Consul direction, by outcome: committed, rolled_back (Consul refused operations; the others are sent again without them), failed (the request failed).",
		}, []string{"outcome"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_consul_sync_errors_total",
			Help: "Failed Consul or Kubernetes calls of the sync, by direction.",
		}, []string{"direction"}),
		Lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshplane_consul_sync_lag_seconds",
			Help:    "Time from a change at the source (Kubernetes event, Consul index) to the write that reflects it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"direction"}),
	}
	for _, d := range []string{DirectionToConsul, DirectionToIstio} {
		m.Services.WithLabelValues(d)
		m.Errors.WithLabelValues(d)
	}
	for _, op := range []string{"register", "deregister"} {
		m.Writes.WithLabelValues(DirectionToConsul, op)
	}
	for _, op := range []string{"apply", "delete"} {
		m.Writes.WithLabelValues(DirectionToIstio, op)
	}
	for _, o := range []string{TxnCommitted, TxnRolledBack, TxnFailed} {
		m.Transactions.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Services, m.Writes, m.Transactions, m.Errors, m.Lag}
}

// Register adds the metrics to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register consul sync metrics: %w", err)
		}
	}
	return nil
}

// Unregister removes the metrics from reg (a manager that runs again in the same process re-registers).
func (m *Metrics) Unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}
