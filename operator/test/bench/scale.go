package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/localplatform/controlplane"
)

// ScaleOptions configure the operator scale section.
type ScaleOptions struct {
	// Config and Kubeconfig reach the API server (envtest) as admin.
	Config     *rest.Config
	Kubeconfig string
	// Manager is the path of the real manager binary (go build ./operator/cmd/manager).
	Manager string
	// Sizes are the numbers of policies, e.g. 1000 and 5000.
	Sizes []int
	// Steady is how long writes are counted once everything is Ready (goal: none).
	Steady time.Duration
	// Workers is the concurrency of the bare clients: the inputs and the floor.
	Workers int
	// Timeout bounds the wait for all policies to be Ready.
	Timeout time.Duration
	// Dir receives the manager's logs and, with Profile, its CPU profiles.
	Dir string
	// Profile fetches a CPU profile of the manager (pprof) while it converges.
	Profile bool
	// ManagerArgs are extra flags for the manager.
	ManagerArgs []string
	// Log receives progress.
	Log io.Writer
}

// FloorFieldManager is the field manager of the floor's server-side applies.
const FloorFieldManager = "bench-floor"

// Scheme returns the scheme of the benchmark's clients: built-in kinds, Istio's and TrafficPolicy.
func Scheme() *runtime.Scheme {
	s := controlplane.NewScheme()
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}

// Scale runs the operator scale section: for each size, N Services and TrafficPolicies in a namespace
// the manager watches, timed from the manager's start to every policy Ready; the floor is the same
// generated objects server-side-applied by a bare client, in a namespace of their own, and one status
// patch per policy. With more than one size, how each figure grows with N follows.
func Scale(ctx context.Context, o ScaleOptions, emit func(Row) error) error {
	cfg := rest.CopyConfig(o.Config)
	cfg.QPS, cfg.Burst = -1, 0 // the bare clients rely on the API server's priority and fairness
	scheme := Scheme()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	var runs []scaleRun
	for _, n := range o.Sizes {
		run, err := scaleOnce(ctx, o, cfg, c, n)
		for _, r := range run.rows() {
			if err := emit(r); err != nil {
				return err
			}
		}
		if err != nil {
			return fmt.Errorf("operator scale at %d: %w", n, err)
		}
		runs = append(runs, run)
	}
	for _, r := range growthRows(runs) {
		if err := emit(r); err != nil {
			return err
		}
	}
	return nil
}

// scaleRun is what one size measured.
type scaleRun struct {
	n, objects, workers int
	steady              time.Duration
	floor               floorResult
	manager             managerResult
	// done is false when the run failed before the manager's figures were complete.
	done bool
}

const scaleSection = "Operator scale"

// TargetRatioAt5000 is the target: the operator converges 5,000 policies within this multiple of
// the floor.
const TargetRatioAt5000 = 1.3

func (s scaleRun) rows() []Row {
	if !s.done {
		return nil
	}
	n, res := s.n, s.manager
	converge := Row{
		Section: scaleSection,
		Figure:  fmt.Sprintf("N=%d: manager start → all %d policies Ready (%d objects)", n, n, s.objects),
		Floor:   fmt.Sprintf("%s (bare SSA + status patch, %d workers)", seconds(s.floor.took), s.workers),
	}
	if res.ready == n {
		converge.Value = seconds(res.converged)
		converge.Ratio = ratio(res.converged, s.floor.took)
	} else {
		converge.Value = fmt.Sprintf("> %s (%d of %d Ready)", seconds(res.converged), res.ready, n)
	}
	if n == 5000 {
		converge.Target = fmt.Sprintf("≤ %.1f× floor at 5,000", TargetRatioAt5000)
		converge.Met = met(res.ready == n && float64(res.converged) <= TargetRatioAt5000*float64(s.floor.took))
	}
	writes := Row{Section: scaleSection, Figure: fmt.Sprintf("N=%d: API writes per policy until all Ready (%s)", n, res.writeKinds),
		Value: fmt.Sprintf("%.2f", res.writesToReady/float64(n)),
		Floor: fmt.Sprintf("%.2f (%.1f objects + 1 status)", s.floor.writes/float64(n), float64(s.objects)/float64(n))}
	if s.floor.writes > 0 {
		writes.Ratio = fmt.Sprintf("%.2f×", res.writesToReady/s.floor.writes)
	}
	return []Row{converge, writes,
		{Section: scaleSection, Figure: fmt.Sprintf("N=%d: manager peak RSS (VmHWM)", n), Value: fmt.Sprintf("%.0f MiB", float64(res.peakRSS)/(1<<20))},
		{Section: scaleSection, Figure: fmt.Sprintf("N=%d: writes in %s of steady state (operator / API server)", n, seconds(s.steady)),
			Value:  fmt.Sprintf("%.0f / %.0f", res.steadyWrites, res.steadyAPIWrites),
			Target: "0", Met: met(res.steadyWrites == 0 && res.steadyAPIWrites == 0)},
	}
}

