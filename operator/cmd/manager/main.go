// Command manager runs the Meshplane operator: it reconciles TrafficPolicies into Istio objects. It runs
// in a cluster or against any kubeconfig:
//
//	go run ./operator/cmd/manager --kubeconfig PATH
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/internal/consulsync"
	"meshplane.dev/operator/internal/controller"
	"meshplane.dev/operator/internal/desiredstate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			_, _ = fmt.Fprintln(os.Stderr, "manager:", err)
		}
		os.Exit(1)
	}
}

// options are the manager's flags. Controllers added later (e.g. the Consul catalog sync) add their own
// fields and flags here and their setup in run.
type options struct {
	kubeconfig              string
	metricsAddr             string
	probeAddr               string
	pprofAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	namespaces              string
	concurrentReconciles    int
	defaults                desiredstate.Defaults
	consul                  consulsync.Options
	log                     zap.Options
	callGraph               callGraphOptions
	canary                  canaryOptions
}

// canaryOptions configure where canary checks read metrics: off by default, and then no rollout moves
// (each says so in its Canary condition).
type canaryOptions struct {
	prometheusURL string
	queries       string
}

// metrics returns the canary's metrics source, nil when --prometheus-url is unset.
func (o canaryOptions) metrics() (controller.CanaryMetrics, error) {
	queries, err := canary.LookupQueries(o.queries)
	if err != nil {
		return nil, fmt.Errorf("--canary-queries: %w", err)
	}
	if o.prometheusURL == "" {
		return nil, nil
	}
	src, err := canary.NewPrometheus(o.prometheusURL, queries)
	if err != nil {
		return nil, fmt.Errorf("--prometheus-url: %w", err)
	}
	return src, nil
}

// callGraphOptions configure the call-graph check: the calls beyond the allow lists and what must not
// be repeated, as `meshplane check` takes them.
type callGraphOptions struct {
	enabled          bool
	file             string
	nonIdempotent    []string
	maxAmplification int64
}

// graph reads the graph file and the non-idempotent targets; names without a namespace are in default.
func (o callGraphOptions) graph() (callgraph.Graph, error) {
	var g callgraph.Graph
	if o.file != "" {
		data, err := os.ReadFile(o.file)
		if err != nil {
			return g, fmt.Errorf("--callgraph-file: %w", err)
		}
		if g, err = callgraph.ParseFile(o.file, data, "default"); err != nil {
			return g, fmt.Errorf("--callgraph-file: %w", err)
		}
	}
	for _, v := range o.nonIdempotent {
		t, err := callgraph.ParseTarget(v, "default")
		if err != nil {
			return g, fmt.Errorf("--non-idempotent %w", err)
		}
		g.NonIdempotent = append(g.NonIdempotent, t)
	}
	return callgraph.Merge(g), nil
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to manage (default: $KUBECONFIG, else in-cluster)")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes; 0 disables them")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "0", "address of the pprof endpoints (/debug/pprof/), e.g. 127.0.0.1:8082; 0 disables them")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader, so only one of several replicas reconciles")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (required outside a cluster)")
	fs.StringVar(&o.namespaces, "namespaces", "", "comma-separated namespaces to watch (default: all)")
	fs.IntVar(&o.concurrentReconciles, "max-concurrent-reconciles", 8, "TrafficPolicies reconciled at once")
	o.defaults = desiredstate.PlatformDefaults()
	o.defaults.AddFlags(fs)
	o.consul.BindFlags(fs)
	fs.BoolVar(&o.callGraph.enabled, "callgraph", true, "check the TrafficPolicies together along the call graph and set their CallGraph condition")
	fs.StringVar(&o.callGraph.file, "callgraph-file", "", "graph file of calls beyond the allow lists (meshplane check --graph format); read at start")
	fs.Func("non-idempotent", "NAMESPACE/SERVICE[/Method] whose calls must not be repeated; repeatable", func(v string) error {
		o.callGraph.nonIdempotent = append(o.callGraph.nonIdempotent, v)
		return nil
	})
	fs.Int64Var(&o.callGraph.maxAmplification, "max-amplification", callgraph.DefaultMaxAmplification, "most worst-case attempts one incoming request may cause at one service before the call-graph check reports it")
	fs.StringVar(&o.canary.prometheusURL, "prometheus-url", "", "Prometheus the canary checks query over its HTTP API, e.g. http://prometheus.monitoring:9090 (default: none, and no canary rollout moves)")
	fs.StringVar(&o.canary.queries, "canary-queries", canary.IstioQueries.Name, "the canary checks' queries: istio ("+canary.IstioQueries.Doc+") or grpc ("+canary.GRPCQueries.Doc+")")
	o.log = zap.Options{Development: false}
	o.log.BindFlags(fs)
}

