package scenario_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/internal/controller"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/internal/inforce"
	"meshplane.dev/operator/localplatform/controlplane"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
)

const ns = "shop"

var (
	env    *controlplane.Env
	istiod *devserver.Istiod
	// postgres keeps the state of orders and payments (one database each, shared by their instances).
	postgres *devserver.Postgres
	mesh     *scenario.Mesh
	// procs holds the service processes, by instance name.
	procs = map[string]*devserver.Server{}
	// agents holds the istio-agent beside each service process and caller, by instance name.
	agents = map[string]*devserver.Agent{}
	// agentsDir holds the agents' working directories (short: their xDS socket paths must fit).
	agentsDir string
	// bootstraps holds the instances' bootstrap files, by instance name.
	bootstraps = map[string]string{}
	binDir     string
	// loopback is this run's 127.a.b.0/24: every instance gets its own address, as pods do.
	loopback string
	nextIP   = 1
)

// TestMain brings up the local mesh once for the package: a real kube-apiserver and etcd with the
// CRDs, the operator's reconciler, istiod (with its CA) against that apiserver, PostgreSQL for orders
// and payments, and two payments instances (v1, v2) registered as WorkloadEntries behind the payments
// Service, each joined to the mesh by a real istio-agent (its certificate from istiod's CA, its xDS
// through the agent) and serving with gRPC's xDS server, so inbound policy applies. The tests' caller is
// a proxyless gRPC client with its own node identity and agent (service account meshtest); a second one
// holds the orders identity, and a third calls the instances directly, without certificates. A real
// Prometheus scrapes the instances every second and the reconciler's canary checks query it.
func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mesh test:", err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "meshtest-")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	// Build the services while the control plane starts.
	built := make(chan error, 1)
	binDir = filepath.Join(dir, "bin")
	go func() { built <- build(binDir, "payments", "catalog", "orders") }()

	env, err = controlplane.Start(controlplane.Options{})
	if err != nil {
		return 0, err
	}
	defer func() { _ = env.Stop() }()
	utilruntime.Must(v1alpha1.AddToScheme(env.Scheme))
	for _, n := range []string{devserver.IstiodNamespace, ns} {
		if err := workload.EnsureNamespace(ctx, env.Client, n); err != nil {
			return 0, err
		}
	}
	istiod, err = devserver.StartIstiod(ctx, devserver.Options{Dir: filepath.Join(dir, "istiod"), ReadyTimeout: 3 * time.Minute},
		env.Kubeconfig, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = istiod.Stop() }()
	if postgres, err = devserver.StartPostgres(ctx, devserver.Options{Dir: filepath.Join(dir, "postgres"), ReadyTimeout: 90 * time.Second}); err != nil {
		return 0, err
	}
	defer func() { _ = postgres.Close() }()
	for _, db := range []string{"orders", "payments"} {
		if err := postgres.CreateDatabase(ctx, db); err != nil {
			return 0, err
		}
	}
	if err := <-built; err != nil {
		return 0, err
	}
	loopback = fmt.Sprintf("127.%d.%d.", 10+rand.IntN(200), rand.IntN(250))
	agentsDir = filepath.Join(dir, "ag")
	defer stopAll()
	if mesh, err = startPayments(ctx, dir); err != nil {
		return 0, err
	}
	prom, err := startPrometheus(ctx, dir, mesh.Instances)
	if err != nil {
		return 0, err
	}
	defer func() { _ = prom.Stop() }()
	metrics, err := canary.NewPrometheus(prom.URL(), canary.GRPCQueries)
	if err != nil {
		return 0, err
	}
	stopManager, err := startManager(ctx, metrics)
	if err != nil {
		return 0, err
	}
	defer stopManager()
	return m.Run(), nil
}

func build(dir string, names ...string) error {
	for _, name := range names {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), ".")
		cmd.Dir = filepath.Join("..", "..", "..", "services", name)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// startPrometheus scrapes the payments instances every second, each labelled with namespace, service
// and version as the canary checks' gRPC queries select them.
func startPrometheus(ctx context.Context, dir string, instances []scenario.Instance) (*devserver.Server, error) {
	var config strings.Builder
	config.WriteString("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: payments\n    static_configs:\n")
	for _, in := range instances {
		fmt.Fprintf(&config, "      - targets: [%q]\n        labels: {namespace: %s, service: payments, version: %s}\n", in.Admin, ns, in.Subset)
	}
	return devserver.StartPrometheus(ctx, devserver.Options{Dir: filepath.Join(dir, "prometheus")}, []byte(config.String()), nil)
}

