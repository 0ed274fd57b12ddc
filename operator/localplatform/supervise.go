package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/localplatform/controlplane"
)

// Namespaces the platform uses: the shop, Istio's root (ServiceEntries from Consul land there), and the
// operator's own.
const (
	ShopNamespace     = "shop"
	IstioNamespace    = "istio-system"
	OperatorNamespace = "meshplane-system"
)

// supervisor starts the components in order and stops them in reverse.
type supervisor struct {
	cfg Config
	// run is the platform's lifetime: restarts of a component happen within it.
	run context.Context
	// stopping is set once the platform stops: a component exiting then is not restarted.
	stopping atomic.Bool
	// stateMu guards state, which restarts update from their own goroutines.
	stateMu  sync.Mutex
	state    *State
	progress io.Writer
	began    time.Time
	stops    []func()
	env      *controlplane.Env
	consul   *consulapi.Client
	// postgres holds orders', payments' and fulfillment's databases.
	postgres *devserver.Postgres
	// nats is the event broker: orders' outbox relay publishes to it, fulfillment consumes from it.
	nats *devserver.NATS
	// secureXDSAddr is istiod's TLS address (mesh on): the agents' CA and the shop's xDS server.
	secureXDSAddr string
	// istiodMetrics is istiod's own /metrics address, for Prometheus.
	istiodMetrics string
	// agentStartup adds up how long the shop's istio-agents took to get their certificates.
	agentStartup atomic.Int64
}

// Supervise runs the platform until ctx ends: it starts every component, records them in the state file,
// marks the run ready, and on cancellation stops them in reverse order. progress receives one line per
// step with the elapsed time.
func Supervise(ctx context.Context, cfg Config, runID string, progress io.Writer) (err error) {
	s := &supervisor{cfg: cfg, run: ctx, progress: progress, began: time.Now(), state: &State{
		RunID: runID, SupervisorPID: os.Getpid(), Phase: PhaseStarting, Started: time.Now(),
		Ports: cfg.Ports, Kubeconfig: cfg.Kubeconfig(),
	}}
	if err := s.save(); err != nil {
		return err
	}
	defer func() {
		s.stopping.Store(true)
		_ = s.setPhase(PhaseStopping, "")
		s.say("platform", "stopping %d components", len(s.stops))
		for _, stop := range slices.Backward(s.stops) {
			stop()
		}
		if err != nil {
			_ = s.setPhase(PhaseFailed, err.Error())
		} else {
			_ = s.setPhase(PhaseStopped, "")
		}
		s.say("platform", "stopped")
	}()

	startCtx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := s.startAll(startCtx); err != nil {
		_ = s.setPhase(PhaseFailed, err.Error())
		s.say("platform", "FAILED: %v", err)
		return err
	}
	if err := s.setPhase(PhaseReady, ""); err != nil {
		return err
	}
	s.say("platform", "ready")
	<-ctx.Done()
	return nil
}

func (s *supervisor) startAll(ctx context.Context) error {
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"kube-apiserver", s.startKube},
		{"istiod", s.startIstiod},
		{"consul", s.startConsul},
		{"loki", s.startLoki},
		{"postgres", s.startPostgres},
		{"nats", s.startNATS},
		{"operator", s.startOperator},
		{"shop", s.startShop},
		{"prometheus", s.startPrometheus},
		{"loadgen", s.startLoadgen},
		{"policies", s.applyPolicies},
	}
	for _, st := range steps {
		if err := st.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}
	return nil
}

func (s *supervisor) say(component, format string, args ...any) {
	fmt.Fprintf(s.progress, "[%6.1fs] %-15s %s\n", time.Since(s.began).Seconds(), component, fmt.Sprintf(format, args...))
}

func (s *supervisor) save() error {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return writeState(s.cfg.statePath(), s.state)
}

// setPhase records the run's phase (and, failed, its error).
func (s *supervisor) setPhase(phase, errText string) error {
	s.stateMu.Lock()
	s.state.Phase = phase
	if errText != "" {
		s.state.Error = errText
	}
	if phase == PhaseReady {
		s.state.Ready = time.Now()
	}
	s.stateMu.Unlock()
	return s.save()
}

func (s *supervisor) record(c Component, stop func()) {
	s.stateMu.Lock()
	s.state.Components = append(s.state.Components, c)
	if stop != nil {
		s.stops = append(s.stops, stop)
	}
	s.stateMu.Unlock()
	_ = s.save()
}

