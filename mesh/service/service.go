package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"

	"meshplane.dev/mesh/breaker"
	"meshplane.dev/mesh/discovery"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/health"
	"meshplane.dev/mesh/logs"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/mesh/rpc"
	"meshplane.dev/mesh/telemetry"
)

// version is set at link time (-ldflags "-X meshplane.dev/mesh/service.version=v1.2.3").
var version = ""

// Version is the binary's version: the link-time value, else the main module's version, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Runtime is one running service process's shared machinery.
type Runtime struct {
	// Name is the service name: Loki's service label, the Consul service name.
	Name string
	// Logger is the process's logger; pass it explicitly.
	Logger *slog.Logger
	// Registry is the process's Prometheus registry, served on the admin port.
	Registry *prometheus.Registry
	// Health is the process's liveness and readiness.
	Health *health.Health
	// Faults holds the fault-injection rules.
	Faults *fault.Injector
	// Consul is the Consul client, nil when CONSUL_HTTP_ADDR is empty.
	Consul *consul.Client
	// Admin is the admin server's mux; services may add their own admin routes before Serve.
	Admin *http.ServeMux

	cfg       Config
	sink      *logs.Sink
	adminLis  net.Listener
	breakers  *breaker.Metrics
	serverMet *grpcprom.ServerMetrics
	clientMet *grpcprom.ClientMetrics
	peers     *rpc.PeerMetrics
	closeOnce sync.Once
}

// Start builds the runtime of service name and binds its admin listener, so a taken port fails
// here, naming it. cfg must be valid.
func Start(name string, cfg Config, stdout io.Writer) (*Runtime, error) {
	level, err := logs.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	reg := telemetry.NewRegistry(Version())
	sink, err := logs.New(logs.Options{
		Service: name, Namespace: cfg.Namespace, Level: level, Stdout: stdout,
		LokiURL: cfg.LokiURL, QueueSize: cfg.LogQueueSize, BatchWait: cfg.LogBatchWait, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	rt := &Runtime{
		Name: name, Logger: sink.Logger().With(slog.String("service", name)), Registry: reg,
		Health: health.New(), Faults: fault.New(cfg.Faults), Admin: http.NewServeMux(),
		cfg: cfg, sink: sink, breakers: breaker.NewMetrics(reg),
		serverMet: telemetry.NewGRPCServerMetrics(reg), clientMet: telemetry.NewGRPCClientMetrics(reg),
		peers: rpc.NewPeerMetrics(reg),
	}
	if cfg.ConsulAddr != "" {
		cc := consul.DefaultConfig()
		cc.Address = cfg.ConsulAddr
		if rt.Consul, err = consul.NewClient(cc); err != nil {
			return nil, fmt.Errorf("consul client for %s: %w", cfg.ConsulAddr, err)
		}
	}
	if cfg.XDSBootstrap != "" {
		if err := proxyless.CheckBootstrap(cfg.XDSBootstrap); err != nil {
			return nil, err
		}
	}
	if rt.adminLis, err = Listen("admin", cfg.AdminAddr); err != nil {
		return nil, err
	}
	rt.Admin.Handle("GET /metrics", telemetry.Handler(reg))
	rt.Admin.Handle("GET /healthz", rt.Health.Healthz())
	rt.Admin.Handle("GET /readyz", rt.Health.Readyz())
	rt.Admin.Handle("/admin/faults", rt.Faults.AdminHandler())
	return rt, nil
}

// Listen binds addr for the named listener; the error names both.
func Listen(name, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener on %s: %w", name, addr, err)
	}
	return l, nil
}

// GRPCServerOptions returns the server options with the runtime's metrics, logger and faults, and the
// count of calls by the caller's identity (innermost, so it counts exactly the handled calls); use them
// with grpc.NewServer (or, proxyless, xds.NewGRPCServer).
func (rt *Runtime) GRPCServerOptions() []grpc.ServerOption {
	return append(rpc.ServerOptions(rt.Logger, rt.serverMet, rt.Faults), grpc.ChainUnaryInterceptor(rt.peers.UnaryServerInterceptor()))
}

// GRPCServerMetrics returns the gRPC server metrics, for InitializeMetrics on a server Serve does not
// run.
func (rt *Runtime) GRPCServerMetrics() *grpcprom.ServerMetrics { return rt.serverMet }

// Dial connects to dependency at target through its own breaker (named after the dependency; its state
// is in the breaker metrics). The connection is lazy: dialing succeeds before the dependency is up.
func (rt *Runtime) Dial(dependency, target string, cc ClientConfig) (*grpc.ClientConn, error) {
	b := breaker.New(dependency, cc.Breaker(), breaker.GRPCClassifier(dependency), rt.breakers)
	opts, err := discovery.DialOptions(target, rt.Consul, rt.Logger)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", dependency, err)
	}
	opts = append(opts, rpc.ClientOptions(rt.Logger, rt.clientMet, b, cc.CallTimeout)...)
	if isXDS(target) {
		if rt.cfg.XDSBootstrap == "" {
			return nil, fmt.Errorf("dial %s at %s: %s is not set: xds:/// targets need the bootstrap that names istiod", dependency, target, proxyless.BootstrapEnv)
		}
		// Last, so it replaces the plaintext credentials: mTLS when istiod's cluster for the target
		// says so (DestinationRule ISTIO_MUTUAL), plaintext otherwise.
		creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return nil, fmt.Errorf("dial %s: xds credentials: %w", dependency, err)
		}
		opts = append(opts, grpc.WithTransportCredentials(creds))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", dependency, target, err)
	}
	return conn, nil
}