// startManager runs the operator's TrafficPolicy reconciler as the manager binary does, with
// --prometheus-url and --canary-queries grpc.
func startManager(ctx context.Context, metrics controller.CanaryMetrics) (func(), error) {
	logger := zap.New(zap.WriteTo(&managerLog))
	ctrl.SetLogger(logger)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Logger: logger, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, err
	}
	r := &controller.TrafficPolicyReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("meshplane"), Defaults: desiredstate.PlatformDefaults(),
		Metrics: controller.NewMetrics(mgr.GetClient()), CanaryMetrics: metrics,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() { cancel(); <-done }, nil
}

var managerLog syncBuffer

var paymentsService = workload.Service{
	Name: "payments", Namespace: ns, Ports: []workload.Port{{Name: "grpc", Port: 9030}}, HealthChecks: true,
}

// callerIdentity is the SPIFFE id of a caller with service account sa in the test's namespace.
func callerIdentity(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// startCaller joins an in-process caller named name with service account sa to the mesh, through its
// own istio-agent, and dials payments through gRPC's xDS client.
func startCaller(ctx context.Context, name, sa string) (*grpc.ClientConn, proxyless.Node, error) {
	if err := workload.EnsureServiceAccount(ctx, env.Client, ns, sa); err != nil {
		return nil, proxyless.Node{}, err
	}
	svc := workload.Service{Name: name, Namespace: ns, ServiceAccount: sa}
	in := workload.Instance{Name: name, IP: "127.0.0.1"}
	a, err := workload.StartAgent(ctx, env.Client, svc, in, devserver.Options{Dir: filepath.Join(agentsDir, name)},
		workload.AgentOptions{Istiod: istiod.SecureXDSAddr})
	if err != nil {
		return nil, proxyless.Node{}, err
	}
	agents[name] = a
	node := svc.Node(in)
	conn, err := scenario.DialXDS(a.Bootstrap(node, 0), proxyless.Target("payments", ns, 9030, ""))
	return conn, node, err
}

// startPayments registers and starts payments v1 and v2 and the test's callers.
func startPayments(ctx context.Context, dir string) (*scenario.Mesh, error) {
	var instances []workload.Instance
	var observed []scenario.Instance
	for _, v := range []string{"v1", "v2"} {
		in, err := newInstance("payments-"+v, map[string]string{"version": v})
		if err != nil {
			return nil, err
		}
		instances = append(instances, in)
	}
	if err := workload.Apply(ctx, env.Client, paymentsService, instances...); err != nil {
		return nil, err
	}
	for _, in := range instances {
		p, err := startService(ctx, dir, "payments", paymentsService, in, nil)
		if err != nil {
			return nil, err
		}
		observed = append(observed, scenario.Instance{Name: in.Name, Subset: in.Labels["version"], Admin: p.Addr,
			Addr: net.JoinHostPort(in.IP, strconv.Itoa(int(in.Ports["grpc"])))})
	}
	conn, node, err := startCaller(ctx, "meshtest", "meshtest")
	if err != nil {
		return nil, err
	}
	ordersConn, _, err := startCaller(ctx, "meshtest-as-orders", "orders")
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, in := range observed {
		addrs = append(addrs, in.Addr)
	}
	direct, err := scenario.DialDirect(addrs...)
	if err != nil {
		return nil, err
	}
	return &scenario.Mesh{
		Namespace: ns, Service: "payments", Port: 9030, Method: "Charge", Instances: observed,
		Istiod: inforce.Istiod{URL: istiod.URL()}, CallerID: node.ProxyID(), Call: scenario.Charge(conn),
		CallerIdentity: callerIdentity("meshtest"),
		Callers: map[string]scenario.Caller{
			scenario.CallerPlaintext: {Call: scenario.Charge(direct)},
			"orders":                 {Identity: callerIdentity("orders"), Call: scenario.Charge(ordersConn)},
		},
		Calls: map[string]func(context.Context) error{"GetCharge": scenario.GetCharge(conn)},
		Apply: func(ctx context.Context, manifest []byte) error {
			_, err := env.Kubectl(ctx, bytes.NewReader(manifest), "apply", "-f", "-")
			return err
		},
		Client: env.Client,
		SetHealthy: func(ctx context.Context, instance string, healthy bool) error {
			return workload.SetHealthy(ctx, env.Client, ns, instance, healthy)
		},
	}, nil
}

// newInstance gives an instance its own loopback address and a free port on it.
func newInstance(name string, labels map[string]string) (workload.Instance, error) {
	ip := loopback + strconv.Itoa(nextIP)
	nextIP++
	port, err := freePort(ip)
	if err != nil {
		return workload.Instance{}, err
	}
	return workload.Instance{Name: name, IP: ip, Ports: map[string]uint32{"grpc": uint32(port)}, Labels: labels}, nil
}

func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startService joins the instance to the mesh through its own istio-agent (ao: how), writes its xDS
// bootstrap (xDS through the agent, certificates from it, re-read every certRefresh) and runs the
// service in xds mode, serving with gRPC's xDS server, until the test binary ends, waiting for /readyz
// (which waits for istiod's listener).
func startService(ctx context.Context, dir, bin string, svc workload.Service, in workload.Instance, extra []string) (*devserver.Server, error) {
	return startServiceWith(ctx, dir, bin, svc, in, extra, workload.AgentOptions{Istiod: istiod.SecureXDSAddr}, 0)
}

func startServiceWith(ctx context.Context, dir, bin string, svc workload.Service, in workload.Instance, extra []string,
	ao workload.AgentOptions, certRefresh time.Duration) (*devserver.Server, error) {
	a, err := workload.StartAgent(ctx, env.Client, svc, in, devserver.Options{Dir: filepath.Join(agentsDir, in.Name)}, ao)
	if err != nil {
		return nil, err
	}
	agents[in.Name] = a
	bootstrap := filepath.Join(dir, "xds", in.Name+".json")
	if err := a.Bootstrap(svc.Node(in), certRefresh).Write(bootstrap); err != nil {
		return nil, err
	}
	bootstraps[in.Name] = bootstrap
	adminPort, err := freePort(in.IP)
	if err != nil {
		return nil, err
	}
	admin := net.JoinHostPort(in.IP, strconv.Itoa(adminPort))
	p, err := devserver.Run(ctx, devserver.Options{Dir: filepath.Join(dir, in.Name), ReadyTimeout: time.Minute}, devserver.Program{
		Name: in.Name, Bin: filepath.Join(binDir, bin), Addr: admin, OnlyEnv: true,
		Env: append([]string{
			"GRPC_ADDR=" + net.JoinHostPort(in.IP, strconv.Itoa(int(in.Ports["grpc"]))),
			"ADMIN_ADDR=" + admin,
			"NAMESPACE=" + ns,
			"LOG_LEVEL=warn",
			"XDS_SERVER=true",
			proxyless.BootstrapEnv + "=" + bootstrap,
		}, append(databaseEnv(bin), extra...)...),
		// istiod sends the inbound listener only for a healthy WorkloadEntry, so the process is first
		// ready but for its listener; once its entry is healthy, the listener comes and it is ready.
		Ready: devserver.HTTPReady("http://" + admin + "/readyz?exclude=xds-listener"),
	})
	if err != nil {
		return nil, err
	}
	procs[in.Name] = p
	if svc.HealthChecks {
		if err := workload.SetHealthy(ctx, env.Client, ns, in.Name, true); err != nil {
			return nil, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := wait.Until(wctx, 100*time.Millisecond, devserver.HTTPReady("http://"+admin+"/readyz")); err != nil {
		last := devserver.HTTPReady("http://" + admin + "/readyz")(context.Background())
		return nil, fmt.Errorf("%s never received its inbound listener from istiod: %w\n%s\nistiod:\n%s", in.Name, last, p.LogTail(2000), istiod.LogTail(6000))
	}
	return p, nil
}

// databaseEnv is where the program keeps its state: orders and payments each in their database, shared
// by their instances as replicas share it.
func databaseEnv(bin string) []string {
	switch bin {
	case "orders", "payments":
		return []string{"DATABASE_URL=" + postgres.URL(bin), "DATABASE_PASSWORD=" + postgres.Password}
	}
	return nil
}

// stopAll signals every service at once, so their drains overlap, then waits for each; then stops the
// agents, which the services needed until the end.
func stopAll() {
	for _, p := range procs {
		_ = p.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		_ = p.Stop()
	}
	for _, a := range agents {
		_ = a.Stop()
	}
}

// syncBuffer collects output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// logTailsOnFailure logs what istiod, the operator, the services and their agents said last if the test
// fails.
func logTailsOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("istiod log tail:\n%s", istiod.LogTail(3000))
			t.Logf("manager log tail:\n%s", managerLog.tail(3000))
			for _, p := range procs {
				t.Logf("%s output tail:\n%s", p.Name, p.LogTail(2000))
			}
			for name, a := range agents {
				t.Logf("istio-agent of %s output tail:\n%s", name, a.LogTail(1500))
			}
		}
	})
}

