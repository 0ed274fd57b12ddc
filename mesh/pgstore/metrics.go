package pgstore

import (
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names; dashboards/signal declares them for the dashboards and alerts.
const (
	MetricQueryDuration   = "meshplane_db_query_duration_seconds"
	MetricPoolConnections = "meshplane_db_pool_connections"
	MetricPoolMax         = "meshplane_db_pool_max_connections"
	MetricPoolWaiting     = "meshplane_db_pool_waiting"
	MetricPoolWaits       = "meshplane_db_pool_waits_total"
	MetricPoolWaitSeconds = "meshplane_db_pool_wait_seconds_total"
	MetricUp              = "meshplane_db_up"
)

// Results of an operation, the result label of MetricQueryDuration.
const (
	ResultOK      = "ok"      // done, including answers such as "no such row"
	ResultError   = "error"   // the database failed or refused it (unreachable, shutting down, a query error)
	ResultTimeout = "timeout" // it ran out of time: the query timeout or the request's deadline
)

type metrics struct {
	duration *prometheus.HistogramVec
	up       prometheus.Gauge
	waiting  atomic.Int64
}

func newMetrics(reg prometheus.Registerer, pool *pgxpool.Pool, operations []string) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricQueryDuration,
			Help:    "Database operations (a query or a transaction, waiting for a connection included) by operation and result: ok, error, timeout.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation", "result"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricUp,
			Help: "1 while the database answers the periodic probe, 0 while it does not (the process is then not ready).",
		}),
	}
	for _, op := range operations {
		for _, r := range []string{ResultOK, ResultError, ResultTimeout} {
			m.duration.WithLabelValues(op, r)
		}
	}
	reg.MustRegister(m.duration, m.up, &poolCollector{pool: pool, waiting: &m.waiting})
	return m
}

// poolCollector reads the pool's statistics at scrape time.
type poolCollector struct {
	pool    *pgxpool.Pool
	waiting *atomic.Int64
}

var (
	poolConnsDesc = prometheus.NewDesc(MetricPoolConnections,
		"Open connections of the pool by state: in_use (lent to an operation), idle, opening.", []string{"state"}, nil)
	poolMaxDesc = prometheus.NewDesc(MetricPoolMax,
		"Most connections the pool may open (DATABASE_MAX_CONNS).", nil, nil)
	poolWaitingDesc = prometheus.NewDesc(MetricPoolWaiting,
		"Operations waiting for a connection right now: the pool is saturated while this stays above 0.", nil, nil)
	poolWaitsDesc = prometheus.NewDesc(MetricPoolWaits,
		"Connection requests that found no idle connection and had to wait for one to open or be returned.", nil, nil)
	poolWaitSecondsDesc = prometheus.NewDesc(MetricPoolWaitSeconds,
		"Time spent by those requests waiting for a connection.", nil, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConnsDesc, poolMaxDesc, poolWaitingDesc, poolWaitsDesc, poolWaitSecondsDesc} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.AcquiredConns()), "in_use")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.ConstructingConns()), "opening")
	ch <- prometheus.MustNewConstMetric(poolMaxDesc, prometheus.GaugeValue, float64(st.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolWaitingDesc, prometheus.GaugeValue, float64(c.waiting.Load()))
	ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWaitSecondsDesc, prometheus.CounterValue, st.EmptyAcquireWaitTime().Seconds())
}
