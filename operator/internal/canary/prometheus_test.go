package canary_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/internal/canary"
)

// exporter serves a registry on a free port until the test ends and returns its address.
func exporter(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// Both query sets against a real Prometheus scraping exporters every second: payments v2 serves 12 gRPC
// calls for every 10 of v1, one of them Unavailable (a server error) and one NotFound (the caller's);
// behind Istio's sidecars v2 reports 13 requests per round, a gRPC Unavailable behind HTTP 200 and
// behind 503 (each an error, counted once) and a 404 (not an error). Each check must see those ratios,
// a version without calls must be zero calls rather than an error, and a Prometheus that does not answer
// must be an error, never zero.
func TestPrometheusMeasures(t *testing.T) {
	grpcHandled := []*prometheus.CounterVec{}
	grpcHandling := []*prometheus.HistogramVec{}
	addrs := map[string]string{}
	for _, v := range []string{"v1", "v2"} {
		reg := prometheus.NewRegistry()
		handled := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_handled_total"}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"})
		handling := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "grpc_server_handling_seconds", Buckets: []float64{0.1, 0.25, 0.5, 1}}, []string{"grpc_type", "grpc_service", "grpc_method"})
		reg.MustRegister(handled, handling)
		grpcHandled, grpcHandling = append(grpcHandled, handled), append(grpcHandling, handling)
		addrs[v] = exporter(t, reg)
	}
	istioReg := prometheus.NewRegistry()
	istioLabels := []string{"reporter", "destination_service_namespace", "destination_service_name", "destination_version", "response_code", "grpc_response_status"}
	istioRequests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total"}, istioLabels)
	istioDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds", Buckets: []float64{100, 250, 500, 1000}}, istioLabels)
	istioReg.MustRegister(istioRequests, istioDuration)
	addrs["istio"] = exporter(t, istioReg)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for i, v := range []string{"v1", "v2"} {
				charge := []string{"unary", "meshplane.payments.v1.PaymentService", "Charge"}
				grpcHandled[i].WithLabelValues(append(charge, "OK")...).Add(10)
				grpcHandled[i].WithLabelValues("unary", "grpc.health.v1.Health", "Check", "Unavailable").Add(100) // never counted
				for range 10 {
					grpcHandling[i].WithLabelValues(charge...).Observe(0.2)
				}
				istio := func(code, status string, n float64) {
					istioRequests.WithLabelValues("destination", "shop", "payments", v, code, status).Add(n)
					istioDuration.WithLabelValues("destination", "shop", "payments", v, code, status).Observe(200)
				}
				istio("200", "0", 10)
				if v == "v2" {
					grpcHandled[i].WithLabelValues(append(charge, "Unavailable")...).Add(1)
					grpcHandled[i].WithLabelValues(append(charge, "NotFound")...).Add(1)
					istio("200", "14", 1)
					istio("503", "14", 1)
					istio("404", "", 1)
				}
			}
		}
	}()

	config := fmt.Sprintf(`global: {scrape_interval: 1s}
scrape_configs:
  - job_name: payments
    static_configs:
      - targets: [%q]
        labels: {namespace: shop, service: payments, version: v1}
      - targets: [%q]
        labels: {namespace: shop, service: payments, version: v2}
  - job_name: istio
    static_configs:
      - targets: [%q]
`, addrs["v1"], addrs["v2"], addrs["istio"])
	prom, err := devserver.StartPrometheus(ctx, devserver.Options{Dir: t.TempDir()}, []byte(config), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Stop() })

	target := canary.Target{Namespace: "shop", Service: "payments", Quantile: 0.5,
		Stable: map[string]string{"version": "v1"}, Candidate: map[string]string{"version": "v2"}}
	for _, tt := range []struct {
		queries   canary.Queries
		wantRatio float64
	}{{canary.GRPCQueries, 1.0 / 12}, {canary.IstioQueries, 2.0 / 13}} {
		t.Run(tt.queries.Name, func(t *testing.T) {
			src, err := canary.NewPrometheus(prom.URL(), tt.queries)
			if err != nil {
				t.Fatal(err)
			}
			var m canary.Measurement
			wait.For(t, 30*time.Second, func() error {
				if m, err = src.Measure(ctx, target, 4*time.Second, time.Now()); err != nil {
					return err
				}
				if m.Candidate.Requests < 100 || m.Stable.Requests < 100 {
					return fmt.Errorf("%d and %d calls so far", int(m.Candidate.Requests), int(m.Stable.Requests))
				}
				return nil
			})
			if got := m.Candidate.Errors / m.Candidate.Requests; math.Abs(got-tt.wantRatio) > 0.02 {
				t.Errorf("candidate error ratio %.4f (%v), want %.4f", got, m.Candidate, tt.wantRatio)
			}
			if m.Stable.Errors != 0 {
				t.Errorf("stable errors %v, want 0 (health checks and 404s are not errors)", m.Stable.Errors)
			}
			// Every call took 200ms: the median lies in the (100ms, 250ms] bucket.
			if !m.Candidate.HasLatency || m.Candidate.Latency <= 100*time.Millisecond || m.Candidate.Latency > 250*time.Millisecond {
				t.Errorf("candidate p50 %v (has %v), want in (100ms, 250ms]", m.Candidate.Latency, m.Candidate.HasLatency)
			}

			silent := target
			silent.Candidate = map[string]string{"app.kubernetes.io/version": "v3"}
			m, err = src.Measure(ctx, silent, 4*time.Second, time.Now())
			if err != nil || m.Candidate.Requests != 0 || m.Candidate.HasLatency {
				t.Errorf("a version without calls: %+v, %v; want 0 calls, no latency, no error", m.Candidate, err)
			}
			if _, err := src.Measure(ctx, canary.Target{Namespace: "shop", Service: "payments", Stable: target.Stable, Candidate: map[string]string{"track": "canary"}}, 4*time.Second, time.Now()); err == nil {
				t.Error("a subset without a version label measured without error")
			}
		})
	}

	down, err := canary.NewPrometheus("http://"+closedAddr(t), canary.GRPCQueries)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := down.Measure(ctx, target, 4*time.Second, time.Now()); err == nil {
		t.Errorf("a Prometheus that is not there measured %+v without error", m)
	}
}

// closedAddr is an address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
