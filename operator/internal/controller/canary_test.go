package controller_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/internal/controller"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

// The rollout tests drive the operator's state machine through recordedTraffic, an in-process
// CanaryMetrics that answers each check with the traffic the test set for its namespace. It stands in
// for Prometheus at the controller's seam, not as an imitation of Prometheus' HTTP API: the queries and
// the client are tested on a real Prometheus in package canary, and the rollouts on real traffic in the
// scenario tests.

// prom is the metrics source of the suite's manager.
var prom *recordedTraffic

// traffic is what the metrics say about one namespace: calls and errors per version label over any
// window, or no answer at all.
type traffic struct {
	down     bool
	requests map[string]float64 // by version
	errors   map[string]float64
}

// calls is traffic where candidate v2 serves n calls and stable v1 m, failing the given share of v2's.
func calls(n, m float64, failing float64) traffic {
	return traffic{requests: map[string]float64{"v2": n, "v1": m}, errors: map[string]float64{"v2": n * failing}}
}

// errPrometheusDown is what a check gets while a test's Prometheus is down.
var errPrometheusDown = errors.New("query Prometheus: server error: 503 (the test's Prometheus is down)")

type recordedTraffic struct {
	mu      sync.Mutex
	traffic map[string]traffic
	// checks counts, by namespace, the checks made.
	checks map[string]int
}

func newRecordedTraffic() *recordedTraffic {
	return &recordedTraffic{traffic: map[string]traffic{}, checks: map[string]int{}}
}

// Measure implements controller.CanaryMetrics: the namespace's traffic, by the subsets' version labels.
func (f *recordedTraffic) Measure(_ context.Context, t canary.Target, _ time.Duration, _ time.Time) (canary.Measurement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks[t.Namespace]++
	tr := f.traffic[t.Namespace]
	if tr.down {
		return canary.Measurement{}, errPrometheusDown
	}
	subset := func(selector map[string]string) canary.Subset {
		v := selector["version"]
		return canary.Subset{Requests: tr.requests[v], Errors: tr.errors[v]}
	}
	return canary.Measurement{Candidate: subset(t.Candidate), Stable: subset(t.Stable)}, nil
}

func (f *recordedTraffic) set(ns string, t traffic) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.traffic[ns] = t
}

func (f *recordedTraffic) checksIn(ns string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checks[ns]
}

// ownManagerLabel marks a policy a test runs its own manager for; the suite's manager leaves it alone.
const ownManagerLabel = "meshplane.dev/test-manager"

func mustRequirement(key string, op selection.Operator, values ...string) *labels.Requirement {
	r, err := labels.NewRequirement(key, op, values)
	if err != nil {
		panic(err)
	}
	return r
}

// startOwnManager runs a manager of its own for the policies labelled ownManagerLabel=value, with
// metrics as its canary source (nil: none), until stop is called.
func startOwnManager(t *testing.T, value string, metrics controller.CanaryMetrics) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Logger: ctrl.Log.WithName(value), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&v1alpha1.TrafficPolicy{}: {Label: labels.NewSelector().Add(*mustRequirement(ownManagerLabel, selection.Equals, value))},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := controller.NewMetrics(mgr.GetClient())
	if err := m.Register(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	r := &controller.TrafficPolicyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder("meshplane"), Defaults: desiredstate.PlatformDefaults(), Metrics: m, CanaryMetrics: metrics}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager %s: %v", value, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// rolloutPolicy is payments' policy: v1 at 100 in the split, a canary to v2 over steps, a check every 2s
// wanting 10 calls and at most 1% errors, two failed checks to roll back.
func rolloutPolicy(ns string, steps []int32, change ...func(*v1alpha1.Canary)) *v1alpha1.TrafficPolicy {
	return pt.Policy(ns, "payments", pt.Split("v1", 100, "v2", 0), pt.Canary("v1", "v2", "2s", steps, change...))
}

// rolloutAt returns nil once the policy's rollout is in phase with the candidate at weight, for its
// current generation.
func rolloutAt(p *v1alpha1.TrafficPolicy, phase v1alpha1.CanaryPhase, weight int32) error {
	live := &v1alpha1.TrafficPolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), live); err != nil {
		return err
	}
	st := live.Status.Canary
	switch {
	case live.Status.ObservedGeneration != live.Generation:
		return fmt.Errorf("observedGeneration %d, generation %d", live.Status.ObservedGeneration, live.Generation)
	case st == nil:
		return fmt.Errorf("no status.canary; conditions %+v", live.Status.Conditions)
	case st.Phase != phase || st.Weight != weight:
		return fmt.Errorf("rollout %s at %d%% (%s), want %s at %d%%", st.Phase, st.Weight, st.Message, phase, weight)
	}
	return nil
}

