package rpc_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/health"
	"meshplane.dev/mesh/logs"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
)

// BenchmarkUnary makes one unary call over an in-memory connection, with neither side's interceptors
// (bare) and with both Meshplane chains (mesh): the server's trace, metrics, logging to a real Loki,
// recovery and fault hook, and the client's trace, deadline, circuit breaker, metrics and logging. What
// is left after the bare figure is the interceptors' cost per call. Compare with benchstat:
//
//	go test ./mesh/rpc -run '^$' -bench Unary -count 6 | tee new.txt; benchstat old.txt new.txt
func BenchmarkUnary(b *testing.B) {
	loki := devservertest.Loki(b)
	reg := prometheus.NewRegistry()
	sink, err := logs.New(logs.Options{Service: "bench", Namespace: "bench", Stdout: io.Discard, LokiURL: loki.URL(),
		QueueSize: 1024, BatchWait: time.Second, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sink.Close(b.Context()) })
	logger := sink.Logger().With(slog.String("service", "bench"))
	brk := breaker.New("health", breaker.Settings{}, breaker.GRPCClassifier("health"), breaker.NewMetrics(reg))

	for _, s := range []struct {
		name   string
		server []grpc.ServerOption
		client []grpc.DialOption
	}{
		{"bare", nil, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}},
		{"mesh", rpc.ServerOptions(logger, telemetry.NewGRPCServerMetrics(reg), fault.New(nil)),
			rpc.ClientOptions(logger, telemetry.NewGRPCClientMetrics(reg), brk, time.Second)},
	} {
		b.Run("stack="+s.name, func(b *testing.B) {
			b.ReportAllocs()
			client := serve(b, s.server, s.client)
			ctx := context.Background()
			for b.Loop() {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// serve runs a health server with opts on an in-memory listener and returns a client dialled with dial.
func serve(b *testing.B, opts []grpc.ServerOption, dial []grpc.DialOption) healthpb.HealthClient {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(opts...)
	h := health.New()
	h.SetReady()
	healthpb.RegisterHealthServer(srv, h.GRPC())
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	dial = append(dial, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	conn, err := grpc.NewClient("passthrough:///bufconn", dial...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}
