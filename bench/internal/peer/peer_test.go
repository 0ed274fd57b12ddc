package peer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"meshplane.dev/bench/internal/peer"
	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/health"
	"meshplane.dev/mesh/httpmw"
	"meshplane.dev/mesh/logs"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
)

// The benchmarks of this file put the same handler bare, behind Meshplane's stack and behind the peer
// stack, in one run, so benchstat compares the three side by side (the mesh figures match
// mesh/httpmw's BenchmarkStack and mesh/rpc's BenchmarkUnary). The mesh stack ships its lines to a real
// Loki; the peer's lines go to io.Discard, as an agent outside the process would ship them.
//
//	go test ./bench/internal/peer -run '^$' -bench . -benchmem -count 6 | tee new.txt; benchstat old.txt new.txt

func meshLogger(b *testing.B, reg prometheus.Registerer) *slog.Logger {
	loki := devservertest.Loki(b)
	sink, err := logs.New(logs.Options{Service: "bench", Namespace: "bench", Stdout: io.Discard, LokiURL: loki.URL(),
		QueueSize: 1024, BatchWait: time.Second, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sink.Close(context.Background()) })
	return sink.Logger().With(slog.String("service", "bench"))
}

func newPeer(b *testing.B) *peer.Stack {
	ps, err := peer.New(io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ps.Close(context.Background()) })
	return ps
}

// BenchmarkHTTPStack serves one JSON answer in-process: the edge stack's own cost per request.
func BenchmarkHTTPStack(b *testing.B) {
	const route = "GET /v1/products/{id}"
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpmw.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	})
	bare := http.NewServeMux()
	bare.Handle(route, answer)

	reg := prometheus.NewRegistry()
	logger := meshLogger(b, reg)
	meshMux := http.NewServeMux()
	meshMux.Handle(route, fault.New(nil).HTTP(route, answer))
	mesh := httpmw.Chain(meshMux, httpmw.Trace, httpmw.AccessLog(logger), telemetry.NewHTTPMetrics(reg).Middleware,
		httpmw.Recover(logger), httpmw.LimitBody(httpmw.MaxBodyBytes))

	peerMux := http.NewServeMux()
	peerMux.Handle(route, answer)
	peerStack := newPeer(b).HTTP(peerMux, httpmw.MaxBodyBytes)

	for _, s := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"mesh", mesh}, {"peer", peerStack}} {
		b.Run("stack="+s.name, func(b *testing.B) {
			b.ReportAllocs()
			req := httptest.NewRequest(http.MethodGet, "/v1/products/moka-pot", nil)
			for b.Loop() {
				w := httptest.NewRecorder()
				s.h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}

// BenchmarkUnary makes one unary call over an in-memory connection with both sides' stacks: the
// server's and the client's interceptors (and, for the peer, stats handlers) per call.
func BenchmarkUnary(b *testing.B) {
	reg := prometheus.NewRegistry()
	logger := meshLogger(b, reg)
	brk := breaker.New("health", breaker.Settings{}, breaker.GRPCClassifier("health"), breaker.NewMetrics(reg))
	ps := newPeer(b)

	for _, s := range []struct {
		name   string
		server []grpc.ServerOption
		client []grpc.DialOption
	}{
		{"bare", nil, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}},
		{"mesh", rpc.ServerOptions(logger, telemetry.NewGRPCServerMetrics(reg), fault.New(nil)),
			rpc.ClientOptions(logger, telemetry.NewGRPCClientMetrics(reg), brk, time.Second)},
		{"peer", ps.GRPCServerOptions(), ps.DialOptions("health", time.Second)},
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

// TestPeerDoesTheMeshStacksJob checks that the peer is a fair opponent: an HTTP request through it that
// calls a gRPC server behind it leaves an access line and a server call line with one trace id, and the
// request's latency histogram carries that trace id as an exemplar.
func TestPeerDoesTheMeshStacksJob(t *testing.T) {
	var lines syncBuffer
	ps, err := peer.New(&lines)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close(context.Background()) })

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(ps.GRPCServerOptions()...)
	h := health.New()
	h.SetReady()
	healthpb.RegisterHealthServer(srv, h.GRPC())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dial := append(ps.DialOptions("health", time.Second),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	conn, err := grpc.NewClient("passthrough:///bufconn", dial...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		if _, err := client.Check(r.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	w := httptest.NewRecorder()
	ps.HTTP(mux, 1<<20).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/health", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /v1/health: %d %s", w.Code, w.Body)
	}

	traceIDs := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(lines.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		id, _ := l["trace_id"].(string)
		traceIDs[l["msg"].(string)+" "+fmt.Sprint(l["grpc.component"])] = id
	}
	access, call := traceIDs["http request <nil>"], traceIDs["finished call server"]
	if len(access) != 32 || access != call {
		t.Errorf("trace ids: access line %q, server call line %q; want one 32-hex id in both (lines: %s)", access, call, lines.String())
	}
	fams, err := metricstest.Gather(ps.Registry)
	if err != nil {
		t.Fatal(err)
	}
	ex := fams.Exemplars("http_server_request_duration_seconds", nil)
	if len(ex) != 1 || ex[0]["trace_id"] != access {
		t.Errorf("exemplars of http_server_request_duration_seconds: got %v, want one with trace_id %s", ex, access)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