// routed returns the weight per subset of the policy's VirtualService's default route (every route gets
// the same destinations).
func routed(t *testing.T, p *v1alpha1.TrafficPolicy) map[string]int32 {
	t.Helper()
	vs := &networkingv1.VirtualService{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), vs); err != nil {
		t.Fatal(err)
	}
	out := map[string]int32{}
	for _, d := range vs.Spec.Http[len(vs.Spec.Http)-1].Route {
		out[d.Destination.Subset] = d.Weight
	}
	return out
}

// A healthy candidate goes through every step, one check each, and is promoted: the VirtualService
// routes 10%, 50%, then 100% to it; status holds the last check's values and what to change next;
// kubectl get tp shows Promoted at 100; a Promoted Event and the weight gauge say the same.
func TestCanaryPromotes(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0))
	p := rolloutPolicy(ns, []int32{10, 50, 100})
	var mu sync.Mutex
	var weights []map[string]int32
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The key before create, which decodes the API server's answer into p while this goroutine runs.
	key := client.ObjectKeyFromObject(p)
	go func() {
		for ctx.Err() == nil {
			vs := &networkingv1.VirtualService{}
			if err := k8s.Get(ctx, key, vs); err == nil {
				w := map[string]int32{}
				for _, d := range vs.Spec.Http[0].Route {
					w[d.Destination.Subset] = d.Weight
				}
				mu.Lock()
				if len(weights) == 0 || !equalWeights(weights[len(weights)-1], w) {
					weights = append(weights, w)
				}
				mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	start := time.Now()
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 30*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryPromoted, 100) })
	took := time.Since(start)
	cancel()
	mu.Lock()
	want := []map[string]int32{{"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v2": 100}}
	if len(weights) > 0 && equalWeights(weights[0], map[string]int32{"v1": 100}) {
		weights = weights[1:] // the first write may route everything to v1, before the rollout starts
	}
	if !slices.EqualFunc(want, weights, equalWeights) {
		t.Errorf("VirtualService weights in order %v, want %v", weights, want)
	}
	mu.Unlock()
	if took < 6*time.Second {
		t.Errorf("promoted after %s, want at least 3 steps × 2s", took)
	}

	live := get(t, p)
	st := live.Status.Canary
	if st.LastCheck == nil || st.LastCheck.Result != v1alpha1.CheckPassed || st.LastCheck.Candidate.Requests != 100 ||
		st.LastCheck.Candidate.SuccessRate != "100.000%" || st.LastCheck.Thresholds.MinSuccessRate != "99%" || st.LastCheck.Weight != 100 {
		t.Errorf("last check %+v, want Passed at 100%% over 100 calls at 100.000%% against 99%%", st.LastCheck)
	}
	if !strings.Contains(st.Message, "remove spec.canary and set spec.split to v2: 100") {
		t.Errorf("promoted message %q does not say what to change next", st.Message)
	}
	if err := condition(p, v1alpha1.ConditionCanary, metav1.ConditionTrue, "Promoted"); err != nil {
		t.Error(err)
	}
	if err := condition(p, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonApplied); err != nil {
		t.Error(err)
	}
	wait.For(t, timeout, func() error { return event(ns, p.Name, "Promoted") })
	out, err := env.Kubectl(context.Background(), nil, "get", "tp", "-n", ns, "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`Promoted\s+100\s+True`).MatchString(out) {
		t.Errorf("kubectl get tp: %q, want CANARY Promoted, WEIGHT 100, READY True", out)
	}
	if v := canaryGauge(t, "meshplane_canary_weight", ns, ""); v != 100 {
		t.Errorf("meshplane_canary_weight = %v, want 100", v)
	}
	if v := canaryGauge(t, "meshplane_canary_phase", ns, "Promoted"); v != 1 {
		t.Errorf("meshplane_canary_phase{phase=Promoted} = %v, want 1", v)
	}
}