func scaleOnce(ctx context.Context, o ScaleOptions, cfg *rest.Config, c client.Client, n int) (scaleRun, error) {
	run := scaleRun{n: n, workers: o.Workers, steady: o.Steady}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "operator N=%d: "+format+"\n", append([]any{n}, args...)...)
	}
	floorNS, opNS := fmt.Sprintf("bench-floor-%d", n), fmt.Sprintf("bench-operator-%d", n)
	for _, ns := range []string{floorNS, opNS} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return run, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}

	start := time.Now()
	floorPolicies, err := createInputs(ctx, c, floorNS, n, o.Workers)
	if err != nil {
		return run, err
	}
	if _, err := createInputs(ctx, c, opNS, n, o.Workers); err != nil {
		return run, err
	}
	logf("created 2×%d Services and TrafficPolicies in %s", n, seconds(time.Since(start)))

	apiserver, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return run, err
	}
	// The floor's first half runs before the manager, its second half after: a machine that gets busier
	// or quieter while the manager runs (other processes share it) weighs on both sides alike.
	first, err := applyFloor(ctx, c, apiserver, cfg.Host, floorPolicies, 0, n/2, o.Workers)
	if err != nil {
		return run, err
	}
	if run.manager, err = runManager(ctx, o, cfg, opNS, n); err != nil {
		return run, err
	}
	second, err := applyFloor(ctx, c, apiserver, cfg.Host, floorPolicies, n/2, n, o.Workers)
	if err != nil {
		return run, err
	}
	run.floor = floorResult{took: first.took + second.took, objects: first.objects + second.objects, writes: first.writes + second.writes}
	run.objects = run.floor.objects
	logf("floor: %d objects server-side-applied and %d statuses patched by %d workers in %s + %s (%.0f API writes)",
		run.floor.objects, n, o.Workers, seconds(first.took), seconds(second.took), run.floor.writes)
	run.done = true
	return run, nil
}

// growthRows says how each figure grows with N across the sizes measured: the exponent b of the least-
// squares fit of figure = a·N^b on a log-log scale, and what that means per doubling (2^b). Linear work
// has b = 1 (×2.00 per 2×); a figure independent of N has b = 0.
func growthRows(runs []scaleRun) []Row {
	var ns, converged, floors, rss, writes []float64
	for _, r := range runs {
		if !r.done || r.manager.ready != r.n {
			continue
		}
		ns = append(ns, float64(r.n))
		converged = append(converged, r.manager.converged.Seconds())
		floors = append(floors, r.floor.took.Seconds())
		rss = append(rss, float64(r.manager.peakRSS))
		writes = append(writes, r.manager.writesToReady/float64(r.n))
	}
	if len(ns) < 2 {
		return nil
	}
	sizes := make([]string, len(ns))
	for i, n := range ns {
		sizes[i] = strconv.FormatFloat(n, 'f', -1, 64)
	}
	span := strings.Join(sizes, " → ")
	grow := func(ys []float64) string { return growth(ns, ys) }
	return []Row{
		{Section: scaleSection, Figure: fmt.Sprintf("growth over N = %s: time to all Ready", span), Value: grow(converged), Floor: grow(floors)},
		{Section: scaleSection, Figure: fmt.Sprintf("growth over N = %s: manager peak RSS", span), Value: grow(rss)},
		{Section: scaleSection, Figure: fmt.Sprintf("growth over N = %s: API writes per policy", span), Value: grow(writes), Target: "constant", Met: met(math.Abs(fittedExponent(ns, writes)) < 0.05)},
	}
}

// growth describes how ys grow with xs: the fitted exponent and what it means per doubling.
func growth(xs, ys []float64) string {
	b := fittedExponent(xs, ys)
	return fmt.Sprintf("∝ N^%.2f (×%.2f per 2×)", b, math.Pow(2, b))
}

// fittedExponent returns b of the least-squares fit of log y = log a + b·log x.
func fittedExponent(xs, ys []float64) float64 {
	var sx, sy, sxx, sxy float64
	for i := range xs {
		lx, ly := math.Log(xs[i]), math.Log(ys[i])
		sx, sy, sxx, sxy = sx+lx, sy+ly, sxx+lx*lx, sxy+lx*ly
	}
	n := float64(len(xs))
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}