// xdsListenerDependency names, in /readyz, what an xDS server waits for before it serves; a registry
// whose health gives the server its listener asks /readyz?exclude=xds-listener.
const xdsListenerDependency = "xds-listener"

// NewGRPCServer returns the service's gRPC server with the runtime's options: gRPC's xDS server when
// XDS_SERVER is set (inbound mTLS and RBAC from istiod; it serves once istiod has sent its listener
// for the listen address), a plain grpc.Server otherwise. An xDS server keeps the process not ready
// while it does not serve (no listener from istiod yet, or withdrawn): it would refuse every call, and
// a caller sent to it would see only that.
func (rt *Runtime) NewGRPCServer(sc GRPCServerConfig) (GRPCServer, error) {
	opts := rt.GRPCServerOptions()
	if !sc.XDSServer {
		return grpc.NewServer(opts...), nil
	}
	if rt.cfg.XDSBootstrap == "" {
		return nil, fmt.Errorf("XDS_SERVER is true but %s is not set", proxyless.BootstrapEnv)
	}
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, fmt.Errorf("xds server credentials: %w", err)
	}
	rt.Health.SetDependency(xdsListenerDependency, errors.New("istiod has not sent the listener for this server yet"))
	opts = append(opts, grpc.Creds(creds), xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
		// NOT_SERVING means istiod has sent no listener for this address (or withdrew it): callers
		// are refused until it does.
		rt.Logger.Info("xds serving mode", slog.String("addr", addr.String()), slog.String("mode", a.Mode.String()),
			slog.Any("error", a.Err))
		if a.Mode == connectivity.ServingModeServing {
			rt.Health.SetDependency(xdsListenerDependency, nil)
			return
		}
		why := fmt.Errorf("not serving on %s", addr)
		if a.Err != nil {
			why = fmt.Errorf("not serving on %s: %w", addr, a.Err)
		}
		rt.Health.SetDependency(xdsListenerDependency, why)
	}))
	s, err := xds.NewGRPCServer(opts...)
	if err != nil {
		return nil, fmt.Errorf("xds server: %w", err)
	}
	return s, nil
}

func isXDS(target string) bool { return strings.HasPrefix(target, "xds:") }

// Server is something Serve runs on a listener and stops gracefully.
type Server interface {
	Serve(net.Listener) error
	// Shutdown stops accepting, waits for in-flight requests until ctx ends, then closes the rest.
	Shutdown(ctx context.Context) error
}

// HTTPServer adapts an *http.Server.
type HTTPServer struct{ *http.Server }