func equalWeights(a, b map[string]int32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// canaryGauge reads a canary gauge or counter of the suite's manager for the namespace's policy (and
// phase or result); -1 when there is no such series.
func canaryGauge(t *testing.T, name, ns, phase string) float64 {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["policy_namespace"] == ns && (phase == "" || l["phase"] == phase || l["result"] == phase) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// A candidate failing 5% of calls (the SLO allows 1%) fails its first check, holds its weight, fails the
// second and is rolled back at once: the VirtualService routes everything to v1, a Warning Event says
// why, and the rollout stays rolled back — until the candidate's labels change, which starts it over.
func TestCanaryRollsBack(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0.05))
	p := rolloutPolicy(ns, []int32{10, 50, 100})
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 10) })
	wait.For(t, 10*time.Second, func() error {
		if err := rolloutAt(p, v1alpha1.CanaryProgressing, 10); err != nil {
			return err
		}
		return condition(p, v1alpha1.ConditionCanary, metav1.ConditionUnknown, canary.ReasonCheckFailed)
	})
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryRolledBack, 0) })
	if got := routed(t, p); !equalWeights(got, map[string]int32{"v1": 100}) {
		t.Errorf("rolled back, the VirtualService routes %v, want v1 100", got)
	}
	st := get(t, p).Status.Canary
	if st.FailedChecks != 2 || st.LastCheck == nil || st.LastCheck.Result != v1alpha1.CheckFailed ||
		!strings.Contains(st.LastCheck.Message, "success rate 95.000% below 99%") {
		t.Errorf("rolled back with %d failed checks, last %+v; want 2, Failed: success rate 95.000%% below 99%%", st.FailedChecks, st.LastCheck)
	}
	if err := condition(p, v1alpha1.ConditionCanary, metav1.ConditionFalse, "RolledBack"); err != nil {
		t.Error(err)
	}
	wait.For(t, timeout, func() error { return warning(ns, p.Name, "RolledBack", "success rate 95.000% below 99%") })
	if v := canaryGauge(t, "meshplane_canary_checks_total", ns, "Failed"); v != 2 {
		t.Errorf("meshplane_canary_checks_total{result=Failed} = %v, want 2", v)
	}
	if v := canaryGauge(t, "meshplane_canary_phase", ns, "RolledBack"); v != 1 {
		t.Errorf("meshplane_canary_phase{phase=RolledBack} = %v, want 1", v)
	}

	// It stays rolled back, checks or no checks, while nothing about the rollout changes.
	checks := prom.checksIn(ns)
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Timeout = pt.Duration("3s") })
	time.Sleep(5 * time.Second) // two intervals: no check, no step may come
	if err := rolloutAt(p, v1alpha1.CanaryRolledBack, 0); err != nil {
		t.Errorf("an unrelated edit moved the rolled-back rollout: %v", err)
	}
	if n := prom.checksIn(ns) - checks; n != 0 {
		t.Errorf("%d checks while rolled back, want none", n)
	}

	// A new candidate build (new labels) is a new rollout.
	prom.set(ns, traffic{requests: map[string]float64{"v2.1": 100, "v1": 900}})
	update(t, p, func(p *v1alpha1.TrafficPolicy) {
		p.Spec.Split[1].Labels = map[string]v1alpha1.LabelValue{"version": "v2.1"}
	})
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 10) })
}

// warning returns nil once a Warning Event with reason whose note contains text regards the policy.
func warning(ns, name, reason, text string) error {
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason && e.Type == "Warning" && strings.Contains(e.Note, text) {
			return nil
		}
	}
	return fmt.Errorf("no Warning %s event about %q for %s/%s", reason, text, ns, name)
}

// A candidate without traffic never passes: each check holds the first step (InsufficientTraffic) and
// says how many calls it saw; without maxHolds it holds for as long as it takes.
func TestCanaryHoldsWithoutTraffic(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(3, 900, 0))
	p := rolloutPolicy(ns, []int32{10, 100})
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error {
		if err := rolloutAt(p, v1alpha1.CanaryProgressing, 10); err != nil {
			return err
		}
		if st := get(t, p).Status.Canary; st.Holds < 3 {
			return fmt.Errorf("%d holds so far", st.Holds)
		}
		return nil
	})
	if err := condition(p, v1alpha1.ConditionCanary, metav1.ConditionUnknown, canary.ReasonInsufficientTraffic); err != nil {
		t.Error(err)
	}
	st := get(t, p).Status.Canary
	if st.LastCheck.Result != v1alpha1.CheckInsufficientTraffic || !strings.Contains(st.LastCheck.Message, "v2 served 3 calls in 2s, fewer than minRequests 10") {
		t.Errorf("last check %+v, want InsufficientTraffic naming 3 calls", st.LastCheck)
	}
	if got := routed(t, p); !equalWeights(got, map[string]int32{"v1": 90, "v2": 10}) {
		t.Errorf("holding, the VirtualService routes %v, want v1 90 v2 10", got)
	}
}