// createInputs creates n Services and TrafficPolicies in ns and returns the policies as created (with
// their UIDs, which owner references need).
func createInputs(ctx context.Context, c client.Client, ns string, n, workers int) ([]*v1alpha1.TrafficPolicy, error) {
	policies := make([]*v1alpha1.TrafficPolicy, n)
	err := parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		if err := c.Create(ctx, Service(ns, i)); err != nil {
			return fmt.Errorf("create service %s/%s: %w", ns, ServiceName(i), err)
		}
		p := Policy(ns, i)
		if err := c.Create(ctx, p); err != nil {
			return fmt.Errorf("create trafficpolicy %s/%s: %w", ns, p.Name, err)
		}
		policies[i] = p
		return nil
	})
	return policies, err
}

// floorResult is what the floor took and wrote.
type floorResult struct {
	took    time.Duration
	objects int
	// writes is the API server's count of writes during the floor, as for the manager.
	writes float64
}

// applyFloor does the least any operator with a status must do for policies[from:to]: server-side-apply what
// desiredstate.Build generates, owned by the policy, and patch the policy's status once to say so (the
// status the operator writes: conditions, observedGeneration, generated objects, effective policy).
func applyFloor(ctx context.Context, c client.Client, apiserver *http.Client, host string, policies []*v1alpha1.TrafficPolicy, from, to, workers int) (floorResult, error) {
	var res floorResult
	var mu sync.Mutex
	before, err := apiRequests(ctx, apiserver, host)
	if err != nil {
		return res, err
	}
	start := time.Now()
	err = parallel(ctx, to-from, workers, func(ctx context.Context, i int) error {
		i += from
		p := policies[i]
		state, err := desiredstate.Build(p, Service(p.Namespace, i), desiredstate.PlatformDefaults())
		if err != nil {
			return err
		}
		for _, obj := range state.Objects() {
			u, err := desiredstate.Unstructured(obj)
			if err != nil {
				return err
			}
			if err := controllerutil.SetControllerReference(p, u, c.Scheme()); err != nil {
				return err
			}
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FloorFieldManager), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			}
		}
		ready := p.DeepCopy()
		ready.Status = readyStatus(p, state)
		if err := c.Status().Patch(ctx, ready, client.MergeFrom(p)); err != nil {
			return fmt.Errorf("patch status of trafficpolicy %s/%s: %w", p.Namespace, p.Name, err)
		}
		mu.Lock()
		res.objects += len(state.Objects())
		mu.Unlock()
		return nil
	})
	res.took = time.Since(start)
	if err != nil {
		return res, err
	}
	after, err := apiRequests(ctx, apiserver, host)
	if err != nil {
		return res, err
	}
	res.writes, _ = writesSince(before, after)
	return res, nil
}

// readyStatus is the status the operator writes for a policy whose objects are all applied.
func readyStatus(p *v1alpha1.TrafficPolicy, s *desiredstate.State) v1alpha1.TrafficPolicyStatus {
	var generated []v1alpha1.GeneratedObject
	var names []string
	for _, obj := range s.Objects() {
		gvk := obj.GetObjectKind().GroupVersionKind()
		generated = append(generated, v1alpha1.GeneratedObject{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: obj.GetName()})
		names = append(names, gvk.Kind+" "+obj.GetName())
	}
	now := metav1.Now()
	return v1alpha1.TrafficPolicyStatus{
		ObservedGeneration: p.Generation,
		Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted,
				Message: "in force for host " + s.Effective.Host, ObservedGeneration: p.Generation, LastTransitionTime: now},
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonApplied,
				Message: "applied and matching: " + strings.Join(names, ", "), ObservedGeneration: p.Generation, LastTransitionTime: now},
		},
		Generated: generated,
		Effective: &s.Effective,
	}
}

type managerResult struct {
	converged                     time.Duration
	ready                         int
	peakRSS                       int64
	steadyWrites, steadyAPIWrites float64
	// writesToReady counts the API server's writes from the manager's start to all Ready; writeKinds
	// says which, per policy.
	writesToReady float64
	writeKinds    string
}

