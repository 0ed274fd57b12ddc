package scenario_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/localplatform/scenario"
)

// The canary tests run spec.canary on real traffic: the caller's proxyless gRPC client calls payments
// through istiod's routes, payments v1 and v2 serve them, Prometheus scrapes their gRPC server metrics
// every second, and the operator's checks query it. Intervals are seconds long so a rollout takes
// seconds; the real-world default is a minute or more with a 15s scrape.

const (
	// canaryInterval is each step's length and check window.
	canaryInterval = 4 * time.Second
	// settle is how long after a weight shows in status the share served is not counted yet: the
	// VirtualService is written, istiod pushes, the caller's xDS client switches.
	settle = time.Second
	// callsPerSecond is the load while a rollout runs: 100 calls a second, so a 20% step sees about 80
	// calls per window, above minRequests.
	callsPerSecond = 100
)

// canaryPolicy is payments' policy: every call to v1 in split, and a rollout to v2 over steps, judged
// against a 99.9% objective with a burn rate of 10 (so v2 must succeed on 99% of calls), at least 20
// calls per check, two failed checks to roll back; no retries, so a failing call shows as it is.
func canaryPolicy(steps []int32, change ...func(*v1alpha1.Canary)) *v1alpha1.TrafficPolicy {
	p := mesh.Policy(scenario.NoRetries, scenario.WithSplit("v1", "v2", 100))
	c := &v1alpha1.Canary{Stable: "v1", Candidate: "v2", Steps: steps, Interval: scenario.APIDuration(canaryInterval),
		Analysis: v1alpha1.CanaryAnalysis{Objective: "99.9", MaxBurnRate: "10", MinRequests: ptr.To[int32](20),
			ScrapeInterval: ptr.To(v1alpha1.Duration("1s"))}}
	for _, f := range change {
		f(c)
	}
	p.Spec.Canary = c
	return p
}

// applyPolicy applies p as kubectl apply does and returns when.
func applyPolicy(t *testing.T, p *v1alpha1.TrafficPolicy) time.Time {
	t.Helper()
	b, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	if err := mesh.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return applied
}

// load calls payments through the mesh's caller at callsPerSecond until stopped.
type load struct {
	ok, failed atomic.Int64
	stop       func()
}

func startLoad(t *testing.T) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{}
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second / callsPerSecond)
		defer tick.Stop()
		inFlight := make(chan struct{}, 16)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case inFlight <- struct{}{}:
			default:
				continue // the machine is behind: skip a call rather than queue them
			}
			wg.Go(func() {
				defer func() { <-inFlight }()
				cctx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
				err := mesh.Call(cctx)
				cancelCall()
				switch {
				case err == nil:
					l.ok.Add(1)
				case ctx.Err() == nil:
					l.failed.Add(1)
				}
			})
		}
	})
	var once sync.Once
	l.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(l.stop)
	return l
}

// stepShare is what v2 served while the candidate had one weight.
type stepShare struct {
	weight    int32
	v2, total int
	started   time.Time
	lasted    time.Duration
	// checks are the results of the checks made at this weight, in order.
	checks []string
}

// followRollout follows the policy's rollout until it is Promoted or RolledBack (or until timeout), counting
// for each weight the calls each version served from settle after the weight showed in status until it
// changed. It returns the steps and the final status.
func followRollout(t *testing.T, p *v1alpha1.TrafficPolicy, timeout time.Duration) ([]stepShare, *v1alpha1.TrafficPolicy) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	var steps []stepShare
	var current *stepShare
	var from map[string]int
	var lastCheck time.Time
	// noteCheck adds a check the status shows for the first time to the current step's.
	noteCheck := func(st *v1alpha1.CanaryStatus) {
		if c := st.LastCheck; c != nil && current != nil && c.Weight == current.weight && !c.Time.Time.Equal(lastCheck) {
			lastCheck = c.Time.Time
			current.checks = append(current.checks, string(c.Result))
		}
	}
	closeStep := func(now time.Time, st *v1alpha1.CanaryStatus) {
		if current == nil {
			return
		}
		if from != nil {
			to, err := mesh.Served(ctx)
			if err != nil {
				t.Fatal(err)
			}
			current.v2 = to["payments-v2"] - from["payments-v2"]
			current.total = current.v2 + to["payments-v1"] - from["payments-v1"]
		}
		current.lasted = now.Sub(current.started)
		noteCheck(st)
		steps = append(steps, *current)
		current, from = nil, nil
	}
	for time.Now().Before(deadline) {
		live := &v1alpha1.TrafficPolicy{}
		if err := mesh.Client.Get(ctx, client.ObjectKeyFromObject(p), live); err != nil {
			t.Fatal(err)
		}
		st := live.Status.Canary
		now := time.Now()
		if st == nil || st.Revision != canary.Revision(&p.Spec) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		noteCheck(st)
		if current != nil && current.weight != st.Weight {
			closeStep(now, st)
		}
		if st.Phase == v1alpha1.CanaryPromoted || st.Phase == v1alpha1.CanaryRolledBack {
			closeStep(now, st)
			return steps, live
		}
		if current == nil && st.Weight > 0 {
			current = &stepShare{weight: st.Weight, started: now}
		}
		if current != nil && from == nil && now.Sub(current.started) >= settle {
			var err error
			if from, err = mesh.Served(ctx); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("rollout not over after %s; steps so far %+v", timeout, steps)
	return nil, nil
}

func shareTable(steps []stepShare) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| weight | v2 calls / all | v2 share | expected (4σ binomial) | step lasted | checks |\n|---|---|---|---|---|---|\n")
	for _, s := range steps {
		want := float64(s.weight) / 100
		share := 0.0
		if s.total > 0 {
			share = float64(s.v2) / float64(s.total)
		}
		fmt.Fprintf(&b, "| %d%% | %d / %d | %.3f | %.2f ± %.3f | %s | %s |\n", s.weight, s.v2, s.total, share, want,
			scenario.Tolerance(want, s.total), s.lasted.Round(100*time.Millisecond), strings.Join(s.checks, ", "))
	}
	return b.String()
}