// replaceStop replaces the stop function of the component recorded last.
func (s *supervisor) replaceStop(stop func()) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.stops[len(s.stops)-1] = stop
}

// restartDelay is how long a component that exited stays down before the supervisor starts it again.
const restartDelay = 2 * time.Second

// keepRunning restarts component name whenever its process exits while the platform runs — killed or
// crashed, as a kubelet restarts a container — with start, recording the new process's pid and the
// restart count in the state file. current is updated with the running server, for the stop function.
func (s *supervisor) keepRunning(name string, current *atomic.Pointer[devserver.Server], start func(context.Context) (*devserver.Server, error)) {
	go func() {
		for {
			srv := current.Load()
			select {
			case <-srv.Done():
			case <-s.run.Done():
				return
			}
			if s.stopping.Load() || s.run.Err() != nil {
				return
			}
			_, exitErr := srv.Exited()
			s.say(name, "exited (%v); starting it again in %s", exitErr, restartDelay)
			for {
				select {
				case <-time.After(restartDelay):
				case <-s.run.Done():
					return
				}
				if s.stopping.Load() {
					return
				}
				ctx, cancel := context.WithTimeout(s.run, 2*time.Minute)
				next, err := start(ctx)
				cancel()
				if err == nil {
					current.Store(next)
					s.restarted(name, next.Pid())
					s.say(name, "running again (pid %d)", next.Pid())
					break
				}
				s.say(name, "restart failed: %v", err)
			}
		}
	}()
}

// restarted records a component's new pid and counts the restart.
func (s *supervisor) restarted(name string, pid int) {
	s.stateMu.Lock()
	for i := range s.state.Components {
		if s.state.Components[i].Name == name {
			s.state.Components[i].PID = pid
			s.state.Components[i].Restarts++
		}
	}
	s.stateMu.Unlock()
	_ = s.save()
}

// server starts a devserver-style component and records it.
func (s *supervisor) server(ctx context.Context, name, what string, start func(context.Context) (*devserver.Server, error), url, health string) (*devserver.Server, error) {
	s.say(name, "starting %s", what)
	t := time.Now()
	srv, err := start(ctx)
	if err != nil {
		return nil, err
	}
	s.say(name, "ready on %s (%s)", srv.Addr, time.Since(t).Round(100*time.Millisecond))
	s.record(Component{Name: name, URL: url, Health: health, PID: srv.Pid(), Log: srv.LogPath}, func() {
		s.say(name, "stopping")
		_ = srv.Stop()
	})
	return srv, nil
}

func (s *supervisor) opts(name string, port int) devserver.Options {
	return devserver.Options{Dir: s.cfg.dataDir(name), Port: port, LogFile: s.cfg.logFile(name), ReadyTimeout: 2 * time.Minute}
}

func (s *supervisor) startKube(ctx context.Context) error {
	s.say("kube-apiserver", "starting etcd + kube-apiserver on %s with Meshplane's and Istio's CRDs, and the garbage collector (waits for the CRDs to be served)", s.cfg.Ports.Addr("apiserver"))
	t := time.Now()
	env, err := controlplane.Start(controlplane.Options{Dir: s.cfg.dataDir("kube"), APIServerPort: s.cfg.Ports["apiserver"], GarbageCollector: true})
	if err != nil {
		return err
	}
	s.env = env
	s.record(Component{Name: "kube-apiserver", URL: env.Config.Host, Health: kubeHealth + "/readyz", Log: env.APIServerLog}, func() {
		s.say("kube-apiserver", "stopping (with etcd and kube-controller-manager)")
		_ = env.Stop()
	})
	s.record(Component{Name: "etcd", Health: kubeHealth + "/readyz/etcd", Log: env.EtcdLog}, nil)
	s.record(Component{Name: "kube-controller-manager", PID: env.ControllerManagerPID(), Log: env.ControllerManagerLog}, nil)
	b, err := os.ReadFile(env.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.cfg.Kubeconfig(), b, 0o600); err != nil {
		return err
	}
	for _, ns := range []string{ShopNamespace, IstioNamespace, OperatorNamespace} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
			return err
		}
	}
	s.say("kube-apiserver", "ready at %s, kubeconfig %s (%s)", env.Config.Host, s.cfg.Kubeconfig(), time.Since(t).Round(100*time.Millisecond))
	return nil
}