// runManager starts the real manager binary watching ns, waits until all n policies are Ready (or the
// timeout), counts writes in the steady state after that, and stops it.
func runManager(ctx context.Context, o ScaleOptions, cfg *rest.Config, ns string, n int) (managerResult, error) {
	var res managerResult
	watcher, err := watchReady(ctx, cfg, ns, n)
	if err != nil {
		return res, err
	}
	defer watcher.stop()

	ports, err := devserver.FreePorts(3)
	if err != nil {
		return res, err
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[0])
	args := append([]string{
		"--kubeconfig=" + o.Kubeconfig,
		"--namespaces=" + ns,
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[0]),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[1]),
	}, o.ManagerArgs...)
	if o.Profile {
		args = append(args, "--pprof-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]))
	}
	apiserver, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return res, err
	}
	atStart, err := apiRequests(ctx, apiserver, cfg.Host)
	if err != nil {
		return res, err
	}
	logPath := filepath.Join(o.Dir, fmt.Sprintf("manager-%d.log", n))
	start := time.Now()
	proc, err := devserver.Run(ctx, devserver.Options{Dir: o.Dir, LogFile: logPath}, devserver.Program{Name: "manager", Bin: o.Manager, Args: args})
	if err != nil {
		return res, err
	}
	defer func() { _ = proc.StopWithin(30 * time.Second) }()
	if o.Profile {
		// Where the manager spends CPU, and where its goroutines wait (a throttled client burns no CPU).
		// The profile spans the convergence: about 20 ms of it per policy here, from 10 s to 2 min.
		pprofURL := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", ports[2])
		secs := min(max(n/50, 10), 120)
		go profile(ctx, pprofURL+"profile?seconds="+strconv.Itoa(secs), 0, filepath.Join(o.Dir, fmt.Sprintf("manager-%d.cpu.pprof", n)), o.Log)
		go profile(ctx, pprofURL+"goroutine", 10*time.Second, filepath.Join(o.Dir, fmt.Sprintf("manager-%d.goroutine.pprof", n)), o.Log)
	}

	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	select {
	case <-watcher.done:
		res.converged = watcher.at.Sub(start)
	case <-deadline.C:
		res.converged = time.Since(start)
	case <-proc.Done():
		_, err := proc.Exited()
		return res, fmt.Errorf("manager exited: %w (log: %s)", err, logPath)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.ready = watcher.count()
	fmt.Fprintf(o.Log, "operator N=%d: %d of %d Ready after %s (manager log: %s)\n", n, res.ready, n, seconds(res.converged), logPath)

	before, err := writeCounts(ctx, metricsURL, apiserver, cfg.Host)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(o.Log, "operator N=%d: %.0f reconciles; API server requests until Ready: %s\n", n, before.reconciles, requestsSince(atStart, before.byRequest, false))
	writes, byRequest := writesSince(atStart, before.byRequest)
	res.writesToReady, res.writeKinds = writes, perPolicy(byRequest, n)
	select {
	case <-time.After(o.Steady):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	after, err := writeCounts(ctx, metricsURL, apiserver, cfg.Host)
	if err != nil {
		return res, err
	}
	res.steadyWrites, res.steadyAPIWrites = after.operator-before.operator, after.apiserver-before.apiserver
	if res.steadyAPIWrites > 0 {
		fmt.Fprintf(o.Log, "operator N=%d: API server writes in steady state: %s\n", n, requestsSince(before.byRequest, after.byRequest, true))
	}
	if res.peakRSS, err = peakRSS(proc.Pid()); err != nil {
		return res, err
	}
	if exited, err := proc.Exited(); exited {
		return res, fmt.Errorf("manager exited: %w (log: %s)", err, logPath)
	}
	return res, nil
}

// writeCounts returns the operator's own count of writes (meshplane_operator_writes_total) and of
// reconciles, and the API server's count of requests about what the operator reads and writes.
func writeCounts(ctx context.Context, managerMetrics string, apiserver *http.Client, host string) (writeCount, error) {
	var out writeCount
	m, err := scrape(ctx, http.DefaultClient, managerMetrics)
	if err != nil {
		return out, fmt.Errorf("manager metrics: %w", err)
	}
	out.operator = sum(m, "meshplane_operator_writes_total", nil)
	out.reconciles = sum(m, "controller_runtime_reconcile_total", func(l map[string]string) bool { return l["controller"] == "trafficpolicy" })
	if out.byRequest, err = apiRequests(ctx, apiserver, host); err != nil {
		return out, err
	}
	for key, n := range out.byRequest {
		if verb, _, _ := strings.Cut(key, " "); writeVerbs[verb] {
			out.apiserver += n
		}
	}
	return out, nil
}

var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "APPLY": true, "DELETE": true, "DELETECOLLECTION": true}

