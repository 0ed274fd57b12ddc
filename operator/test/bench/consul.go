package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"meshplane.dev/operator/internal/consulsync"
)

// ConsulOptions configure the Consul sync section.
type ConsulOptions struct {
	// Config reaches the API server (envtest) as admin.
	Config *rest.Config
	// Consul is the address of a Consul agent's HTTP API, new for this run.
	Consul string
	// N is the number of Services, each with an EndpointSlice of Endpoints ready endpoints.
	N, Endpoints int
	// LagSamples is the number of EndpointSlice changes timed to the catalog.
	LagSamples int
	// Workers is the concurrency of the bare client creating the inputs.
	Workers int
	// Timeout bounds the wait for every instance to be in Consul.
	Timeout time.Duration
	// Dir receives the sync's log and, with Profile, the CPU profile of the initial sync.
	Dir string
	// Profile writes a CPU profile of this process (the sync runs in it) while the sync converges.
	Profile bool
	// Log receives progress.
	Log io.Writer
}

const (
	benchCluster = "bench"
	floorNode    = "bench-floor"
)

// Consul runs the Consul sync section: N Services with their EndpointSlices, timed from the sync's
// start until every instance is in the Consul catalog, against a floor of the same registrations made
// by a plain loop through the same consul/api client; then the lag from an EndpointSlice change to the
// catalog (floor: a raw registration seen by the same blocking query), and the writes of a no-op resync.
func Consul(ctx context.Context, o ConsulOptions, emit func(Row) error) (consulRun, error) {
	run := consulRun{n: o.N}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "consul N=%d: "+format+"\n", append([]any{o.N}, args...)...)
	}
	section := "Consul sync"
	cfg := rest.CopyConfig(o.Config)
	cfg.QPS, cfg.Burst = -1, 0
	scheme := Scheme()
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return run, err
	}
	consul, err := consulapi.NewClient(&consulapi.Config{Address: o.Consul})
	if err != nil {
		return run, err
	}
	ns := fmt.Sprintf("bench-consul-%d", o.N)
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return run, fmt.Errorf("create namespace %s: %w", ns, err)
	}
	slicesByIndex := make([]*discoveryv1.EndpointSlice, o.N)
	if err := parallel(ctx, o.N, o.Workers, func(ctx context.Context, i int) error {
		if err := k8s.Create(ctx, Service(ns, i)); err != nil {
			return fmt.Errorf("create service %s: %w", ServiceName(i), err)
		}
		s := EndpointSlice(ns, i, o.Endpoints)
		if err := k8s.Create(ctx, s); err != nil {
			return fmt.Errorf("create endpointslice %s: %w", s.Name, err)
		}
		slicesByIndex[i] = s
		return nil
	}); err != nil {
		return run, err
	}
	want := o.N * o.Endpoints
	settings := consulsync.Settings{Cluster: benchCluster, DefaultSync: true, Mode: consulsync.ModeEndpoints}

	// Floor: the same registrations, one after the other, on a node of their own; removed afterwards.
	floor := time.Duration(0)
	start := time.Now()
	for i := range o.N {
		in, err := consulsync.DesiredInstances(Service(ns, i), []discoveryv1.EndpointSlice{*slicesByIndex[i]}, settings)
		if err != nil {
			return run, err
		}
		for _, inst := range in {
			if err := register(consul, floorNode, inst); err != nil {
				return run, fmt.Errorf("floor: %w", err)
			}
		}
	}
	floor = time.Since(start)
	if _, err := consul.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: floorNode}, nil); err != nil {
		return run, fmt.Errorf("deregister floor node: %w", err)
	}
	logf("floor: %d registrations in a loop in %s", want, seconds(floor))

	// The sync, in this process.
	logFile, err := os.Create(filepath.Join(o.Dir, "consul-sync.log"))
	if err != nil {
		return run, err
	}
	defer logFile.Close()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 zap.New(zap.WriteTo(logFile)),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		// One manager per size, in one process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return run, err
	}
	reg := prometheus.NewRegistry()
	sync, err := consulsync.Setup(mgr, consulsync.Options{
		Address: o.Consul, ToConsul: true, ToIstio: true, Cluster: benchCluster, DefaultSync: true,
		Mode: string(consulsync.ModeEndpoints), ServiceEntryNamespace: ns,
	}, reg)
	if err != nil {
		return run, err
	}
	var stopProfile func()
	if o.Profile {
		if stopProfile, err = startCPUProfile(filepath.Join(o.Dir, fmt.Sprintf("consul-sync-%d.cpu.pprof", o.N))); err != nil {
			return run, err
		}
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		cancel()
		<-done
	}()
	synced, got, err := waitInstances(ctx, consul, "k8s-"+benchCluster, o.N, want, o.Timeout)
	if stopProfile != nil {
		stopProfile()
	}
	if err != nil {
		return run, err
	}
	logf("sync: %d of %d instances in Consul after %s", got, want, seconds(synced))
	run.floor, run.synced, run.complete = floor, synced, got == want
	row := Row{Section: section, Figure: fmt.Sprintf("%d Services (%d instances): sync start → all in Consul", o.N, want),
		Floor: seconds(floor) + " (register loop)"}
	if got == want {
		row.Value, row.Ratio = seconds(synced), ratio(synced, floor)
	} else {
		row.Value = fmt.Sprintf("> %s (%d of %d)", seconds(synced), got, want)
	}
	if o.N == 2000 {
		row.Target, row.Met = "< 1× floor at 2,000", met(got == want && synced < floor)
	}
	if err := emit(row); err != nil {
		return run, err
	}
	// What the initial sync wrote: one registration per instance, in how many transactions.
	written, err := gathered(reg, "meshplane_consul_sync_writes_total")
	if err != nil {
		return run, err
	}
	txns, err := gathered(reg, "meshplane_consul_sync_transactions_total")
	if err != nil {
		return run, err
	}
	if err := emit(Row{Section: section, Figure: fmt.Sprintf("initial sync of %d instances: writes (per instance) / Consul transactions", want),
		Value: fmt.Sprintf("%.0f (%.2f) / %.0f", written, written/float64(want), txns), Floor: fmt.Sprintf("%d / %d (register loop)", want, want),
		Target: "1 write per instance", Met: met(written == float64(want))}); err != nil {
		return run, err
	}

	lags, err := syncLag(ctx, k8s, consul, slicesByIndex, o.LagSamples, o.Endpoints)
	if err != nil {
		return run, err
	}
	floorLags, err := registerLag(consul, settings, ns, o.LagSamples)
	if err != nil {
		return run, err
	}
	p50, p99 := percentile(lags, 50), percentile(lags, 99)
	f50, f99 := percentile(floorLags, 50), percentile(floorLags, 99)
	if err := emit(Row{Section: section, Figure: fmt.Sprintf("lag EndpointSlice change → catalog, p50 / p99 (%d changes)", len(lags)),
		Value: millis(p50) + " / " + millis(p99), Floor: millis(f50) + " / " + millis(f99) + " (raw register → seen)",
		Ratio: ratio(p99, f99), Target: "p99 < 250 ms", Met: met(p99 < 250*time.Millisecond)}); err != nil {
		return run, err
	}

	writes, took, err := noOpResync(ctx, sync, reg, o.N)
	if err != nil {
		return run, err
	}
	return run, emit(Row{Section: section, Figure: fmt.Sprintf("writes during a no-op resync of %d Services (took %s)", o.N, seconds(took)),
		Value: fmt.Sprintf("%.0f", writes), Target: "0", Met: met(writes == 0)})
}