// A Prometheus that does not answer holds the step (MetricsUnavailable) and never promotes; once it
// answers again the rollout goes on.
func TestCanaryHoldsWhilePrometheusIsDown(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, traffic{down: true})
	p := rolloutPolicy(ns, []int32{10, 100})
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error {
		if err := rolloutAt(p, v1alpha1.CanaryProgressing, 10); err != nil {
			return err
		}
		return condition(p, v1alpha1.ConditionCanary, metav1.ConditionUnknown, canary.ReasonMetricsUnavailable)
	})
	checks := prom.checksIn(ns)
	wait.For(t, 10*time.Second, func() error {
		if n := prom.checksIn(ns) - checks; n < 2 {
			return fmt.Errorf("%d more checks", n)
		}
		return nil
	})
	if err := rolloutAt(p, v1alpha1.CanaryProgressing, 10); err != nil {
		t.Errorf("Prometheus down: %v", err)
	}
	if msg := get(t, p).Status.Canary.Message; !strings.Contains(msg, errPrometheusDown.Error()) || !strings.Contains(msg, "holds until Prometheus answers") {
		t.Errorf("status message %q does not say Prometheus is down and the rollout holds", msg)
	}
	prom.set(ns, calls(100, 900, 0))
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryPromoted, 100) })
}

// abort mid-rollout returns every call to stable at once, without waiting for a check; unsetting it
// starts over.
func TestCanaryAbort(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0))
	p := rolloutPolicy(ns, []int32{10, 50, 100}, func(c *v1alpha1.Canary) { c.Interval = "4s" })
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 50) })
	start := time.Now()
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Canary.Abort = true })
	wait.For(t, 10*time.Second, func() error {
		if got := routed(t, p); !equalWeights(got, map[string]int32{"v1": 100}) {
			return fmt.Errorf("routes %v", got)
		}
		return rolloutAt(p, v1alpha1.CanaryRolledBack, 0)
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("abort took %s to route everything to v1, want it at once (well within the 4s interval)", took)
	}
	if err := condition(p, v1alpha1.ConditionCanary, metav1.ConditionFalse, canary.ReasonAborted); err != nil {
		t.Error(err)
	}
	wait.For(t, timeout, func() error { return warning(ns, p.Name, "RolledBack", "aborted") })
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Canary.Abort = false })
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 10) })
}

// paused holds the weight with no checks; unpaused, the rollout goes on from there.
func TestCanaryPause(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0))
	p := rolloutPolicy(ns, []int32{10, 50, 100})
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 50) })
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Canary.Paused = true })
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryPaused, 50) })
	checks := prom.checksIn(ns)
	time.Sleep(5 * time.Second) // two intervals: no check may come
	if n := prom.checksIn(ns) - checks; n != 0 {
		t.Errorf("%d checks while paused, want none", n)
	}
	if err := rolloutAt(p, v1alpha1.CanaryPaused, 50); err != nil {
		t.Error(err)
	}
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Canary.Paused = false })
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryPromoted, 100) })
}

// Editing the policy mid-rollout: a field outside spec.canary (timeout) keeps the rollout where it is and
// reaches the VirtualService with the rollout's weights; a change to spec.canary (its steps) is a new
// rollout from the first step.
func TestCanaryEditsMidRollout(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0))
	p := rolloutPolicy(ns, []int32{10, 50, 100}, func(c *v1alpha1.Canary) { c.Interval = "4s" })
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 50) })
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Timeout = pt.Duration("1500ms") })
	wait.For(t, 10*time.Second, func() error {
		vs := &networkingv1.VirtualService{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), vs); err != nil {
			return err
		}
		if got := vs.Spec.Http[0].Timeout.AsDuration(); got != 1500*time.Millisecond {
			return fmt.Errorf("timeout %s", got)
		}
		if got := routed(t, p); !equalWeights(got, map[string]int32{"v1": 50, "v2": 50}) {
			return fmt.Errorf("routes %v, want the rollout's 50/50", got)
		}
		return rolloutAt(p, v1alpha1.CanaryProgressing, 50)
	})
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Canary.Steps = []int32{20, 100} })
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 20) })
}