// Serve implements Server.
func (s HTTPServer) Serve(l net.Listener) error {
	if err := s.Server.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown implements Server; connections still busy when ctx ends are closed.
func (s HTTPServer) Shutdown(ctx context.Context) error {
	err := s.Server.Shutdown(ctx)
	if err != nil {
		_ = s.Close()
	}
	return err
}

// GRPCServer is what both *grpc.Server and gRPC's xDS server provide.
type GRPCServer interface {
	grpc.ServiceRegistrar
	// GetServiceInfo lists the registered services, for InitializeMetrics.
	GetServiceInfo() map[string]grpc.ServiceInfo
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// GRPC adapts a gRPC server to Server.
func GRPC(s GRPCServer) Server { return grpcServer{s} }

type grpcServer struct{ s GRPCServer }

func (g grpcServer) Serve(l net.Listener) error {
	if err := g.s.Serve(l); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

func (g grpcServer) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.s.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.s.Stop()
		<-done
		return ctx.Err()
	}
}

// Traffic is a server with its listener; the first one passed to Serve is what Consul registers.
type Traffic struct {
	Server   Server
	Listener net.Listener
	// Tags are Consul tags for the registration, e.g. "grpc" or "http".
	Tags []string
}

// Serve runs the admin server and the traffic servers until ctx ends or one fails, then drains:
// readiness fails first (gRPC health turns NOT_SERVING too), the instance leaves Consul, DrainDelay
// passes, the traffic servers finish in-flight requests within ShutdownTimeout, and logs are flushed.
// A clean drain returns nil.
func (rt *Runtime) Serve(ctx context.Context, traffic ...Traffic) error {
	admin := HTTPServer{&http.Server{Handler: rt.Admin, ReadHeaderTimeout: 5 * time.Second}}
	for _, t := range traffic {
		// Every method's series exist from the start, at 0, once its services are registered.
		if g, ok := t.Server.(grpcServer); ok {
			rt.serverMet.InitializeMetrics(g.s)
		}
	}
	errc := make(chan error, len(traffic)+1)
	go func() { errc <- wrap("admin", admin.Serve(rt.adminLis)) }()
	for _, t := range traffic {
		go func() { errc <- wrap("traffic", t.Server.Serve(t.Listener)) }()
	}

	var deregister func(context.Context) error
	if rt.cfg.ConsulRegister && len(traffic) > 0 {
		var err error
		deregister, err = discovery.Register(ctx, rt.Consul, discovery.Registration{
			Service:       rt.Name,
			Addr:          rt.advertise(traffic[0].Listener.Addr()),
			AdminAddr:     rt.advertise(rt.adminLis.Addr()),
			Tags:          append([]string{"meshplane"}, traffic[0].Tags...),
			Meta:          map[string]string{"namespace": rt.cfg.Namespace, "version": Version()},
			CheckInterval: rt.cfg.CheckInterval,
		})
		if err != nil {
			rt.stopAll(admin, traffic)
			return err
		}
	}
	rt.Health.SetReady()
	addrs := []any{slog.String("admin", rt.adminLis.Addr().String())}
	for i, t := range traffic {
		addrs = append(addrs, slog.String(fmt.Sprintf("traffic%d", i), t.Listener.Addr().String()))
	}
	rt.Logger.Info("serving", append(addrs, slog.String("version", Version()))...)

	var serveErr error
	select {
	case <-ctx.Done():
		rt.Logger.Info("shutdown requested, draining", slog.String("cause", context.Cause(ctx).Error()))
	case serveErr = <-errc:
		rt.Logger.Error("server failed, draining", slog.String("error", serveErr.Error()))
	}

	rt.Health.Drain()
	if deregister != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := deregister(dctx); err != nil {
			rt.Logger.Warn("consul deregistration failed", slog.String("error", err.Error()))
		}
		cancel()
	}
	if rt.cfg.DrainDelay > 0 {
		t := time.NewTimer(rt.cfg.DrainDelay)
		<-t.C
	}
	sctx, cancel := context.WithTimeout(context.Background(), rt.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range traffic {
		wg.Go(func() {
			if err := t.Server.Shutdown(sctx); err != nil {
				rt.Logger.Warn("in-flight requests cut off at shutdown timeout", slog.String("error", err.Error()))
			}
		})
	}
	wg.Wait()
	actx, acancel := context.WithTimeout(context.Background(), time.Second)
	_ = admin.Shutdown(actx)
	acancel()
	rt.Logger.Info("stopped")
	return serveErr
}

func (rt *Runtime) stopAll(admin HTTPServer, traffic []Traffic) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, t := range traffic {
		_ = t.Server.Shutdown(ctx)
	}
	_ = admin.Shutdown(ctx)
}

// Close flushes logs to Loki, waiting at most 3s. Call it last.
func (rt *Runtime) Close() {
	rt.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := rt.sink.Close(ctx); err != nil {
			rt.Logger.Warn("log flush incomplete", slog.String("error", err.Error()))
		}
	})
}

// advertise replaces an unspecified listen host with ADVERTISE_HOST (or 127.0.0.1).
func (rt *Runtime) advertise(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if rt.cfg.AdvertiseHost != "" {
		host = rt.cfg.AdvertiseHost
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func wrap(name string, err error) error {
	if err == nil {
		return fmt.Errorf("%s server stopped", name)
	}
	return fmt.Errorf("%s server: %w", name, err)
}

// AdminAddr is the address the admin server listens on.
func (rt *Runtime) AdminAddr() string { return rt.adminLis.Addr().String() }