// startIstiod runs the real istiod (pilot-discovery) against the local apiserver, with the mesh on:
// it turns the operator's VirtualServices, DestinationRules, PeerAuthentications and
// AuthorizationPolicies into xDS for the shop's proxyless gRPC clients and servers, and, as the mesh's
// CA, signs the certificates of the istio-agent beside each shop process.
func (s *supervisor) startIstiod(ctx context.Context) error {
	if !s.cfg.Mesh() {
		s.say("istiod", "skipped (--discovery %s: the shop finds its dependencies through Consul)", s.cfg.Discovery)
		return nil
	}
	s.say("istiod", "starting istiod (pilot-discovery) against the local apiserver (waits for /ready: its caches synced)")
	t := time.Now()
	d, err := devserver.StartIstiod(ctx, s.opts("istiod", s.cfg.Ports["istiod"]), s.cfg.Kubeconfig(), nil)
	if err != nil {
		return err
	}
	s.secureXDSAddr, s.istiodMetrics = d.SecureXDSAddr, d.MonitoringAddr
	s.state.XDSAddr, s.state.SecureXDSAddr = d.XDSAddr, d.SecureXDSAddr
	url := d.URL()
	s.say("istiod", "ready: debug %s, xDS %s, CA and xDS over TLS %s (%s)", url, d.XDSAddr, d.SecureXDSAddr, time.Since(t).Round(100*time.Millisecond))
	s.record(Component{Name: "istiod", URL: url + "/debug", Health: url + "/ready", PID: d.Pid(), Log: d.LogPath}, func() {
		s.say("istiod", "stopping")
		_ = d.Stop()
	})
	return nil
}

func (s *supervisor) startConsul(ctx context.Context) error {
	srv, err := s.server(ctx, "consul", "Consul dev agent (waits for a leader)", func(ctx context.Context) (*devserver.Server, error) {
		return devserver.StartConsul(ctx, s.opts("consul", s.cfg.Ports["consul"]))
	}, "http://"+s.cfg.Ports.Addr("consul")+"/ui/", "http://"+s.cfg.Ports.Addr("consul")+"/v1/status/leader")
	if err != nil {
		return err
	}
	s.consul, err = consulapi.NewClient(&consulapi.Config{Address: srv.Addr})
	return err
}

func (s *supervisor) startLoki(ctx context.Context) error {
	_, err := s.server(ctx, "loki", "single-binary Loki (waits for /ready)", func(ctx context.Context) (*devserver.Server, error) {
		return devserver.StartLoki(ctx, s.opts("loki", s.cfg.Ports["loki"]))
	}, "http://"+s.cfg.Ports.Addr("loki"), "http://"+s.cfg.Ports.Addr("loki")+"/ready")
	return err
}

// postgresDatabases are the databases the shop keeps its state in, one per service that has state.
var postgresDatabases = []string{"orders", "payments", "fulfillment"}

// startPostgres runs PostgreSQL from Debian's package (initdb into a fresh data directory, as an
// unprivileged user when run as root) with a database per stateful service; the services apply their
// own migrations when they start.
func (s *supervisor) startPostgres(ctx context.Context) error {
	s.say("postgres", "starting PostgreSQL on %s with databases %s (initdb, then waits for connections)",
		s.cfg.Ports.Addr("postgres"), strings.Join(postgresDatabases, ", "))
	t := time.Now()
	pg, err := devserver.StartPostgres(ctx, s.opts("postgres", s.cfg.Ports["postgres"]))
	if err != nil {
		return err
	}
	s.postgres = pg
	url := pg.URL("postgres")
	var current atomic.Pointer[devserver.Server]
	current.Store(pg.Server)
	s.record(Component{Name: "postgres", URL: url, Health: url, PID: pg.Pid(), Log: pg.LogPath}, func() {
		s.say("postgres", "stopping (fast shutdown) and removing its data")
		_ = pg.Close()
	})
	// Started again on the same port and data after it stops (the drill stops it).
	s.keepRunning("postgres", &current, func(ctx context.Context) (*devserver.Server, error) {
		if err := pg.Start(ctx); err != nil {
			return nil, err
		}
		return pg.Server, nil
	})
	for _, db := range postgresDatabases {
		if err := pg.CreateDatabase(ctx, db); err != nil {
			return err
		}
	}
	// For psql: PGPASSFILE=<dir>/postgres.pgpass psql postgres://meshplane@127.0.0.1:5432/orders
	pgpass := fmt.Sprintf("%s:%d:*:%s:%s\n", "127.0.0.1", pg.Port(), devserver.PostgresSuperuser, pg.Password)
	if err := os.WriteFile(s.cfg.pgpassPath(), []byte(pgpass), 0o600); err != nil {
		return err
	}
	s.say("postgres", "ready on %s, user %s, password in %s (%s)", pg.Addr, devserver.PostgresSuperuser, s.cfg.pgpassPath(),
		time.Since(t).Round(100*time.Millisecond))
	return nil
}

