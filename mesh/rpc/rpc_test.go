package rpc_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/health"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
)

func TestChainsCountPropagateAndInjectOverARealConnection(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	serverReg, clientReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	faults := fault.New(nil)
	seenTrace := make(chan string, 10)
	capture := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		seenTrace <- telemetry.TraceID(ctx)
		return h(ctx, req)
	})
	srv := grpc.NewServer(append(rpc.ServerOptions(logger, telemetry.NewGRPCServerMetrics(serverReg), faults), capture)...)
	h := health.New()
	h.SetReady()
	healthpb.RegisterHealthServer(srv, h.GRPC())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	b := breaker.New("echo", breaker.Settings{ConsecutiveFailures: 2, OpenTimeout: time.Hour}, breaker.GRPCClassifier("echo"), breaker.NewMetrics(clientReg))
	conn, err := grpc.NewClient(lis.Addr().String(), rpc.ClientOptions(logger, telemetry.NewGRPCClientMetrics(clientReg), b, time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	trace := telemetry.NewTrace("")
	ctx := telemetry.WithTrace(context.Background(), trace)
	check := func() codes.Code {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return status.Code(err)
	}

	if got := check(); got != codes.OK {
		t.Fatalf("first call: %v", got)
	}
	if got := <-seenTrace; got != trace.TraceID {
		t.Errorf("trace id on the server: got %q want %q", got, trace.TraceID)
	}
	faults.Set([]fault.Rule{{Target: "Check", ErrorRate: 1}})
	var codesSeen []codes.Code
	for range 4 { // two failures trip the breaker; the next two never leave the client
		codesSeen = append(codesSeen, check())
	}
	if diff := cmp.Diff([]codes.Code{codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable}, codesSeen); diff != "" {
		t.Errorf("codes (-want +got):\n%s", diff)
	}

	sf, _ := metricstest.Gather(serverReg)
	cf, _ := metricstest.Gather(clientReg)
	check1 := map[string]string{"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for a, b := range m {
			out[a] = b
		}
		return out
	}
	got := map[string]float64{
		"server started":         sf.Value("grpc_server_started_total", check1),
		"server OK":              sf.Value("grpc_server_handled_total", with(check1, "grpc_code", "OK")),
		"server Unavailable":     sf.Value("grpc_server_handled_total", with(check1, "grpc_code", "Unavailable")),
		"server handling (hist)": sf.Value("grpc_server_handling_seconds", check1),
		"client started":         cf.Value("grpc_client_started_total", check1),
		"client Unavailable":     cf.Value("grpc_client_handled_total", with(check1, "grpc_code", "Unavailable")),
		"breaker rejected_open":  cf.Value("meshplane_circuit_breaker_requests_total", map[string]string{"name": "echo", "result": "rejected_open"}),
		"breaker open":           cf.Value("meshplane_circuit_breaker_state", map[string]string{"name": "echo", "state": "open"}),
	}
	want := map[string]float64{
		"server started": 3, "server OK": 1, "server Unavailable": 2, "server handling (hist)": 3,
		"client started": 3, "client Unavailable": 2, "breaker rejected_open": 2, "breaker open": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// records collects what a logger wrote.
type records struct {
	mu  sync.Mutex
	got []map[string]any
}

func (r *records) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return len(p), nil
}

func (r *records) lines() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// Every finished call is logged once by the server, at the level its code calls for; the client logs
// only failures (its successes are at debug, below the logger's level).
func TestCallLog(t *testing.T) {
	var server, client records
	faults := fault.New(nil)
	srv := grpc.NewServer(rpc.ServerOptions(slog.New(slog.NewJSONHandler(&server, nil)), telemetry.NewGRPCServerMetrics(prometheus.NewRegistry()), faults)...)
	h := health.New()
	h.SetReady()
	healthpb.RegisterHealthServer(srv, h.GRPC())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), rpc.ClientOptions(slog.New(slog.NewJSONHandler(&client, nil)),
		telemetry.NewGRPCClientMetrics(prometheus.NewRegistry()), nil, time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	hc := healthpb.NewHealthClient(conn)

	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	faults.Set([]fault.Rule{{Target: "Check", ErrorRate: 1, GRPCCode: "UNAVAILABLE"}})
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("faulted call: %v, want Unavailable", err)
	}

	pick := func(m map[string]any) map[string]any {
		out := map[string]any{}
		for _, k := range []string{"level", "msg", "grpc.component", "grpc.service", "grpc.method", "grpc.method_type", "grpc.code"} {
			out[k] = m[k]
		}
		if _, ok := m["grpc.time_ms"].(float64); !ok {
			out["grpc.time_ms"] = m["grpc.time_ms"]
		}
		return out
	}
	line := func(level, component, code string) map[string]any {
		return map[string]any{"level": level, "msg": "finished call", "grpc.component": component, "grpc.service": "grpc.health.v1.Health",
			"grpc.method": "Check", "grpc.method_type": "unary", "grpc.code": code}
	}
	var gotServer, gotClient []map[string]any
	for _, m := range server.lines() {
		gotServer = append(gotServer, pick(m))
	}
	for _, m := range client.lines() {
		gotClient = append(gotClient, pick(m))
	}
	if diff := cmp.Diff([]map[string]any{line("INFO", "server", "OK"), line("WARN", "server", "Unavailable")}, gotServer); diff != "" {
		t.Errorf("server call log (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]map[string]any{line("WARN", "client", "Unavailable")}, gotClient); diff != "" {
		t.Errorf("client call log (-want +got):\n%s", diff)
	}
	if got := client.lines(); len(got) == 1 && got[0]["grpc.error"] == nil {
		t.Errorf("client line of a failed call has no grpc.error: %v", got[0])
	}
}
