package health_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"meshplane.dev/mesh/health"
)

func TestReadinessFollowsLifecycle(t *testing.T) {
	h := health.New()
	check := func(step string, wantHTTP int, wantGRPC healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.Readyz().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != wantHTTP {
			t.Errorf("%s: /readyz got %d want %d", step, rec.Code, wantHTTP)
		}
		resp, err := h.GRPC().Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != wantGRPC {
			t.Errorf("%s: grpc health got %v %v want %v", step, resp.GetStatus(), err, wantGRPC)
		}
		rec = httptest.NewRecorder()
		h.Healthz().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: /healthz got %d, want 200 while the process runs", step, rec.Code)
		}
	}
	check("starting", 503, healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetReady()
	check("ready", 200, healthpb.HealthCheckResponse_SERVING)
	h.Drain()
	check("draining", 503, healthpb.HealthCheckResponse_NOT_SERVING)
	h.SetReady()
	check("ready after drain is ignored", 503, healthpb.HealthCheckResponse_NOT_SERVING)
}

// A process whose database is unreachable is not ready, says which dependency and why, and is ready
// again once it returns, without anyone calling SetReady.
func TestUnreachableDependencyFailsReadinessNamingIt(t *testing.T) {
	h := health.New()
	h.SetReady()
	readyz := func() (int, string) {
		rec := httptest.NewRecorder()
		h.Readyz().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	grpcStatus := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := h.GRPC().Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	h.SetDependency("postgres", errors.New("dial tcp 127.0.0.1:5432: connection refused"))
	if code, body := readyz(); code != http.StatusServiceUnavailable || body != "dependency unreachable: postgres: dial tcp 127.0.0.1:5432: connection refused\n" {
		t.Errorf("postgres down: /readyz got %d %q, want 503 naming postgres and why", code, body)
	}
	if grpcStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("postgres down: gRPC health got %v, want NOT_SERVING", grpcStatus())
	}
	h.SetDependency("postgres", nil)
	if code, body := readyz(); code != http.StatusOK {
		t.Errorf("postgres back: /readyz got %d %q, want 200", code, body)
	}
	if grpcStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("postgres back: gRPC health got %v, want SERVING", grpcStatus())
	}
	h.Drain()
	h.SetDependency("postgres", nil)
	if code, body := readyz(); code != http.StatusServiceUnavailable || body != "draining\n" {
		t.Errorf("draining with postgres up: /readyz got %d %q, want 503 draining", code, body)
	}
}

// /readyz?exclude=<dependency> leaves that dependency out, and only that one.
func TestReadyzExcludesNamedDependency(t *testing.T) {
	h := health.New()
	h.SetReady()
	h.SetDependency("xds-listener", errors.New("istiod has not sent the listener"))
	readyz := func(url string) int {
		rec := httptest.NewRecorder()
		h.Readyz().ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		return rec.Code
	}
	if got := readyz("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz waiting for the listener: %d, want 503", got)
	}
	if got := readyz("/readyz?exclude=xds-listener"); got != http.StatusOK {
		t.Errorf("/readyz?exclude=xds-listener: %d, want 200", got)
	}
	h.SetDependency("postgres", errors.New("connection refused"))
	if got := readyz("/readyz?exclude=xds-listener"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz?exclude=xds-listener with postgres down: %d, want 503", got)
	}
}
