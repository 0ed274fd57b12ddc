package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/load"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
)

// XDSOptions configure the proxyless gRPC section.
type XDSOptions struct {
	// Client and Kubeconfig reach the API server istiod watches.
	Client     client.Client
	Kubeconfig string
	// Duration is each measured load per stack and round, after Warmup; Rounds alternate the two.
	Duration, Warmup time.Duration
	Rounds           int
	// Concurrency is the calls in flight (closed loop).
	Concurrency int
	// Dir receives istiod's data and log.
	Dir string
	// Log receives progress.
	Log io.Writer
}

const xdsSection = "Proxyless gRPC (istiod)"

// xdsAddress is the loopback address the measured server listens on: its WorkloadEntry's, distinct
// from anything else on the machine.
const xdsAddress = "127.0.101.1"

// XDS measures a gRPC call through gRPC's xDS client — routes, clusters and endpoints from a real istiod
// — against the same call on a plain channel to the same server, under the same closed-loop load,
// interleaved in rounds. The server is a grpc.health.v1 Check handler, so the figure is what the
// mesh's client side costs, not what a handler does.
func XDS(ctx context.Context, o XDSOptions, emit func(Row) error) error {
	for _, ns := range []string{devserver.IstiodNamespace, "bench-xds"} {
		if err := workload.EnsureNamespace(ctx, o.Client, ns); err != nil {
			return err
		}
	}
	fmt.Fprintln(o.Log, "xds: starting istiod against the API server")
	d, err := devserver.StartIstiod(ctx, devserver.Options{Dir: filepath.Join(o.Dir, "istiod"), ReadyTimeout: 3 * time.Minute}, o.Kubeconfig, nil)
	if err != nil {
		return err
	}
	defer func() { _ = d.Stop() }()

	lis, err := net.Listen("tcp", net.JoinHostPort(xdsAddress, "0"))
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	port := lis.Addr().(*net.TCPAddr).Port

	svc := workload.Service{Name: "echo", Namespace: "bench-xds", Ports: []workload.Port{{Name: "grpc", Port: 9000}}}
	if err := workload.Apply(ctx, o.Client, svc, workload.Instance{Name: "echo-0", IP: xdsAddress, Ports: map[string]uint32{"grpc": uint32(port)}}); err != nil {
		return err
	}
	caller := proxyless.Bootstrap{
		Node:    proxyless.Node{Name: "bench-client", Namespace: "bench-xds", IP: "127.0.0.1", Labels: map[string]string{"app": "bench-client"}},
		XDSAddr: d.XDSAddr,
	}
	viaXDS, err := scenario.DialXDS(caller, proxyless.Target(svc.Name, svc.Namespace, 9000, ""))
	if err != nil {
		return err
	}
	defer func() { _ = viaXDS.Close() }()
	plain, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = plain.Close() }()

	// The first call waits for istiod's listener, route, cluster and endpoints.
	xdsHealth := healthpb.NewHealthClient(viaXDS)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := wait.Until(wctx, 200*time.Millisecond, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := xdsHealth.Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}); err != nil {
		return fmt.Errorf("first call through istiod: %w", err)
	}

	type stack struct {
		name string
		conn *grpc.ClientConn
	}
	stacks := []stack{{"plain", plain}, {"xds", viaXDS}}
	results := map[string]*load.Result{}
	for round := range o.Rounds {
		for _, s := range stacks {
			c := healthpb.NewHealthClient(s.conn)
			call := func(ctx context.Context) error {
				_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			}
			if w := load.Closed(ctx, o.Concurrency, o.Warmup, call); w.Err != nil {
				return fmt.Errorf("%s warm-up: %w", s.name, w.Err)
			}
			res := load.Closed(ctx, o.Concurrency, o.Duration, call)
			if res.Err != nil {
				return fmt.Errorf("%s: %w", s.name, res.Err)
			}
			fmt.Fprintf(o.Log, "xds round %d, %s: %.0f calls/s, p50 %s, p99 %s\n", round+1, s.name, res.RPS(), millis(res.Percentile(50)), millis(res.Percentile(99)))
			if results[s.name] == nil {
				results[s.name] = &load.Result{}
			}
			results[s.name].Add(res)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	x, p := results["xds"], results["plain"]
	share := x.RPS() / p.RPS()
	for _, r := range []Row{
		{Section: xdsSection, Figure: fmt.Sprintf("grpc.health.v1 Check through xds:/// (istiod's routes and endpoints): calls/s, %d in flight (floor: a plain channel to the same server)", o.Concurrency),
			Value: fmt.Sprintf("%.0f", x.RPS()), Floor: fmt.Sprintf("%.0f", p.RPS()), Ratio: fmt.Sprintf("%.0f %%", 100*share),
			Target: "≥ 90 % of plain", Met: met(share >= 0.9)},
		{Section: xdsSection, Figure: "the same: latency p50 / p99",
			Value: millis(x.Percentile(50)) + " / " + millis(x.Percentile(99)), Floor: millis(p.Percentile(50)) + " / " + millis(p.Percentile(99)),
			Ratio: ratio(x.Percentile(50), p.Percentile(50)) + " / " + ratio(x.Percentile(99), p.Percentile(99))},
	} {
		if err := emit(r); err != nil {
			return err
		}
	}
	return nil
}