// consulRun is what one size of the Consul section measured.
type consulRun struct {
	n             int
	floor, synced time.Duration
	complete      bool
}

// consulGrowthRows says how the initial sync and its floor grow with the number of Services (see
// growthRows).
func consulGrowthRows(runs []consulRun) []Row {
	var ns, synced, floors []float64
	var sizes []string
	for _, r := range runs {
		if r.complete {
			ns, sizes = append(ns, float64(r.n)), append(sizes, strconv.Itoa(r.n))
			synced, floors = append(synced, r.synced.Seconds()), append(floors, r.floor.Seconds())
		}
	}
	if len(ns) < 2 {
		return nil
	}
	return []Row{{Section: "Consul sync", Figure: fmt.Sprintf("growth over N = %s Services: sync start → all in Consul", strings.Join(sizes, " → ")),
		Value: growth(ns, synced), Floor: growth(ns, floors)}}
}

// register makes the same catalog registration the sync makes for an instance, on node.
func register(c *consulapi.Client, node string, in consulsync.Instance) error {
	_, err := c.Catalog().Register(&consulapi.CatalogRegistration{
		Node: node, Address: "127.0.0.1", SkipNodeUpdate: true,
		NodeMeta: map[string]string{consulsync.MetaExternalSource: "kubernetes", consulsync.MetaOwner: benchCluster, consulsync.MetaCluster: benchCluster},
		Service:  &consulapi.AgentService{ID: in.ID, Service: in.Service, Address: in.Address, Port: in.Port, Tags: in.Tags, Meta: in.Meta},
		Check: &consulapi.AgentCheck{Node: node, CheckID: in.ID + ":k8s-readiness", Name: "Kubernetes readiness", Type: "kubernetes-readiness",
			ServiceID: in.ID, ServiceName: in.Service, Status: in.Status, Output: "Kubernetes endpoint is ready"},
	}, nil)
	if err != nil {
		return fmt.Errorf("register %s: %w", in.ID, err)
	}
	return nil
}