// runScenario runs s and fails the test for every prediction that did not hold, naming the Istio
// field; the table of what was observed is logged either way.
func runScenario(t *testing.T, s scenario.Scenario) []scenario.Outcome {
	t.Helper()
	logTailsOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	outcomes, err := mesh.Run(ctx, s)
	var table strings.Builder
	_ = scenario.WriteTable(&table, s, outcomes, mesh.Instances)
	t.Logf("\n%s", table.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		if o.Err != nil {
			t.Errorf("%s: %v (first errors by code: %v)", o.Step, o.Err, o.Errors)
		}
	}
	return outcomes
}

// VirtualService route weights over DestinationRule subsets: 80/20 observed over 400 calls within the
// binomial band (± 0.08).
func TestCanarySplit(t *testing.T) {
	runScenario(t, mesh.CanarySplit("v1", "v2", 80, 400))
}

// Retries: payments fails half its calls with UNAVAILABLE; attempts: 0 gives 50 % success, attempts: 3
// on unavailable gives 1 - 0.5^4 = 93.75 %.
func TestRetries(t *testing.T) {
	runScenario(t, mesh.Retries(0.5, 3, 400))
}

// Timeout: payments answers after 1.5s; a 2.5s policy timeout lets every call through, a 300ms one
// ends every call DEADLINE_EXCEEDED between 300ms and 800ms.
func TestTimeout(t *testing.T) {
	runScenario(t, mesh.Timeout(1500*time.Millisecond, 300*time.Millisecond, 10))
}