// An operator without Prometheus cannot check a candidate, so the rollout does not start and says why.
func TestCanaryWithoutPrometheus(t *testing.T) {
	ns := namespace(t)
	startOwnManager(t, "no-prometheus", nil)
	p := rolloutPolicy(ns, []int32{10, 100})
	p.Labels = map[string]string{ownManagerLabel: "no-prometheus"}
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error {
		return condition(p, v1alpha1.ConditionCanary, metav1.ConditionFalse, canary.ReasonPrometheusNotConfigured)
	})
	if err := rolloutAt(p, v1alpha1.CanaryInitialized, 0); err != nil {
		t.Error(err)
	}
	if msg := conditionMessage(get(t, p), v1alpha1.ConditionCanary); !strings.Contains(msg, "--prometheus-url") {
		t.Errorf("Canary condition %q does not name --prometheus-url", msg)
	}
	if got := routed(t, p); !equalWeights(got, map[string]int32{"v1": 100}) {
		t.Errorf("the VirtualService routes %v, want v1 100", got)
	}
}

func conditionMessage(p *v1alpha1.TrafficPolicy, typ string) string {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// A foreign VirtualService for the host: the rollout does not start (HostConflict), and nothing is
// written over it.
func TestCanaryHostConflict(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0))
	foreign := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "payments-by-hand", Namespace: ns}}
	foreign.Spec.Hosts = []string{"payments"}
	foreign.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "payments"}}}}}
	create(t, foreign)
	version := foreign.ResourceVersion
	p := rolloutPolicy(ns, []int32{10, 100})
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error {
		return condition(p, v1alpha1.ConditionCanary, metav1.ConditionFalse, v1alpha1.ReasonHostConflict)
	})
	time.Sleep(3 * time.Second) // past the first interval: nothing may start
	if err := rolloutAt(p, v1alpha1.CanaryInitialized, 0); err != nil {
		t.Error(err)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(foreign), foreign); err != nil {
		t.Fatal(err)
	}
	if foreign.ResourceVersion != version {
		t.Errorf("the foreign VirtualService was written: resourceVersion %s -> %s", version, foreign.ResourceVersion)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), &networkingv1.VirtualService{}); err == nil {
		t.Error("the policy wrote its own VirtualService beside the foreign one")
	}
	if n := prom.checksIn(ns); n != 0 {
		t.Errorf("%d checks of a rollout that never started", n)
	}
}

// A manager stopped mid-rollout and started again past the next check's time resumes from status: it
// does not start the rollout over and does not skip the overdue check — it runs it once, moves one step,
// and the next check comes a whole interval later.
func TestCanaryResumesAfterRestart(t *testing.T) {
	ns := namespace(t)
	prom.set(ns, calls(100, 900, 0))
	stop := startOwnManager(t, "restart-1", prom)
	p := rolloutPolicy(ns, []int32{10, 50, 100}, func(c *v1alpha1.Canary) { c.Interval = "3s" })
	p.Labels = map[string]string{ownManagerLabel: "restart-1"}
	create(t, pt.Service(ns, "payments"), p)
	wait.For(t, 20*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 50) })
	stop()
	before := get(t, p).Status.Canary
	checks := prom.checksIn(ns)
	time.Sleep(time.Until(before.NextCheck.Add(4 * time.Second))) // the check is overdue by more than an interval

	// The restarted manager selects the same policy by a new label value.
	startOwnManager(t, "restart-2", prom)
	restarted := time.Now()
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Labels[ownManagerLabel] = "restart-2" })
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryProgressing, 100) })
	if n := prom.checksIn(ns) - checks; n != 1 {
		t.Errorf("%d checks to resume the overdue one, want exactly 1", n)
	}
	after := get(t, p).Status.Canary
	if after.Step != 3 || after.LastCheck.Weight != 50 || after.LastCheck.Time.Time.Before(before.NextCheck.Time) {
		t.Errorf("resumed at step %d after a check at %d%% made %s; want step 3 after the overdue check at 50%%", after.Step, after.LastCheck.Weight, after.LastCheck.Time)
	}
	if next := after.NextCheck.Sub(restarted); next < 2*time.Second {
		t.Errorf("the next check is %s after the restart, want a whole interval (3s)", next)
	}
	wait.For(t, 10*time.Second, func() error { return rolloutAt(p, v1alpha1.CanaryPromoted, 100) })
}
