package discovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/discovery"
	"meshplane.dev/mesh/health"
)

// instance is a real gRPC server (grpc.health.v1) with an admin /readyz, counting the calls it gets.
type instance struct {
	addr, admin string
	calls       atomic.Int64
	health      *health.Health
}

func startInstance(t *testing.T) *instance {
	t.Helper()
	in := &instance{health: health.New()}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		in.calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, in.health.GRPC())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/readyz", in.health.Readyz())
	admin := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = admin.Serve(adminLis) }()
	t.Cleanup(func() { _ = admin.Close() })
	in.addr, in.admin = lis.Addr().String(), adminLis.Addr().String()
	in.health.SetReady()
	return in
}

func TestConsulResolverBalancesOverPassingInstances(t *testing.T) {
	srv := devservertest.Consul(t)
	cfg := consul.DefaultConfig()
	cfg.Address = srv.Addr
	client, err := consul.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := startInstance(t), startInstance(t)
	var deregisterA func(context.Context) error
	for i, in := range []*instance{a, b} {
		dereg, err := discovery.Register(ctx, client, discovery.Registration{
			Service: "echo", Addr: in.addr, AdminAddr: in.admin, CheckInterval: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			deregisterA = dereg
		}
	}

	opts, err := discovery.DialOptions("consul:///echo", client, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("consul:///echo", append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	call := func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}

	// Both pass their checks: calls spread over both.
	wait.For(t, 20*time.Second, func() error {
		if err := call(); err != nil {
			return err
		}
		if a.calls.Load() == 0 || b.calls.Load() == 0 {
			return fmt.Errorf("calls a=%d b=%d, want both instances used", a.calls.Load(), b.calls.Load())
		}
		return nil
	})

	// a drains: Consul's check on /readyz fails, the blocking query returns, a leaves the set.
	a.health.Drain()
	wait.For(t, 20*time.Second, func() error {
		before := a.calls.Load()
		for range 10 {
			if err := call(); err != nil {
				return err
			}
		}
		if a.calls.Load() != before {
			return fmt.Errorf("draining instance still got calls")
		}
		return nil
	})

	// b fails too (its database is down, say): with no instance passing, both are called again — they
	// answer with their own, named, error — until b recovers and takes every call.
	b.health.SetDependency("postgres", fmt.Errorf("connection refused"))
	wait.For(t, 20*time.Second, func() error {
		beforeA, beforeB := a.calls.Load(), b.calls.Load()
		for range 10 {
			if err := call(); err != nil {
				return err
			}
		}
		if a.calls.Load() == beforeA || b.calls.Load() == beforeB {
			return fmt.Errorf("with no instance passing: calls a+%d b+%d, want both called", a.calls.Load()-beforeA, b.calls.Load()-beforeB)
		}
		return nil
	})
	b.health.SetDependency("postgres", nil)
	wait.For(t, 20*time.Second, func() error {
		before := a.calls.Load()
		for range 10 {
			if err := call(); err != nil {
				return err
			}
		}
		if a.calls.Load() != before {
			return fmt.Errorf("failing instance still called once b passes again")
		}
		return nil
	})

	// Deregistration removes it from the catalog too.
	if err := deregisterA(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _, err := client.Health().Service("echo", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.Port != mustPort(t, b.addr) {
		t.Errorf("catalog after deregistering a: got %d entries, want only b", len(entries))
	}
}

func mustPort(t *testing.T, addr string) int {
	t.Helper()
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return tcp.Port
}

func TestDialOptionsRejectsBadTargets(t *testing.T) {
	if _, err := discovery.DialOptions("consul:///echo", nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Errorf("consul target without a Consul client: got nil error")
	}
	if _, err := discovery.DialOptions("consul:///", &consul.Client{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Errorf("consul target without a service: got nil error")
	}
	if _, err := discovery.DialOptions("dns:///payments.shop.svc.cluster.local:9030", nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("dns target: %v", err)
	}
}

func TestRegisterRejectsUnroutableAddress(t *testing.T) {
	_, err := discovery.Register(context.Background(), &consul.Client{}, discovery.Registration{Service: "echo", Addr: "0.0.0.0:9030", AdminAddr: "127.0.0.1:9031"})
	if err == nil {
		t.Errorf("Register with 0.0.0.0: got nil error, want a request for an advertise address")
	}
}