// circuitBreaker.maxRequests: 10 concurrent calls to instances answering after 700ms: without a limit
// all succeed; with maxRequests 2 at most 2 do and gRPC fails the rest at once with UNAVAILABLE.
func TestMaxRequests(t *testing.T) {
	runScenario(t, mesh.MaxRequests(2, 700*time.Millisecond, 10))
}

// Outlier detection is declared but not enforced proxyless: v2 failing every call keeps half the
// traffic. Marking v2 unhealthy (as a failed health check does) moves all traffic to v1.
func TestOutlierDetection(t *testing.T) {
	runScenario(t, mesh.OutlierDetection("payments-v2", 5, 100))
}

// paymentService is payments' gRPC service, which the route scenarios match Charge in.
const paymentService = "meshplane.payments.v1.PaymentService"

// Two methods, two timeouts: payments answers Charge and GetCharge after 600ms; the top-level
// timeout (1.6s) lets both through, a route cuts GetCharge at 200ms while Charge still succeeds.
func TestRouteTimeouts(t *testing.T) {
	runScenario(t, mesh.RouteTimeouts("GetCharge", 600*time.Millisecond, 200*time.Millisecond, 10))
}

// Per-method retries: payments fails half of Charge and GetCharge calls with UNAVAILABLE. The
// platform default retries Charge (1 - 0.5^3 = 87.5 %, 1.75 attempts a call); a route with attempts 0
// leaves it at 50 % with exactly one attempt a call; GetCharge's route retries 3 times: 93.75 %.
func TestRouteRetries(t *testing.T) {
	runScenario(t, mesh.RouteRetries(paymentService, "GetCharge", 0.5, 3, 400))
}

// An abort of 25 % of GetCharge calls with UNAVAILABLE: that share fails (± 0.087 over 400 calls) and
// the servers handle exactly the calls that succeeded.
func TestFaultAbort(t *testing.T) {
	runScenario(t, mesh.FaultAbort("GetCharge", 25, codes.Unavailable, 400))
}

// A delay of 400ms on 50 % of GetCharge calls: that share (± 0.2 over 100 calls) takes at least
// 400ms in the caller; none does without the fault.
func TestFaultDelay(t *testing.T) {
	runScenario(t, mesh.FaultDelay("GetCharge", 400*time.Millisecond, 50, 100))
}
