// Package health tracks whether a process is alive and ready for traffic, for HTTP probes
// (/healthz, /readyz) and the standard gRPC health service (grpc.health.v1) alike. Readiness fails
// the moment draining starts, before any server stops, so load balancers, Consul and kubelet stop
// sending new requests while in-flight ones finish. It also fails while a dependency the process
// cannot serve without (its database) is unreachable, naming it, and returns when the dependency does.
package health

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health is a process's liveness and readiness.
type Health struct {
	ready    atomic.Bool
	draining atomic.Bool
	grpc     *health.Server

	mu      sync.Mutex
	failing map[string]error // dependency name → why it is unreachable
}

// New returns a Health that is alive, not ready, and reports NOT_SERVING over gRPC until SetReady.
func New() *Health {
	h := &Health{grpc: health.NewServer(), failing: map[string]error{}}
	h.grpc.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return h
}

// SetReady marks the process ready, unless it is already draining.
func (h *Health) SetReady() {
	if h.draining.Load() {
		return
	}
	h.ready.Store(true)
	h.publish()
}

// SetDependency records whether dependency name, one the process cannot serve without, is reachable:
// a nil err means it is. While any such dependency fails the process is not ready (gRPC health
// NOT_SERVING too) and /readyz says which and why.
func (h *Health) SetDependency(name string, err error) {
	h.mu.Lock()
	if err == nil {
		delete(h.failing, name)
	} else {
		h.failing[name] = err
	}
	h.mu.Unlock()
	h.publish()
}

// FailingDependencies describes each unreachable dependency as "name: error", sorted by name.
func (h *Health) FailingDependencies() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.failing))
	for _, name := range slices.Sorted(maps.Keys(h.failing)) {
		out = append(out, fmt.Sprintf("%s: %v", name, h.failing[name]))
	}
	return out
}

// publish sets the gRPC serving status from the current state; after Drain the gRPC server ignores it.
func (h *Health) publish() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if h.Ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	h.grpc.SetServingStatus("", st)
}

// Drain marks the process not ready, for good.
func (h *Health) Drain() {
	h.draining.Store(true)
	h.ready.Store(false)
	h.grpc.Shutdown() // every service NOT_SERVING; later SetServingStatus calls are ignored
}

// Ready reports whether the process accepts traffic: started, not draining, every dependency reachable.
func (h *Health) Ready() bool {
	if !h.ready.Load() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.failing) == 0
}

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

// Readyz answers 200 when ready; 503 before that, once draining, and while a dependency is
// unreachable ("dependency unreachable: postgres: ..."). ?exclude=<dependency> (repeatable) leaves that
// dependency out, as kube-apiserver's /readyz?exclude= leaves out a check: for a registry whose own
// state the dependency waits on (istiod sends a WorkloadEntry's inbound listener only while the entry
// is healthy, so its health cannot wait for the listener).
func (h *Health) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		exclude := r.URL.Query()["exclude"]
		var failing []string
		for _, f := range h.FailingDependencies() {
			name, _, _ := strings.Cut(f, ": ")
			if !slices.Contains(exclude, name) {
				failing = append(failing, f)
			}
		}
		switch {
		case h.Draining():
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
		case len(failing) > 0:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("dependency unreachable: " + strings.Join(failing, "; ") + "\n"))
		case h.ready.Load():
			_, _ = w.Write([]byte("ready\n"))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("starting\n"))
		}
	})
}