// v2ServedOf counts the calls v2 and both versions served over the next d.
func v2ServedOf(t *testing.T, d time.Duration) (v2, total int) {
	t.Helper()
	before, err := mesh.Served(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	after, err := mesh.Served(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v2 = after["payments-v2"] - before["payments-v2"]
	return v2, v2 + after["payments-v1"] - before["payments-v1"]
}

// TestCanaryRollout runs four rollouts of payments v2 on real traffic, one after the other (each a new
// spec.canary, so a new rollout): healthy and promoted through every step, each step's share within its
// binomial tolerance; failing 20% of calls and rolled back within two intervals, a scrape and two seconds,
// then serving nothing; without traffic, held at the first step; aborted mid-rollout, every call back on
// v1 at once.
func TestCanaryRollout(t *testing.T) {
	logTailsOnFailure(t)
	if err := mesh.SetFaults(context.Background(), "payments-v2", ""); err != nil {
		t.Fatal(err)
	}

	t.Run("healthy v2 is promoted", func(t *testing.T) {
		l := startLoad(t)
		p := canaryPolicy([]int32{20, 50, 100})
		applied := applyPolicy(t, p)
		steps, live := followRollout(t, p, 60*time.Second)
		l.stop()
		t.Logf("promoted in %s (%d calls OK, %d failed)\n%s", time.Since(applied).Round(100*time.Millisecond), l.ok.Load(), l.failed.Load(), shareTable(steps))
		if live.Status.Canary.Phase != v1alpha1.CanaryPromoted {
			t.Fatalf("rollout %s: %s", live.Status.Canary.Phase, live.Status.Canary.Message)
		}
		var weights []int32
		for _, s := range steps {
			weights = append(weights, s.weight)
			want := float64(s.weight) / 100
			if tol := scenario.Tolerance(want, s.total); s.total < 100 || abs(float64(s.v2)/float64(s.total)-want) > tol {
				t.Errorf("at %d%% v2 served %d of %d calls, want a share of %.2f ± %.3f over at least 100", s.weight, s.v2, s.total, want, tol)
			}
		}
		if fmt.Sprint(weights) != "[20 50 100]" {
			t.Errorf("weights in order %v, want [20 50 100]", weights)
		}
	})

	t.Run("failing v2 is rolled back", func(t *testing.T) {
		if err := mesh.SetFaults(context.Background(), "payments-v2", `[{"target":"Charge","errorRate":0.2,"grpcCode":"INTERNAL"}]`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mesh.SetFaults(context.Background(), "payments-v2", "") })
		l := startLoad(t)
		p := canaryPolicy([]int32{20, 60, 100})
		applyPolicy(t, p)
		steps, live := followRollout(t, p, 60*time.Second)
		st := live.Status.Canary
		if st.Phase != v1alpha1.CanaryRolledBack {
			t.Fatalf("rollout %s: %s", st.Phase, st.Message)
		}
		// From the first step's start (in status) to the rollback being seen.
		tookSinceStart := steps[len(steps)-1].started.Add(steps[len(steps)-1].lasted).Sub(steps[0].started)
		bound := 2*canaryInterval + time.Second + 2*time.Second
		time.Sleep(settle)
		v2, total := v2ServedOf(t, 3*time.Second)
		l.stop()
		t.Logf("rolled back %s after the first step started (bound %s); then v2 served %d of %d calls; last check: %s\n%s",
			tookSinceStart.Round(100*time.Millisecond), bound, v2, total, st.LastCheck.Message, shareTable(steps))
		if tookSinceStart > bound {
			t.Errorf("rolled back %s after the rollout started, want within %s (two intervals, a scrape, 2s)", tookSinceStart, bound)
		}
		if v2 != 0 || total < 100 {
			t.Errorf("after the rollback v2 served %d of %d calls, want 0 of at least 100", v2, total)
		}
		if st.Weight != 0 || st.FailedChecks != 2 || st.LastCheck.Result != v1alpha1.CheckFailed {
			t.Errorf("status after the rollback: weight %d, %d failed checks, last %s; want 0, 2, Failed", st.Weight, st.FailedChecks, st.LastCheck.Result)
		}
	})

	t.Run("no traffic holds at the first step", func(t *testing.T) {
		p := canaryPolicy([]int32{25, 100})
		applyPolicy(t, p)
		var live *v1alpha1.TrafficPolicy
		wait.For(t, 30*time.Second, func() error {
			live = &v1alpha1.TrafficPolicy{}
			if err := mesh.Client.Get(context.Background(), client.ObjectKeyFromObject(p), live); err != nil {
				return err
			}
			st := live.Status.Canary
			if st == nil || st.Revision != canary.Revision(&p.Spec) {
				return fmt.Errorf("no status of this rollout yet")
			}
			if st.Phase != v1alpha1.CanaryProgressing || st.Weight != 25 {
				return fmt.Errorf("rollout %s at %d%%: %s", st.Phase, st.Weight, st.Message)
			}
			if st.Holds < 3 {
				return fmt.Errorf("%d holds so far", st.Holds)
			}
			return nil
		})
		st := live.Status.Canary
		c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionCanary)
		t.Logf("held at %d%% after %d checks: %s", st.Weight, st.Holds, st.LastCheck.Message)
		if c == nil || c.Reason != canary.ReasonInsufficientTraffic {
			t.Errorf("Canary condition %+v, want reason InsufficientTraffic", c)
		}
		if st.LastCheck.Result != v1alpha1.CheckInsufficientTraffic {
			t.Errorf("last check %s, want InsufficientTraffic", st.LastCheck.Result)
		}
	})

	t.Run("abort returns every call to v1 at once", func(t *testing.T) {
		l := startLoad(t)
		p := canaryPolicy([]int32{10, 50, 100})
		applyPolicy(t, p)
		wait.For(t, 30*time.Second, func() error {
			live := &v1alpha1.TrafficPolicy{}
			if err := mesh.Client.Get(context.Background(), client.ObjectKeyFromObject(p), live); err != nil {
				return err
			}
			if st := live.Status.Canary; st == nil || st.Revision != canary.Revision(&p.Spec) || st.Weight != 50 {
				return fmt.Errorf("not at 50%% yet: %+v", st)
			}
			return nil
		})
		time.Sleep(settle)
		v2Before, totalBefore := v2ServedOf(t, time.Second)
		p.Spec.Canary.Abort = true
		aborted := applyPolicy(t, p)
		// The last call v2 served: poll its counter until it stays put for a whole interval's worth.
		lastServed, last := aborted, -1
		for time.Since(lastServed) < 2*time.Second && time.Since(aborted) < 20*time.Second {
			served, err := mesh.Served(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if served["payments-v2"] != last {
				if last >= 0 {
					lastServed = time.Now()
				}
				last = served["payments-v2"]
			}
			time.Sleep(50 * time.Millisecond)
		}
		stopped := lastServed.Sub(aborted)
		v2, total := v2ServedOf(t, 2*time.Second)
		l.stop()
		t.Logf("at 50%% v2 served %d of %d calls in 1s; aborted: v2's last call %s after the apply; then v2 served %d of %d calls",
			v2Before, totalBefore, stopped.Round(10*time.Millisecond), v2, total)
		if stopped > 2*time.Second {
			t.Errorf("v2 served calls until %s after the abort, want at most 2s (half the %s interval)", stopped, canaryInterval)
		}
		if v2 != 0 || total < 100 {
			t.Errorf("after the abort v2 served %d of %d calls, want 0 of at least 100", v2, total)
		}
		live := &v1alpha1.TrafficPolicy{}
		if err := mesh.Client.Get(context.Background(), client.ObjectKeyFromObject(p), live); err != nil {
			t.Fatal(err)
		}
		if c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionCanary); c == nil || c.Reason != canary.ReasonAborted {
			t.Errorf("Canary condition %+v, want reason Aborted", c)
		}
	})
	// The next tests apply policies of their own; this one leaves none with a canary.
	applyPolicy(t, mesh.Policy(scenario.NoRetries))
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