// waitInstances polls Consul every 100 ms until node holds want service instances or timeout passes,
// and returns how long that took (from the call) and how many it found. It reads the short list of
// service names on the node first and the node's full list only once every name is there: reading
// 4,000 instances ten times a second would take the CPU the sync needs.
func waitInstances(ctx context.Context, c *consulapi.Client, node string, services, want int, timeout time.Duration) (time.Duration, int, error) {
	start := time.Now()
	got := 0
	for time.Since(start) < timeout {
		names, _, err := c.Catalog().Services((&consulapi.QueryOptions{NodeMeta: map[string]string{consulsync.MetaOwner: benchCluster}}).WithContext(ctx))
		if err != nil {
			return 0, 0, err
		}
		if len(names) >= services {
			list, _, err := c.Catalog().NodeServiceList(node, (&consulapi.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return 0, 0, err
			}
			if list != nil {
				got = len(list.Services)
			}
			if got >= want {
				return time.Since(start), got, nil
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	if list, _, err := c.Catalog().NodeServiceList(node, (&consulapi.QueryOptions{}).WithContext(ctx)); err == nil && list != nil {
		got = len(list.Services)
	}
	return time.Since(start), got, nil
}

// syncLag adds one ready endpoint to each of samples EndpointSlices in turn and times each change from
// the update call to the new address in Consul's catalog, seen by a blocking query on its service.
func syncLag(ctx context.Context, k8s client.Client, c *consulapi.Client, endpointSlices []*discoveryv1.EndpointSlice, samples, endpoints int) ([]time.Duration, error) {
	var lags []time.Duration
	for k := range samples {
		i := k % len(endpointSlices)
		s := endpointSlices[i]
		name := s.Labels[discoveryv1.LabelServiceName]
		_, meta, err := c.Catalog().Service(name, "", nil)
		if err != nil {
			return nil, err
		}
		ep := endpointAt(i, endpoints+k/len(endpointSlices))
		s.Endpoints = append(s.Endpoints, ep)
		start := time.Now()
		if err := k8s.Update(ctx, s); err != nil {
			return nil, fmt.Errorf("update endpointslice %s: %w", s.Name, err)
		}
		if err := waitAddress(ctx, c, name, ep.Addresses[0], meta.LastIndex); err != nil {
			return nil, err
		}
		lags = append(lags, time.Since(start))
	}
	return lags, nil
}

// registerLag times raw registrations of new instances until a blocking query sees them: the floor of
// the lag.
func registerLag(c *consulapi.Client, settings consulsync.Settings, ns string, samples int) ([]time.Duration, error) {
	defer func() { _, _ = c.Catalog().Deregister(&consulapi.CatalogDeregistration{Node: floorNode}, nil) }()
	var lags []time.Duration
	for k := range samples {
		svc := Service(ns, k)
		svc.Name = fmt.Sprintf("bench-floor-lag-%d", k)
		slice := EndpointSlice(ns, 1<<14+k, 1)
		in, err := consulsync.DesiredInstances(svc, []discoveryv1.EndpointSlice{*slice}, settings)
		if err != nil {
			return nil, err
		}
		_, meta, err := c.Catalog().Service(svc.Name, "", nil)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := register(c, floorNode, in[0]); err != nil {
			return nil, err
		}
		if err := waitAddress(context.Background(), c, svc.Name, in[0].Address, meta.LastIndex); err != nil {
			return nil, err
		}
		lags = append(lags, time.Since(start))
	}
	return lags, nil
}

// waitAddress blocks on Consul service name from index until an instance has address.
func waitAddress(ctx context.Context, c *consulapi.Client, name, address string, index uint64) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		q := (&consulapi.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx)
		entries, meta, err := c.Catalog().Service(name, "", q)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(entries, func(e *consulapi.CatalogService) bool { return e.ServiceAddress == address }) {
			return nil
		}
		index = meta.LastIndex
	}
	return fmt.Errorf("consul service %s: address %s not registered within 30s", name, address)
}

// noOpResync re-checks every Service against Consul with nothing changed and returns the writes it made
// (meshplane_consul_sync_writes_total) and how long the resync took.
func noOpResync(ctx context.Context, s *consulsync.Sync, reg *prometheus.Registry, n int) (float64, time.Duration, error) {
	before, err := gathered(reg, "meshplane_consul_sync_writes_total")
	if err != nil {
		return 0, 0, err
	}
	reconciled := s.ToConsul.Reconciled()
	start := time.Now()
	if err := s.ToConsul.Resync(ctx); err != nil {
		return 0, 0, err
	}
	for s.ToConsul.Reconciled() < reconciled+int64(n) {
		if time.Since(start) > 5*time.Minute {
			return 0, 0, fmt.Errorf("resync: %d of %d Services re-checked after 5m", s.ToConsul.Reconciled()-reconciled, n)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	took := time.Since(start)
	after, err := gathered(reg, "meshplane_consul_sync_writes_total")
	if err != nil {
		return 0, 0, err
	}
	return after - before, took, nil
}

// gathered sums a metric family of reg.
func gathered(reg *prometheus.Registry, name string) (float64, error) {
	fams, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	m := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return sum(m, name, nil), nil
}

// startCPUProfile profiles this process into path until the returned function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank-1, 0)]
}