// apiRequests returns the API server's request counts (apiserver_request_total) about Istio objects,
// TrafficPolicies and Events, by "VERB resource[/subresource]".
func apiRequests(ctx context.Context, apiserver *http.Client, host string) (map[string]float64, error) {
	a, err := scrape(ctx, apiserver, strings.TrimSuffix(host, "/")+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("apiserver metrics: %w", err)
	}
	groups := map[string]bool{"networking.istio.io": true, "security.istio.io": true, v1alpha1.GroupVersion.Group: true, "events.k8s.io": true}
	out := map[string]float64{}
	each(a, "apiserver_request_total", func(l map[string]string, v float64) {
		if groups[l["group"]] {
			out[strings.TrimSuffix(l["verb"]+" "+l["resource"]+"/"+l["subresource"], "/")] += v
		}
	})
	return out, nil
}

// writesSince returns the writes between two counts of apiRequests, and which they were.
func writesSince(before, after map[string]float64) (float64, map[string]float64) {
	total, byRequest := 0.0, map[string]float64{}
	for key, n := range after {
		verb, _, _ := strings.Cut(key, " ")
		if d := n - before[key]; d > 0 && writeVerbs[verb] {
			total += d
			byRequest[key] = d
		}
	}
	return total, byRequest
}

// perPolicy describes writes per policy by what they wrote, largest first, e.g. "Istio objects 2.50,
// status 1.00, events 1.00".
func perPolicy(byRequest map[string]float64, n int) string {
	grouped := map[string]float64{}
	for key, count := range byRequest {
		_, resource, _ := strings.Cut(key, " ")
		switch resource {
		case "virtualservices", "destinationrules", "peerauthentications", "authorizationpolicies":
			resource = "Istio objects"
		case "trafficpolicies/status":
			resource = "status"
		}
		grouped[resource] += count
	}
	keys := slices.Collect(maps.Keys(grouped))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(grouped[b], grouped[a]), strings.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.2f", k, grouped[k]/float64(n))
	}
	return strings.Join(parts, ", ")
}

// writeCount is what writeCounts found.
type writeCount struct {
	operator, reconciles, apiserver float64
	// byRequest is the API server's count by "VERB resource[/subresource]".
	byRequest map[string]float64
}

// requestsSince describes the requests between two counts, e.g. "PATCH trafficpolicies/status: 3".
func requestsSince(before, after map[string]float64, writesOnly bool) string {
	var parts []string
	for key, n := range after {
		verb, _, _ := strings.Cut(key, " ")
		if d := n - before[key]; d > 0 && (!writesOnly || writeVerbs[verb]) {
			parts = append(parts, fmt.Sprintf("%s: %.0f", key, d))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// readyWatcher follows the TrafficPolicies of a namespace and notes when n of them are Ready for their
// current generation.
type readyWatcher struct {
	n      int
	cancel context.CancelFunc
	done   chan struct{}
	at     time.Time

	mu    sync.Mutex
	ready map[string]bool
	// readyCount is how many of ready are true: counting them on every event took O(N) each.
	readyCount int
	once       sync.Once
}

func watchReady(ctx context.Context, cfg *rest.Config, ns string, n int) (*readyWatcher, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: Scheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &readyWatcher{n: n, cancel: cancel, done: make(chan struct{}), ready: map[string]bool{}}
	inf, err := c.GetInformer(ctx, &v1alpha1.TrafficPolicy{})
	if err != nil {
		cancel()
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    w.observe,
		UpdateFunc: func(_, obj any) { w.observe(obj) },
	}); err != nil {
		cancel()
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		cancel()
		return nil, errors.New("trafficpolicy watch did not sync")
	}
	return w, nil
}

func (w *readyWatcher) observe(obj any) {
	p, ok := obj.(*v1alpha1.TrafficPolicy)
	if !ok {
		return
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
	ready := c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == p.Generation
	w.mu.Lock()
	defer w.mu.Unlock()
	if was := w.ready[p.Name]; was != ready {
		w.ready[p.Name] = ready
		if ready {
			w.readyCount++
		} else {
			w.readyCount--
		}
	}
	if ready && w.readyCount >= w.n {
		w.once.Do(func() { w.at = time.Now(); close(w.done) })
	}
}

func (w *readyWatcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.readyCount
}

func (w *readyWatcher) stop() { w.cancel() }

// profile saves the profile served at url to path, after a delay.
func profile(ctx context.Context, url string, delay time.Duration, path string, log io.Writer) {
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return
	}
	// The pprof listener comes up with the manager; give it a moment rather than fail the profile.
	var resp *http.Response
	for range 50 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
	if resp == nil {
		fmt.Fprintf(log, "profile %s: pprof endpoint never answered\n", url)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(log, "profile: %v\n", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		fmt.Fprintf(log, "profile: %v\n", err)
		return
	}
	fmt.Fprintf(log, "profile of the manager: %s\n", path)
}
