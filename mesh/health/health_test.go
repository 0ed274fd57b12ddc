package health_test

import (
	"context"
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
