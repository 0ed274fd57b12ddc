package breaker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
)

var errBoom = errors.New("boom")

func gather(t *testing.T, reg *prometheus.Registry) metricstest.Families {
	t.Helper()
	f, err := metricstest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func stateGauge(f metricstest.Families, name string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range []string{"closed", "half_open", "open"} {
		out[s] = f.Value("meshplane_circuit_breaker_state", map[string]string{"name": name, "state": s})
	}
	return out
}

func TestBreakerMetricsFollowAFullCycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := breaker.NewMetrics(reg)
	b := breaker.New("payments", breaker.Settings{ConsecutiveFailures: 2, OpenTimeout: 50 * time.Millisecond}, nil, m)

	if got := stateGauge(gather(t, reg), "payments"); !cmp.Equal(got, map[string]float64{"closed": 1, "half_open": 0, "open": 0}) {
		t.Fatalf("new breaker state gauge: got %v, want closed=1 only", got)
	}
	_ = b.Do(func() error { return nil })
	_ = b.Do(func() error { return errBoom })
	_ = b.Do(func() error { return errBoom }) // trips
	called := false
	if err := b.Do(func() error { called = true; return nil }); !errors.Is(err, breaker.ErrOpen) || called {
		t.Fatalf("call while open: got err %v, called %v; want ErrOpen without calling", err, called)
	}
	if got := stateGauge(gather(t, reg), "payments"); !cmp.Equal(got, map[string]float64{"closed": 0, "half_open": 0, "open": 1}) {
		t.Fatalf("after two failures: got %v, want open=1 only", got)
	}

	// The state is read at scrape time, which also moves an expired open breaker to half-open.
	wait.For(t, 5*time.Second, func() error {
		if got := stateGauge(gather(t, reg), "payments"); got["half_open"] != 1 {
			return errors.New("not half-open yet")
		}
		return nil
	})
	if err := b.Do(func() error { return nil }); err != nil { // the probe succeeds: closed again
		t.Fatalf("probe: %v", err)
	}

	f := gather(t, reg)
	if got := stateGauge(f, "payments"); !cmp.Equal(got, map[string]float64{"closed": 1, "half_open": 0, "open": 0}) {
		t.Errorf("after probe: got %v, want closed=1 only", got)
	}
	gotTransitions := map[string]float64{}
	for _, tr := range [][2]string{{"closed", "open"}, {"open", "half_open"}, {"half_open", "closed"}, {"half_open", "open"}, {"closed", "half_open"}} {
		gotTransitions[tr[0]+">"+tr[1]] = f.Value("meshplane_circuit_breaker_transitions_total", map[string]string{"name": "payments", "from": tr[0], "to": tr[1]})
	}
	wantTransitions := map[string]float64{"closed>open": 1, "open>half_open": 1, "half_open>closed": 1, "half_open>open": 0, "closed>half_open": 0}
	if diff := cmp.Diff(wantTransitions, gotTransitions); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
	gotRequests := map[string]float64{}
	for _, r := range []string{"success", "failure", "excluded", "rejected_open", "rejected_half_open"} {
		gotRequests[r] = f.Value("meshplane_circuit_breaker_requests_total", map[string]string{"name": "payments", "result": r})
	}
	wantRequests := map[string]float64{"success": 2, "failure": 2, "excluded": 0, "rejected_open": 1, "rejected_half_open": 0}
	if diff := cmp.Diff(wantRequests, gotRequests); diff != "" {
		t.Errorf("requests by result (-want +got):\n%s", diff)
	}
}

func TestHalfOpenRejectsBeyondItsProbes(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := breaker.New("catalog", breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: 20 * time.Millisecond}, nil, breaker.NewMetrics(reg))
	_ = b.Do(func() error { return errBoom })
	wait.For(t, 5*time.Second, func() error {
		if b.State() != breaker.StateHalfOpen {
			return errors.New("state " + b.State())
		}
		return nil
	})
	done, err := b.Allow() // the one probe
	if err != nil {
		t.Fatalf("probe rejected: %v", err)
	}
	if _, err := b.Allow(); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("second call while the probe runs: got %v, want rejection", err)
	}
	done(nil)
	got := gather(t, reg).Value("meshplane_circuit_breaker_requests_total", map[string]string{"name": "catalog", "result": "rejected_half_open"})
	if got != 1 {
		t.Errorf("rejected_half_open: got %v want 1", got)
	}
}

func TestGRPCClassifier(t *testing.T) {
	classify := breaker.GRPCClassifier("orders")
	tests := []struct {
		name string
		err  error
		want breaker.Result
	}{
		{"ok", nil, breaker.Success},
		{"unavailable", status.Error(codes.Unavailable, "down"), breaker.Failure},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), breaker.Failure},
		{"internal", status.Error(codes.Internal, "bug"), breaker.Failure},
		{"invalid argument is an answer", status.Error(codes.InvalidArgument, "bad"), breaker.Success},
		{"not found is an answer", status.Error(codes.NotFound, "no"), breaker.Success},
		{"caller cancelled", status.Error(codes.Canceled, "gone"), breaker.Excluded},
		{"context cancelled", context.Canceled, breaker.Excluded},
		{"the callee's own dependency failed", breaker.DependencyError(codes.Unavailable, "payments", breaker.ReasonCircuitOpen, "open"), breaker.Excluded},
		{"the callee itself is named", breaker.DependencyError(codes.Unavailable, "orders", breaker.ReasonUnavailable, "down"), breaker.Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.err); got != tt.want {
				t.Errorf("classify(%v): got %v want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestInterceptorFailsFastNamingTheDependency(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := breaker.New("payments", breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour}, breaker.GRPCClassifier("payments"), breaker.NewMetrics(reg))
	icpt := b.UnaryClientInterceptor()
	calls := 0
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		calls++
		return status.Error(codes.Unavailable, "connection refused")
	}
	_ = icpt(context.Background(), "/payments.v1.PaymentService/Charge", nil, nil, nil, invoker)
	err := icpt(context.Background(), "/payments.v1.PaymentService/Charge", nil, nil, nil, invoker)
	if calls != 1 {
		t.Errorf("calls reaching the dependency: got %d want 1", calls)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("code: got %v want Unavailable", status.Code(err))
	}
	dep, reason, ok := breaker.FailedDependency(err)
	if !ok || dep != "payments" || reason != breaker.ReasonCircuitOpen {
		t.Errorf("FailedDependency: got %q %q %v, want payments CIRCUIT_OPEN", dep, reason, ok)
	}
}
