// Package hotpath measures what the mesh library costs on a request's hot path: an HTTP handler and a
// gRPC method, each calling a downstream gRPC service, served bare, behind the full stack a Meshplane
// service runs (trace, access logs shipped to a real Loki, metrics, panic recovery, body limit, fault
// hooks; on the client side the dependency's circuit breaker, deadline, metrics and logging), and behind
// the peer stack a Go team would otherwise assemble (package peer: OpenTelemetry with its Prometheus
// exporter, slog and go-grpc-middleware logging, gobreaker), under the same closed-loop load from the
// same Go load generator, in one process, interleaved in rounds so that noise from the shared machine
// hits all three alike.
package hotpath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshplane.dev/bench/internal/peer"
	"meshplane.dev/bench/internal/report"
	"meshplane.dev/mesh/devkit/load"
	"meshplane.dev/mesh/httpmw"
	"meshplane.dev/mesh/service"
	"meshplane.dev/mesh/telemetry"
	catalogv1 "meshplane.dev/services/proto/catalog/v1"
)

// Options configure the measurement.
type Options struct {
	// LokiURL is the base URL of a running Loki, where the mesh stack ships its logs.
	LokiURL string
	// Dir receives the mesh stack's stdout log.
	Dir string
	// Duration is how long each stack is loaded per round, after Warmup.
	Duration, Warmup time.Duration
	// Rounds alternates bare, mesh and peer this many times.
	Rounds int
	// Concurrency is the number of requests in flight (closed loop).
	Concurrency int
	// Log receives progress.
	Log io.Writer
}

const section = "Service hot path"

// Run measures both protocols bare and behind the mesh stack and returns the rows of the table.
func Run(ctx context.Context, o Options) ([]report.Row, error) {
	backend, err := startBackend()
	if err != nil {
		return nil, err
	}
	defer backend.Stop()

	bare, err := startBare(backend.addr)
	if err != nil {
		return nil, err
	}
	defer bare.stop()
	mesh, err := startMesh(ctx, backend.addr, o)
	if err != nil {
		return nil, err
	}
	defer mesh.stop()
	peerStack, err := startPeer(backend.addr, o)
	if err != nil {
		return nil, err
	}
	defer peerStack.stop()

	type run struct {
		name string
		load func(ctx context.Context, d time.Duration) load.Result
	}
	runs := []run{
		{"http bare", func(ctx context.Context, d time.Duration) load.Result {
			return loadHTTP(ctx, bare.httpURL, o.Concurrency, d)
		}},
		{"http mesh", func(ctx context.Context, d time.Duration) load.Result {
			return loadHTTP(ctx, mesh.httpURL, o.Concurrency, d)
		}},
		{"http peer", func(ctx context.Context, d time.Duration) load.Result {
			return loadHTTP(ctx, peerStack.httpURL, o.Concurrency, d)
		}},
		{"grpc bare", func(ctx context.Context, d time.Duration) load.Result {
			return loadGRPC(ctx, bare.grpcAddr, o.Concurrency, d)
		}},
		{"grpc mesh", func(ctx context.Context, d time.Duration) load.Result {
			return loadGRPC(ctx, mesh.grpcAddr, o.Concurrency, d)
		}},
		{"grpc peer", func(ctx context.Context, d time.Duration) load.Result {
			return loadGRPC(ctx, peerStack.grpcAddr, o.Concurrency, d)
		}},
	}
	results := map[string]*load.Result{}
	for round := range o.Rounds {
		for _, r := range runs {
			if w := r.load(ctx, o.Warmup); w.Err != nil {
				return nil, fmt.Errorf("%s warm-up: %w", r.name, w.Err)
			}
			res := r.load(ctx, o.Duration)
			if res.Err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, res.Err)
			}
			fmt.Fprintf(o.Log, "hot path round %d, %s: %.0f req/s, p50 %s, p99 %s\n", round+1, r.name, res.RPS(), ms(res.Percentile(50)), ms(res.Percentile(99)))
			if results[r.name] == nil {
				results[r.name] = &load.Result{}
			}
			results[r.name].Add(res)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Stopping the mesh stack flushes its queue to Loki, so lines still queued count as shipped only
	// once they are, and the shutdown's drops are counted too.
	mesh.stop()
	lines, sampledOut, dropped := mesh.logCounts()
	var droppedAll float64
	for _, n := range dropped {
		droppedAll += n
	}
	rows := compare("HTTP GET /v1/products/{id} → gRPC GetProduct downstream", results["http mesh"], results["http bare"], results["http peer"], o)
	rows = append(rows, compare("gRPC GetProduct → gRPC GetProduct downstream", results["grpc mesh"], results["grpc bare"], results["grpc peer"], o)...)
	rows = append(rows, report.Row{Section: section,
		Figure: "mesh stack's log lines shipped to Loki / sampled out under pressure (info lines, on stdout) / dropped (of which queue full, send failed, shutdown)",
		Value: fmt.Sprintf("%.0f / %.0f / %.0f (%.0f, %.0f, %.0f)", lines-sampledOut-droppedAll, sampledOut, droppedAll,
			dropped["queue_full"], dropped["send_failed"], dropped["shutdown"]),
		Target: "0 dropped", Met: yesNo(droppedAll == 0)})
	return rows, nil
}