var setGlobalLoggers sync.Once

// Leader election keeps a Lease in the namespace the operator runs in (meshplane-system when deployed)
// and records its transitions as core Events there.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete,namespace=meshplane-system
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=meshplane-system

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	o.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := o.defaults.Validate(); err != nil {
		return err
	}
	if o.concurrentReconciles < 1 {
		return fmt.Errorf("--max-concurrent-reconciles: want at least 1, got %d", o.concurrentReconciles)
	}
	if err := o.consul.Validate(); err != nil {
		return err
	}
	graph, err := o.callGraph.graph()
	if err != nil {
		return err
	}
	canaryMetrics, err := o.canary.metrics()
	if err != nil {
		return err
	}
	logger := zap.New(zap.UseFlagOptions(&o.log), zap.WriteTo(stderr))
	// controller-runtime's and client-go's loggers are process-wide and not safe to replace while a
	// previous manager's goroutines still log (tests call run more than once): the first run sets them.
	setGlobalLoggers.Do(func() {
		ctrl.SetLogger(logger)
		klog.SetLogger(logger) // client-go's own messages (leader election, event broadcasting) too
	})

	cfg, err := restConfig(o.kubeconfig, getenv)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        newScheme(),
		Logger:                        logger,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		PprofBindAddress:              o.pprofAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "meshplane-operator.traffic.meshplane.dev",
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{DefaultNamespaces: watched(o.namespaces, o.consul)},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the cache has synced: before that, status and metrics would describe an empty cluster.
	if err := mgr.AddReadyzCheck("cache", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("cache not synced")
		}
		return nil
	}); err != nil {
		return err
	}

	metrics := controller.NewMetrics(mgr.GetClient())
	if err := metrics.Register(crmetrics.Registry); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	defer metrics.Unregister(crmetrics.Registry)
	// The call-graph analysis's conditions ride on the policy controller's status patches.
	var callGraphConditions *controller.CallGraphConditions
	if o.callGraph.enabled {
		callGraphConditions = controller.NewCallGraphConditions()
	}
	policies := &controller.TrafficPolicyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("meshplane"),
		Defaults:  o.defaults,
		Metrics:   metrics,

		CanaryMetrics:           canaryMetrics,
		CallGraph:               callGraphConditions,
		MaxConcurrentReconciles: o.concurrentReconciles,
	}
	if err := policies.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up trafficpolicy controller: %w", err)
	}
	if o.callGraph.enabled {
		check := &controller.CallGraphReconciler{
			Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("meshplane"), Defaults: o.defaults, Metrics: metrics,
			Graph: graph, Options: callgraph.Options{MaxAmplification: o.callGraph.maxAmplification},
			Conditions: callGraphConditions,
		}
		if err := check.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up callgraph controller: %w", err)
		}
	}
	catalogSync, err := consulsync.Setup(mgr, o.consul, crmetrics.Registry)
	if err != nil {
		return fmt.Errorf("set up consul sync: %w", err)
	}
	if catalogSync != nil {
		defer catalogSync.Metrics.Unregister(crmetrics.Registry)
	}

	logger.Info("Starting manager", "host", cfg.Host, "namespaces", o.namespaces, "leaderElect", o.leaderElect,
		"prometheus", o.canary.prometheusURL, "canaryQueries", o.canary.queries)
	return mgr.Start(ctx)
}

// restConfig loads the kubeconfig at path, or $KUBECONFIG, or the in-cluster configuration.
func restConfig(path string, getenv func(string) string) (*rest.Config, error) {
	if path == "" {
		path = getenv("KUBECONFIG")
	}
	var cfg *rest.Config
	var err error
	if path == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("no --kubeconfig, no $KUBECONFIG, and not in a cluster: %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	// No client-side rate limit, as controller-runtime's own config loader does: the API server's
	// priority and fairness protects it. client-go's default (5 requests/s per resource client, burst
	// 10) held the reconciler idle in its token bucket: `make bench` measured 1,000 policies Ready in
	// 244 s against an 11.5 s floor, the manager at 4% of one core.
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}

// watched turns --namespaces into the cache's namespace set; nil watches all namespaces. The Consul sync's
// ServiceEntry namespace is always watched when that direction is on.
func watched(list string, consul consulsync.Options) map[string]cache.Config {
	var out map[string]cache.Config
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			if out == nil {
				out = map[string]cache.Config{}
			}
			out[ns] = cache.Config{}
		}
	}
	if out != nil && consul.Address != "" && consul.ToIstio {
		out[consul.ServiceEntryNamespace] = cache.Config{}
	}
	return out
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	utilruntime.Must(networkingv1.AddToScheme(s))
	utilruntime.Must(securityv1.AddToScheme(s))
	return s
}
