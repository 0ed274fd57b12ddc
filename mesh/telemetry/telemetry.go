// Package telemetry gives a process its Prometheus registry (never the global default one), build
// info, RED metrics for the HTTP edge in OpenTelemetry semantic-convention names, the ecosystem's gRPC
// metrics, and the trace context that ties a request's metrics exemplars, logs and downstream calls
// together.
package telemetry

import (
	"net/http"
	"runtime"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors and
// meshplane_build_info{version, goversion} = 1.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshplane_build_info",
		Help: "Build information of the running binary; always 1.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(info)
	return reg
}

// Handler serves reg in the Prometheus and OpenMetrics formats; exemplars are only exposed in
// OpenMetrics, which Prometheus negotiates when exemplar storage is enabled.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})
}

// DurationBuckets are the histogram buckets, in seconds, shared by the HTTP and gRPC duration
// metrics so their latency classes line up on dashboards.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewGRPCServerMetrics registers grpc_server_{started,handled}_total, grpc_server_msg_*_total and the
// grpc_server_handling_seconds histogram in reg.
func NewGRPCServerMetrics(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(DurationBuckets)))
	reg.MustRegister(m)
	return m
}

// NewGRPCClientMetrics registers grpc_client_{started,handled}_total, grpc_client_msg_*_total and the
// grpc_client_handling_seconds histogram in reg.
func NewGRPCClientMetrics(reg prometheus.Registerer) *grpcprom.ClientMetrics {
	m := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(grpcprom.WithHistogramBuckets(DurationBuckets)))
	reg.MustRegister(m)
	return m
}