func compare(what string, mesh, bare, peerRes *load.Result, o Options) []report.Row {
	share := mesh.RPS() / bare.RPS()
	// What a stack adds to each request: the machine's time per request beyond bare's. The load keeps
	// the machine busy, so 1/req/s is the machine's time per request.
	meshCost := 1e6/mesh.RPS() - 1e6/bare.RPS()
	peerCost := 1e6/peerRes.RPS() - 1e6/bare.RPS()
	return []report.Row{
		{Section: section, Figure: fmt.Sprintf("%s: req/s, %d in flight (mesh stack; floor: bare)", what, o.Concurrency),
			Value: fmt.Sprintf("%.0f", mesh.RPS()), Floor: fmt.Sprintf("%.0f", bare.RPS()),
			Ratio: fmt.Sprintf("%.0f %%", 100*share), Target: "≥ 90 % of bare", Met: yesNo(share >= 0.9)},
		{Section: section, Figure: what + ": latency p50 / p99",
			Value: ms(mesh.Percentile(50)) + " / " + ms(mesh.Percentile(99)),
			Floor: ms(bare.Percentile(50)) + " / " + ms(bare.Percentile(99)),
			Ratio: fmt.Sprintf("%.2f× / %.2f×", ratio(mesh.Percentile(50), bare.Percentile(50)), ratio(mesh.Percentile(99), bare.Percentile(99)))},
		{Section: section, Figure: fmt.Sprintf("%s: req/s, %d in flight (peer stack: OpenTelemetry, slog, go-grpc-middleware, gobreaker; floor: bare)", what, o.Concurrency),
			Value: fmt.Sprintf("%.0f", peerRes.RPS()), Floor: fmt.Sprintf("%.0f", bare.RPS()),
			Ratio: fmt.Sprintf("%.0f %%", 100*peerRes.RPS()/bare.RPS())},
		{Section: section, Figure: what + ": time added per request, mesh stack (floor: peer stack)",
			Value: fmt.Sprintf("%.1f µs", meshCost), Floor: fmt.Sprintf("%.1f µs", peerCost),
			Ratio: fmt.Sprintf("%.2f×", meshCost/peerCost), Target: "< 1× (cheaper than the peer)", Met: yesNo(meshCost < peerCost)},
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// backend is the downstream service, the same plain gRPC server for both stacks.
type backend struct {
	*grpc.Server
	addr string
}

type catalogServer struct {
	catalogv1.UnimplementedCatalogServiceServer
}

func (catalogServer) GetProduct(_ context.Context, req *catalogv1.GetProductRequest) (*catalogv1.Product, error) {
	return &catalogv1.Product{Id: req.GetId(), Name: "Moka pot", Description: "Stovetop espresso maker, 6 cups.", PriceCents: 3490, Currency: "EUR"}, nil
}

func startBackend() (*backend, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer()
	catalogv1.RegisterCatalogServiceServer(s, catalogServer{})
	go func() { _ = s.Serve(l) }()
	return &backend{Server: s, addr: l.Addr().String()}, nil
}

// front is the service under test: its HTTP handler and gRPC method both ask the downstream.
type front struct {
	catalogv1.UnimplementedCatalogServiceServer
	catalog catalogv1.CatalogServiceClient
}

func (f front) GetProduct(ctx context.Context, req *catalogv1.GetProductRequest) (*catalogv1.Product, error) {
	return f.catalog.GetProduct(ctx, req)
}

// productJSON is the HTTP answer.
type productJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"priceCents"`
	Currency   string `json:"currency"`
}

// getProduct is the HTTP handler, the same code in both stacks.
func getProduct(c catalogv1.CatalogServiceClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := c.GetProduct(r.Context(), &catalogv1.GetProductRequest{Id: r.PathValue("id")})
		if err != nil {
			httpmw.WriteError(w, http.StatusServiceUnavailable, httpmw.Error{Message: err.Error()})
			return
		}
		httpmw.WriteJSON(w, http.StatusOK, productJSON{ID: p.GetId(), Name: p.GetName(), PriceCents: p.GetPriceCents(), Currency: p.GetCurrency()})
	})
}

const route = "GET /v1/products/{id}"

// stack is a front served over HTTP and gRPC.
type stack struct {
	httpURL, grpcAddr string
	stop              func()
	registry          *prometheus.Registry
}

func listeners() (net.Listener, net.Listener, error) {
	h, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	g, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return h, g, nil
}

// startBare serves the handler and the method with nothing around them, calling the downstream over a
// plain connection.
func startBare(downstream string) (*stack, error) {
	conn, err := grpc.NewClient(downstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	hl, gl, err := listeners()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	client := catalogv1.NewCatalogServiceClient(conn)
	mux := http.NewServeMux()
	mux.Handle(route, getProduct(client))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer()
	catalogv1.RegisterCatalogServiceServer(gs, front{catalog: client})
	go func() { _ = hs.Serve(hl) }()
	go func() { _ = gs.Serve(gl) }()
	return &stack{
		httpURL: "http://" + hl.Addr().String() + "/v1/products/moka-pot", grpcAddr: gl.Addr().String(),
		stop: func() { _ = hs.Close(); gs.Stop(); _ = conn.Close() },
	}, nil
}

// startMesh serves the same handler and method as a Meshplane service does: through service.Runtime
// (logs to stdout and Loki, metrics registry, faults), the gateway's middleware chain, the runtime's gRPC
// server options, and the runtime's Dial (breaker, deadline, client metrics and logs) to the downstream.
func startMesh(ctx context.Context, downstream string, o Options) (*stack, error) {
	cfg := service.DefaultConfig("127.0.0.1:0")
	cfg.Namespace = "bench"
	cfg.LokiURL = o.LokiURL
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stdout, err := os.Create(filepath.Join(o.Dir, "hotpath-mesh.log"))
	if err != nil {
		return nil, err
	}
	rt, err := service.Start("bench-front", cfg, stdout)
	if err != nil {
		stdout.Close()
		return nil, err
	}
	conn, err := rt.Dial("catalog", downstream, service.DefaultClientConfig())
	if err != nil {
		rt.Close()
		stdout.Close()
		return nil, err
	}
	client := catalogv1.NewCatalogServiceClient(conn)
	metrics := telemetry.NewHTTPMetrics(rt.Registry)
	mux := http.NewServeMux()
	mux.Handle(route, rt.Faults.HTTP(route, getProduct(client)))
	handler := httpmw.Chain(mux,
		httpmw.Trace,
		httpmw.AccessLog(rt.Logger),
		metrics.Middleware,
		httpmw.Recover(rt.Logger),
		httpmw.LimitBody(httpmw.MaxBodyBytes),
	)
	gs := grpc.NewServer(rt.GRPCServerOptions()...)
	catalogv1.RegisterCatalogServiceServer(gs, front{catalog: client})
	rt.GRPCServerMetrics().InitializeMetrics(gs)
	hl, gl, err := listeners()
	if err != nil {
		_ = conn.Close()
		rt.Close()
		stdout.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- rt.Serve(sctx,
			service.Traffic{Server: service.HTTPServer{Server: &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}}, Listener: hl},
			service.Traffic{Server: service.GRPC(gs), Listener: gl})
	}()
	var once sync.Once
	return &stack{
		httpURL: "http://" + hl.Addr().String() + "/v1/products/moka-pot", grpcAddr: gl.Addr().String(),
		registry: rt.Registry,
		stop: func() {
			once.Do(func() {
				cancel()
				if err := <-served; err != nil {
					rt.Logger.Warn("serve", slog.String("error", err.Error()))
				}
				_ = conn.Close()
				rt.Close()
				stdout.Close()
			})
		},
	}, nil
}

// startPeer serves the same handler and method behind the peer stack (package peer), calling the
// downstream through the peer's client options.
func startPeer(downstream string, o Options) (*stack, error) {
	logs, err := os.Create(filepath.Join(o.Dir, "hotpath-peer.log"))
	if err != nil {
		return nil, err
	}
	ps, err := peer.New(logs)
	if err != nil {
		logs.Close()
		return nil, err
	}
	conn, err := grpc.NewClient(downstream, ps.DialOptions("catalog", service.DefaultClientConfig().CallTimeout)...)
	if err != nil {
		logs.Close()
		return nil, err
	}
	hl, gl, err := listeners()
	if err != nil {
		_ = conn.Close()
		logs.Close()
		return nil, err
	}
	client := catalogv1.NewCatalogServiceClient(conn)
	mux := http.NewServeMux()
	mux.Handle(route, getProduct(client))
	hs := &http.Server{Handler: ps.HTTP(mux, httpmw.MaxBodyBytes), ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer(ps.GRPCServerOptions()...)
	catalogv1.RegisterCatalogServiceServer(gs, front{catalog: client})
	go func() { _ = hs.Serve(hl) }()
	go func() { _ = gs.Serve(gl) }()
	return &stack{
		httpURL: "http://" + hl.Addr().String() + "/v1/products/moka-pot", grpcAddr: gl.Addr().String(),
		registry: ps.Registry,
		stop: func() {
			_ = hs.Close()
			gs.Stop()
			_ = conn.Close()
			_ = ps.Close(context.Background())
			logs.Close()
		},
	}, nil
}

// logCounts returns the lines the mesh stack logged, those its sampling kept from Loki and, by reason,
// those it dropped before Loki.
func (s *stack) logCounts() (lines, sampledOut float64, dropped map[string]float64) {
	dropped = map[string]float64{}
	fams, err := s.registry.Gather()
	if err != nil {
		return 0, 0, dropped
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "meshplane_log_lines_total":
				lines += m.GetCounter().GetValue()
			case "meshplane_log_lines_sampled_out_total":
				sampledOut += m.GetCounter().GetValue()
			case "meshplane_log_lines_dropped_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" {
						dropped[l.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return lines, sampledOut, dropped
}

func loadHTTP(ctx context.Context, url string, n int, d time.Duration) load.Result {
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	return load.Closed(ctx, n, d, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	})
}

func loadGRPC(ctx context.Context, addr string, n int, d time.Duration) load.Result {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return load.Result{Err: err}
	}
	defer func() { _ = conn.Close() }()
	c := catalogv1.NewCatalogServiceClient(conn)
	return load.Closed(ctx, n, d, func(ctx context.Context) error {
		p, err := c.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "moka-pot"})
		if err != nil {
			return err
		}
		if p.GetId() != "moka-pot" {
			return errors.New("GetProduct: wrong product " + strings.TrimSpace(p.GetId()))
		}
		return nil
	})
}
