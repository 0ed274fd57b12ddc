// Package health tracks whether a process is alive and ready for traffic, for HTTP probes
// (/healthz, /readyz) and the standard gRPC health service (grpc.health.v1) alike. Readiness fails
// the moment draining starts, before any server stops, so load balancers, Consul and kubelet stop
// sending new requests while in-flight ones finish.
package health

import (
	"net/http"
	"sync/atomic"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health is a process's liveness and readiness.
type Health struct {
	ready    atomic.Bool
	draining atomic.Bool
	grpc     *health.Server
}

// New returns a Health that is alive, not ready, and reports NOT_SERVING over gRPC until SetReady.
func New() *Health {
	h := &Health{grpc: health.NewServer()}
	h.grpc.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return h
}

// SetReady marks the process ready, unless it is already draining.
func (h *Health) SetReady() {
	if h.draining.Load() {
		return
	}
	h.ready.Store(true)
	h.grpc.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
}

// Drain marks the process not ready, for good.
func (h *Health) Drain() {
	h.draining.Store(true)
	h.ready.Store(false)
	h.grpc.Shutdown() // every service NOT_SERVING; later SetServingStatus calls are ignored
}

// Ready reports whether the process accepts traffic.
func (h *Health) Ready() bool { return h.ready.Load() }

// Draining reports whether shutdown has begun.
func (h *Health) Draining() bool { return h.draining.Load() }

// GRPC is the grpc.health.v1 server to register on the process's gRPC server.
func (h *Health) GRPC() healthpb.HealthServer { return h.grpc }

// Healthz answers 200 while the process runs.
func (h *Health) Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
}

// Readyz answers 200 when ready, 503 before that and once draining.
func (h *Health) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch {
		case h.Ready():
			_, _ = w.Write([]byte("ready\n"))
		case h.Draining():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("starting\n"))
		}
	})
}