// startNATS runs the event broker: one NATS server with JetStream on file storage in the run's data
// directory (a cluster runs three, manifests/components/nats). orders creates its stream ORDERS,
// fulfillment its durable consumer and the DEADLETTER stream. Started again on the same ports and store
// after it exits.
func (s *supervisor) startNATS(ctx context.Context) error {
	s.say("nats", "starting NATS with JetStream on %s, monitoring on %s (waits for /healthz)", s.cfg.Ports.Addr("nats"), s.cfg.Ports.Addr("nats-monitor"))
	t := time.Now()
	n, err := devserver.StartNATS(ctx, s.opts("nats", s.cfg.Ports["nats"]), s.cfg.Ports["nats-monitor"])
	if err != nil {
		return err
	}
	s.nats = n
	var current atomic.Pointer[devserver.Server]
	current.Store(n.Server)
	s.record(Component{Name: "nats", URL: n.ClientURL(), Health: n.MonitorURL() + "/healthz", PID: n.Pid(), Log: n.LogPath}, func() {
		s.say("nats", "stopping")
		_ = current.Load().Stop()
	})
	s.keepRunning("nats", &current, func(ctx context.Context) (*devserver.Server, error) {
		if err := n.Start(ctx); err != nil {
			return nil, err
		}
		return n.Server, nil
	})
	s.say("nats", "ready on %s, streams at %s/jsz (%s)", n.ClientURL(), n.MonitorURL(), time.Since(t).Round(100*time.Millisecond))
	return nil
}

func (s *supervisor) startOperator(ctx context.Context) error {
	probes := "http://" + s.cfg.Ports.Addr("operator-probes")
	_, err := s.server(ctx, "operator", "the Meshplane operator with the Consul catalog sync (waits for /readyz)", func(ctx context.Context) (*devserver.Server, error) {
		return devserver.Run(ctx, s.opts("operator", 0), devserver.Program{
			Name: "operator", Bin: filepath.Join(s.cfg.binDir(), "manager"),
			Args: []string{
				"--kubeconfig", s.cfg.Kubeconfig(),
				"--metrics-bind-address", s.cfg.Ports.Addr("operator-metrics"),
				"--health-probe-bind-address", s.cfg.Ports.Addr("operator-probes"),
				"--leader-elect", "--leader-election-namespace", OperatorNamespace,
				"--consul-address", s.cfg.Ports.Addr("consul"), "--cluster-name", "local",
				"--consul-serviceentry-namespace", IstioNamespace,
				// The canary checks read the shop's own gRPC server metrics from the platform's
				// Prometheus, which labels them with namespace, service and version (prometheusConfig).
				"--prometheus-url", "http://" + s.cfg.Ports.Addr("prometheus"), "--canary-queries", canary.GRPCQueries.Name,
			},
			Addr:  s.cfg.Ports.Addr("operator-metrics"),
			Ready: devserver.HTTPReady(probes + "/readyz"),
		})
	}, "http://"+s.cfg.Ports.Addr("operator-metrics")+"/metrics", probes+"/readyz")
	return err
}

// PrometheusScrapeInterval is how often the platform's Prometheus scrapes every target: a canary's
// steps on the platform are at least twice as long (analysis.scrapeInterval).
const PrometheusScrapeInterval = 5 * time.Second

// prometheusConfig scrapes every service in Consul that has an http-metrics port (the sync registers
// each named port as port-<name> meta) and labels it service=<Consul name> and namespace, as the
// dashboards expect, and version (versionRelabeling), as the canary checks' grpc queries select it;
// plus the operator. The rules are the generated ones.
const prometheusConfig = `global:
  scrape_interval: %[3]s
  evaluation_interval: 5s
rule_files:
  - rules/*.yaml
scrape_configs:
  - job_name: shop
    consul_sd_configs:
      - server: %[1]s
        refresh_interval: 5s
    relabel_configs:
      - source_labels: [__meta_consul_service_metadata_port_http_metrics]
        regex: .+
        action: keep
      - source_labels: [__meta_consul_service_address, __meta_consul_service_metadata_port_http_metrics]
        separator: ":"
        target_label: __address__
      - source_labels: [__meta_consul_service]
        target_label: service
      - source_labels: [__meta_consul_service_metadata_external_k8s_ns]
        target_label: namespace
%[4]s  - job_name: meshplane-operator
    static_configs:
      - targets: [%[2]q]
        labels: {service: meshplane-operator, namespace: meshplane-system}
`

// istiodScrape adds istiod's own metrics (pushes, xDS connections) when it runs.
const istiodScrape = `  - job_name: istiod
    static_configs:
      - targets: [%q]
        labels: {service: istiod, namespace: istio-system}
`

// versionRelabeling labels each shop target with its instance's version: the sync registers an
// instance with the pod its endpoint names (k8s-pod meta), and here the platform, which made those
// names, maps them to the instance's version label, as kubernetes_sd_configs' pod labels would in a
// cluster. One rule per version, matching its instances' pod names.
func versionRelabeling(instances []shopInstance) string {
	pods := map[string][]string{} // version → pod names
	var versions []string
	for _, in := range instances {
		if in.version == "" {
			continue
		}
		if _, seen := pods[in.version]; !seen {
			versions = append(versions, in.version)
		}
		pods[in.version] = append(pods[in.version], regexp.QuoteMeta(in.podName()))
	}
	var b strings.Builder
	for _, v := range versions {
		fmt.Fprintf(&b, "      - source_labels: [__meta_consul_service_metadata_k8s_pod]\n        regex: %q\n        target_label: version\n        replacement: %s\n",
			strings.Join(pods[v], "|"), v)
	}
	return b.String()
}

func (s *supervisor) startPrometheus(ctx context.Context) error {
	rules, err := filepath.Glob(filepath.Join(s.cfg.Repo, "dashboards", "generated", "prometheus", "*.yaml"))
	if err != nil {
		return err
	}
	if len(rules) == 0 {
		return errors.New("no rules in dashboards/generated/prometheus: run make generate")
	}
	files := map[string][]byte{}
	if err := os.MkdirAll(filepath.Join(s.cfg.dataDir("prometheus"), "rules"), 0o755); err != nil {
		return err
	}
	for _, r := range rules {
		b, err := os.ReadFile(r)
		if err != nil {
			return err
		}
		files[filepath.Join("rules", filepath.Base(r))] = b
	}
	cfg := fmt.Appendf(nil, prometheusConfig, s.cfg.Ports.Addr("consul"), s.cfg.Ports.Addr("operator-metrics"),
		model.Duration(PrometheusScrapeInterval), versionRelabeling(shopInstances()))
	if s.istiodMetrics != "" {
		cfg = fmt.Appendf(cfg, istiodScrape, s.istiodMetrics)
	}
	url := "http://" + s.cfg.Ports.Addr("prometheus")
	_, err = s.server(ctx, "prometheus", fmt.Sprintf("Prometheus with %s, targets from Consul (waits for /-/ready)", count(len(rules), "generated rule file")), func(ctx context.Context) (*devserver.Server, error) {
		return devserver.StartPrometheus(ctx, s.opts("prometheus", s.cfg.Ports["prometheus"]), cfg, files)
	}, url, url+"/-/ready")
	return err
}

// healthy is a one-shot health probe of a component's Health URL: an HTTP GET that wants 200, or for
// a postgres:// URL a connection attempt that wants the server to answer it (pg_isready's test: a
// server that asks for a password accepts connections, so no password is needed here).
func healthy(ctx context.Context, url string) error {
	if strings.HasPrefix(url, "postgres://") {
		return postgresAnswers(ctx, url)
	}
	return httpGetOK(ctx, url)
}

func postgresAnswers(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, url)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28") { // invalid_authorization_specification, invalid_password
		return nil
	}
	return err
}

// httpGetOK is a one-shot health probe.
func httpGetOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// waitPassing waits until Consul lists the instance of name at address:port as passing.
func (s *supervisor) waitPassing(ctx context.Context, name, address string, port int) error {
	return wait.Until(ctx, 200*time.Millisecond, func(context.Context) error {
		entries, _, err := s.consul.Health().Service(name, "", true, nil)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Service.Address == address && e.Service.Port == port {
				return nil
			}
		}
		return fmt.Errorf("consul lists no passing %s instance at %s:%d", name, address, port)
	})
}

func ensureDirs(cfg Config) error {
	for _, d := range []string{cfg.Dir, cfg.logDir(), cfg.binDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// count says "1 rule file", "2 rule files".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
