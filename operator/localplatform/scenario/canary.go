package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/canary"
)

// The canary scenarios run spec.canary on real traffic: the caller's proxyless gRPC client calls the
// service through istiod's routes, the stable and candidate instances serve them, Prometheus scrapes
// their gRPC server metrics, and the operator's checks query it. The scenario tests and `make drill`
// run the same four, sized by a Rollout: a healthy candidate promoted, a failing one rolled back, no
// traffic held, and an abort.

// Rollout sizes the canary scenarios.
type Rollout struct {
	// Stable and Candidate are the subsets (version labels), e.g. v1 and v2.
	Stable, Candidate string
	// Interval is each step's length and check window; at least twice ScrapeInterval.
	Interval time.Duration
	// ScrapeInterval is how often Prometheus scrapes the instances (the policy's analysis.scrapeInterval).
	ScrapeInterval time.Duration
	// Settle is how long after a weight shows in status the share served is not counted yet: the
	// VirtualService is written, istiod pushes, the caller's xDS client switches.
	Settle time.Duration
	// CallsPerSecond is the caller's load while a rollout runs.
	CallsPerSecond int
	// MinRequests is the policy's analysis.minRequests: the candidate's calls a check needs.
	MinRequests int32
	// MinCalls is the fewest calls a step's share is judged over.
	MinCalls int
}

// CanaryPolicy is the service's policy for a rollout over steps: every call to Stable in split, and a
// rollout to Candidate judged against a 99.9% objective with a burn rate of 10 (so the candidate must
// succeed on 99% of calls), at least MinRequests calls per check, two failed checks to roll back; no
// retries, so a failing call shows as it is.
func (m *Mesh) CanaryPolicy(r Rollout, steps []int32, change ...func(*v1alpha1.Canary)) *v1alpha1.TrafficPolicy {
	p := m.Policy(NoRetries, WithSplit(r.Stable, r.Candidate, 100))
	c := &v1alpha1.Canary{Stable: r.Stable, Candidate: r.Candidate, Steps: steps, Interval: APIDuration(r.Interval),
		Analysis: v1alpha1.CanaryAnalysis{Objective: "99.9", MaxBurnRate: "10", MinRequests: ptr.To(r.MinRequests),
			ScrapeInterval: ptr.To(APIDuration(r.ScrapeInterval))}}
	for _, f := range change {
		f(c)
	}
	p.Spec.Canary = c
	return p
}

// Load calls the service's Method through the Mesh's caller at a steady rate until stopped.
type Load struct {
	// OK and Failed count the calls made so far.
	OK, Failed atomic.Int64
	stop       func()
}

// Stop ends the load and waits for the calls in flight; it may be called more than once.
func (l *Load) Stop() { l.stop() }

// StartLoad calls Method at perSecond calls a second; a call the machine is too far behind for is
// skipped rather than queued.
func (m *Mesh) StartLoad(ctx context.Context, perSecond int) *Load {
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{}
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
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
				continue
			}
			wg.Go(func() {
				defer func() { <-inFlight }()
				cctx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
				err := m.Call(cctx)
				cancelCall()
				switch {
				case err == nil:
					l.OK.Add(1)
				case ctx.Err() == nil:
					l.Failed.Add(1)
				}
			})
		}
	})
	var once sync.Once
	l.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	return l
}

// servedBy counts the calls of Method the instances of each subset have handled so far.
func (m *Mesh) servedBy(ctx context.Context) (map[string]int, error) {
	byInstance, err := m.Served(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, in := range m.Instances {
		out[in.Subset] += byInstance[in.Name]
	}
	return out, nil
}

// shareOver counts the calls the candidate and every instance served over the next d.
func (m *Mesh) shareOver(ctx context.Context, candidate string, d time.Duration) (int, int, error) {
	before, err := m.servedBy(ctx)
	if err != nil {
		return 0, 0, err
	}
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(d):
	}
	after, err := m.servedBy(ctx)
	if err != nil {
		return 0, 0, err
	}
	total := 0
	for subset, n := range after {
		total += n - before[subset]
	}
	return after[candidate] - before[candidate], total, nil
}

// RolloutStep is what the candidate served while it had one weight.
type RolloutStep struct {
	// Weight is the candidate's weight in status.
	Weight int32
	// Candidate and Total count the calls the candidate and every instance served, from Settle after
	// the weight showed until it changed.
	Candidate, Total int
	// Started is when the weight showed in status; Lasted until it changed.
	Started time.Time
	Lasted  time.Duration
	// Checks are the results of the checks made at this weight, in order.
	Checks []string
}

// live reads the policy's status.
func (m *Mesh) live(ctx context.Context, p *v1alpha1.TrafficPolicy) (*v1alpha1.TrafficPolicy, error) {
	live := &v1alpha1.TrafficPolicy{}
	if err := m.Client.Get(ctx, client.ObjectKeyFromObject(p), live); err != nil {
		return nil, err
	}
	return live, nil
}

// FollowRollout follows p's rollout until it is Promoted or RolledBack, counting for each weight the
// calls each subset served from r.Settle after the weight showed in status until it changed. It
// returns the steps and the final policy; an error when the rollout is not over within timeout.
func (m *Mesh) FollowRollout(ctx context.Context, r Rollout, p *v1alpha1.TrafficPolicy, timeout time.Duration) ([]RolloutStep, *v1alpha1.TrafficPolicy, error) {
	deadline := time.Now().Add(timeout)
	revision := canary.Revision(&p.Spec)
	var steps []RolloutStep
	var current *RolloutStep
	var from map[string]int
	var lastCheck time.Time
	// noteCheck adds a check the status shows for the first time to the current step's.
	noteCheck := func(st *v1alpha1.CanaryStatus) {
		if c := st.LastCheck; c != nil && current != nil && c.Weight == current.Weight && !c.Time.Time.Equal(lastCheck) {
			lastCheck = c.Time.Time
			current.Checks = append(current.Checks, string(c.Result))
		}
	}
	closeStep := func(now time.Time, st *v1alpha1.CanaryStatus) error {
		if current == nil {
			return nil
		}
		if from != nil {
			to, err := m.servedBy(ctx)
			if err != nil {
				return err
			}
			current.Candidate = to[r.Candidate] - from[r.Candidate]
			for subset, n := range to {
				current.Total += n - from[subset]
			}
		}
		current.Lasted = now.Sub(current.Started)
		noteCheck(st)
		steps = append(steps, *current)
		current, from = nil, nil
		return nil
	}
	for time.Now().Before(deadline) {
		live, err := m.live(ctx, p)
		if err != nil {
			return steps, nil, err
		}
		st := live.Status.Canary
		now := time.Now()
		if st != nil && st.Revision == revision {
			noteCheck(st)
			if current != nil && current.Weight != st.Weight {
				if err := closeStep(now, st); err != nil {
					return steps, nil, err
				}
			}
			if st.Phase == v1alpha1.CanaryPromoted || st.Phase == v1alpha1.CanaryRolledBack {
				return steps, live, closeStep(now, st)
			}
			if current == nil && st.Weight > 0 {
				current = &RolloutStep{Weight: st.Weight, Started: now}
			}
			if current != nil && from == nil && now.Sub(current.Started) >= r.Settle {
				if from, err = m.servedBy(ctx); err != nil {
					return steps, nil, err
				}
			}
		}
		select {
		case <-ctx.Done():
			return steps, nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return steps, nil, fmt.Errorf("rollout not over after %s; steps so far %+v", timeout, steps)
}

// CanaryRow is one line of a canary scenario's table: what the candidate served at one weight, and what
// was predicted for it.
type CanaryRow struct {
	// Step names the row, e.g. "step 2" or "after the rollback".
	Step string
	// Weight is the candidate's weight in force.
	Weight int32
	// Candidate and Total count the calls the candidate and every instance served.
	Candidate, Total int
	// Lasted is how long the weight held (0: not a rollout step).
	Lasted time.Duration
	// Checks are the operator's checks at this weight, in order.
	Checks []string
	Prediction
}

// CanaryOutcome is a canary scenario's table, its timings and whether every prediction held.
type CanaryOutcome struct {
	// Name is the scenario's, e.g. "canary-promote"; Title says what it shows.
	Name, Title string
	Rows        []CanaryRow
	// Timings are the scenario's measured times against their bounds, one sentence each.
	Timings []string
	// Failures are the predictions that did not hold, beyond the rows' own.
	Failures []error
}

// Err joins every prediction that did not hold, the rows' and the scenario's.
func (o CanaryOutcome) Err() error {
	var errs []error
	for _, r := range o.Rows {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s, %s: %w", o.Name, r.Step, r.Err))
		}
	}
	for _, err := range o.Failures {
		errs = append(errs, fmt.Errorf("%s: %w", o.Name, err))
	}
	return errors.Join(errs...)
}

// WriteCanaryTable prints a canary scenario's table, then its timings.
func WriteCanaryTable(w io.Writer, o CanaryOutcome, candidate string) error {
	if _, err := fmt.Fprintf(w, "%s — %s\n", o.Name, o.Title); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STEP\tWEIGHT\tCALLS (%s/ALL)\t%s SHARE\tLASTED\tCHECKS\tPREDICTED\tHELD\n", strings.ToUpper(candidate), strings.ToUpper(candidate))
	for _, r := range o.Rows {
		held := "yes"
		if r.Err != nil {
			held = "NO: " + r.Err.Error()
		}
		share, lasted, checks := "-", "-", "-"
		if r.Total > 0 {
			share = fmt.Sprintf("%.3f", float64(r.Candidate)/float64(r.Total))
		}
		if r.Lasted > 0 {
			lasted = r.Lasted.Round(100 * time.Millisecond).String()
		}
		if len(r.Checks) > 0 {
			checks = strings.Join(r.Checks, ", ")
		}
		fmt.Fprintf(tw, "%s\t%d%%\t%d / %d\t%s\t%s\t%s\t%s\t%s\n", r.Step, r.Weight, r.Candidate, r.Total, share, lasted, checks, r.Expected, held)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range o.Timings {
		if _, err := fmt.Fprintln(w, t); err != nil {
			return err
		}
	}
	for _, err := range o.Failures {
		if _, err := fmt.Fprintf(w, "NOT HELD: %v\n", err); err != nil {
			return err
		}
	}
	return nil
}

// shareRow judges a step's share: the candidate serves its weight's share within Tolerance, over at
// least minCalls calls.
func shareRow(label string, weight int32, candidate, total, minCalls int, checks []string, lasted time.Duration) CanaryRow {
	want := float64(weight) / 100
	tol := Tolerance(want, total)
	row := CanaryRow{Step: label, Weight: weight, Candidate: candidate, Total: total, Lasted: lasted, Checks: checks,
		Prediction: Prediction{Expected: fmt.Sprintf("%.2f ± %.3f (4σ binomial), ≥ %d calls", want, tol, minCalls)}}
	share := 0.0
	if total > 0 {
		share = float64(candidate) / float64(total)
	}
	if total < minCalls || math.Abs(share-want) > tol {
		row.Err = fmt.Errorf("share %.3f over %d calls, want %.2f ± %.3f over at least %d", share, total, want, tol, minCalls)
	}
	return row
}

// noneRow judges a window in which the candidate must serve nothing, over at least minCalls calls.
func noneRow(label string, candidate, total, minCalls int) CanaryRow {
	row := CanaryRow{Step: label, Candidate: candidate, Total: total,
		Prediction: Prediction{Expected: fmt.Sprintf("0 exactly, ≥ %d calls", minCalls)}}
	if candidate != 0 || total < minCalls {
		row.Err = fmt.Errorf("the candidate served %d of %d calls, want 0 of at least %d", candidate, total, minCalls)
	}
	return row
}

// startFromStable applies the service's policy with every call on the stable subset and no canary and
// waits until the caller and the servers hold it: each scenario's rollout starts from there, whatever
// the policy was before (e.g. mTLS STRICT with an allow list the caller is not on).
func (m *Mesh) startFromStable(ctx context.Context, r Rollout) error {
	_, err := m.ApplyAndWait(ctx, m.Policy(NoRetries, WithSplit(r.Stable, r.Candidate, 100)))
	return err
}

// apply applies p as kubectl apply does and returns when.
func (m *Mesh) apply(ctx context.Context, p *v1alpha1.TrafficPolicy) (time.Time, error) {
	b, err := yaml.Marshal(p)
	if err != nil {
		return time.Time{}, err
	}
	applied := time.Now()
	if err := m.Apply(ctx, b); err != nil {
		return time.Time{}, fmt.Errorf("apply trafficpolicy %s: %w", p.Name, err)
	}
	return applied, nil
}

// stepsTimeout bounds a rollout over steps: every step twice over, and a minute to start.
func (r Rollout) stepsTimeout(steps []int32) time.Duration {
	return time.Duration(2*len(steps))*r.Interval + time.Minute
}

// CanaryPromote rolls out a healthy candidate over steps under load: it is promoted through every
// step, and at each the candidate serves the step's weight within Tolerance.
func (m *Mesh) CanaryPromote(ctx context.Context, r Rollout, steps []int32) (CanaryOutcome, error) {
	o := CanaryOutcome{Name: "canary-promote", Title: fmt.Sprintf("a healthy %s promoted over steps %v, %s each", r.Candidate, steps, r.Interval)}
	if err := m.startFromStable(ctx, r); err != nil {
		return o, err
	}
	l := m.StartLoad(ctx, r.CallsPerSecond)
	defer l.Stop()
	p := m.CanaryPolicy(r, steps)
	applied, err := m.apply(ctx, p)
	if err != nil {
		return o, err
	}
	followed, live, err := m.FollowRollout(ctx, r, p, r.stepsTimeout(steps))
	if err != nil {
		return o, err
	}
	took := time.Since(applied)
	l.Stop()
	var weights []int32
	for i, s := range followed {
		weights = append(weights, s.Weight)
		o.Rows = append(o.Rows, shareRow(fmt.Sprintf("step %d", i+1), s.Weight, s.Candidate, s.Total, r.MinCalls, s.Checks, s.Lasted))
	}
	st := live.Status.Canary
	o.Timings = append(o.Timings, fmt.Sprintf("Promoted %s after the apply (%d steps of %s; the caller made %d calls, %d failed).",
		took.Round(100*time.Millisecond), len(steps), r.Interval, l.OK.Load()+l.Failed.Load(), l.Failed.Load()))
	if st.Phase != v1alpha1.CanaryPromoted {
		o.Failures = append(o.Failures, fmt.Errorf("rollout %s, want Promoted: %s", st.Phase, st.Message))
	}
	if fmt.Sprint(weights) != fmt.Sprint(steps) {
		o.Failures = append(o.Failures, fmt.Errorf("weights in order %v, want %v", weights, steps))
	}
	return o, nil
}

// RollbackBound is how soon after the first step starts a failing candidate must be rolled back: two
// failed checks (two intervals), a scrape, and two seconds for the operator and a busy machine.
func (r Rollout) RollbackBound() time.Duration {
	return 2*r.Interval + r.ScrapeInterval + 2*time.Second
}

// CanaryRollback rolls out a candidate whose instances fail errorRate of Method's calls with INTERNAL:
// it is rolled back within RollbackBound of the first step, with two failed checks, and then serves
// nothing.
func (m *Mesh) CanaryRollback(ctx context.Context, r Rollout, steps []int32, errorRate float64) (CanaryOutcome, error) {
	o := CanaryOutcome{Name: "canary-rollback", Title: fmt.Sprintf("%s failing %.0f%% of %s calls, rolled back; steps %v, %s each",
		r.Candidate, 100*errorRate, m.Method, steps, r.Interval)}
	if err := m.startFromStable(ctx, r); err != nil {
		return o, err
	}
	faults := fmt.Sprintf(`[{"target":%q,"errorRate":%g,"grpcCode":"INTERNAL"}]`, m.Method, errorRate)
	defer func() { _ = m.setCandidateFaults(context.WithoutCancel(ctx), r, "") }()
	if err := m.setCandidateFaults(ctx, r, faults); err != nil {
		return o, err
	}
	l := m.StartLoad(ctx, r.CallsPerSecond)
	defer l.Stop()
	p := m.CanaryPolicy(r, steps)
	if _, err := m.apply(ctx, p); err != nil {
		return o, err
	}
	followed, live, err := m.FollowRollout(ctx, r, p, r.stepsTimeout(steps))
	if err != nil {
		return o, err
	}
	st := live.Status.Canary
	if len(followed) == 0 {
		return o, fmt.Errorf("rollout %s before any step showed in status: %s", st.Phase, st.Message)
	}
	last := followed[len(followed)-1]
	took := last.Started.Add(last.Lasted).Sub(followed[0].Started)
	for i, s := range followed {
		o.Rows = append(o.Rows, shareRow(fmt.Sprintf("step %d", i+1), s.Weight, s.Candidate, s.Total, r.MinCalls, s.Checks, s.Lasted))
	}
	if err := sleep(ctx, r.Settle); err != nil {
		return o, err
	}
	after := 3 * time.Second
	candidate, total, err := m.shareOver(ctx, r.Candidate, after)
	if err != nil {
		return o, err
	}
	l.Stop()
	o.Rows = append(o.Rows, noneRow(fmt.Sprintf("%s after the rollback", after), candidate, total, r.MinCalls))
	bound := r.RollbackBound()
	o.Timings = append(o.Timings, fmt.Sprintf("Rolled back %s after the first step started (bound %s: two intervals, a scrape, 2s). Last check: %s",
		took.Round(100*time.Millisecond), bound, lastCheckMessage(st)))
	if st.Phase != v1alpha1.CanaryRolledBack {
		o.Failures = append(o.Failures, fmt.Errorf("rollout %s, want RolledBack: %s", st.Phase, st.Message))
		return o, nil
	}
	if took > bound {
		o.Failures = append(o.Failures, fmt.Errorf("rolled back %s after the first step started, want within %s", took, bound))
	}
	if st.Weight != 0 || st.FailedChecks != 2 || st.LastCheck == nil || st.LastCheck.Result != v1alpha1.CheckFailed {
		o.Failures = append(o.Failures, fmt.Errorf("status after the rollback: weight %d, %d failed checks, last check %s; want 0, 2, Failed",
			st.Weight, st.FailedChecks, lastCheckResult(st)))
	}
	return o, nil
}

// CanaryHold rolls out the candidate without the caller's load: the rollout holds at the first step
// with InsufficientTraffic for at least holds checks and never promotes. Other clients of the service
// may go on calling it, as long as they make fewer than MinRequests calls per interval at that weight.
func (m *Mesh) CanaryHold(ctx context.Context, r Rollout, steps []int32, holds int32) (CanaryOutcome, error) {
	o := CanaryOutcome{Name: "canary-hold", Title: fmt.Sprintf("no load: held at %d%% with InsufficientTraffic (minRequests %d per %s check), never promoted",
		steps[0], r.MinRequests, r.Interval)}
	if err := m.startFromStable(ctx, r); err != nil {
		return o, err
	}
	p := m.CanaryPolicy(r, steps)
	applied, err := m.apply(ctx, p)
	if err != nil {
		return o, err
	}
	revision := canary.Revision(&p.Spec)
	before, err := m.servedBy(ctx)
	if err != nil {
		return o, err
	}
	var live *v1alpha1.TrafficPolicy
	var notHeld error
	wctx, cancel := context.WithTimeout(ctx, time.Duration(holds+3)*r.Interval+30*time.Second)
	defer cancel()
	err = wait.Until(wctx, 100*time.Millisecond, func(ctx context.Context) error {
		var err error
		if live, err = m.live(ctx, p); err != nil {
			return err
		}
		st := live.Status.Canary
		if st == nil || st.Revision != revision {
			return errors.New("no status of this rollout yet")
		}
		if st.Phase != v1alpha1.CanaryProgressing || st.Weight != steps[0] {
			notHeld = fmt.Errorf("rollout %s at %d%%, want Progressing at %d%%: %s", st.Phase, st.Weight, steps[0], st.Message)
			return nil
		}
		if st.Holds < holds {
			return fmt.Errorf("%d holds so far", st.Holds)
		}
		return nil
	})
	if err != nil {
		return o, err
	}
	after, err := m.servedBy(ctx)
	if err != nil {
		return o, err
	}
	st := live.Status.Canary
	row := CanaryRow{Step: "no load from the caller", Weight: st.Weight, Candidate: after[r.Candidate] - before[r.Candidate],
		Lasted: time.Since(applied), Prediction: Prediction{Expected: fmt.Sprintf("Progressing at %d%%, ≥ %d checks InsufficientTraffic", steps[0], holds)}}
	for subset, n := range after {
		row.Total += n - before[subset]
	}
	row.Checks = []string{fmt.Sprintf("%d× %s", st.Holds, lastCheckResult(st))}
	c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionCanary)
	switch {
	case notHeld != nil:
		row.Err = notHeld
	case c == nil || c.Reason != canary.ReasonInsufficientTraffic:
		row.Err = fmt.Errorf("canary condition %+v, want reason %s", c, canary.ReasonInsufficientTraffic)
	case st.LastCheck == nil || st.LastCheck.Result != v1alpha1.CheckInsufficientTraffic:
		row.Err = fmt.Errorf("last check %s, want InsufficientTraffic", lastCheckResult(st))
	}
	o.Rows = append(o.Rows, row)
	o.Timings = append(o.Timings, fmt.Sprintf("Held at %d%% for %s (%d checks): %s", st.Weight, row.Lasted.Round(100*time.Millisecond), st.Holds, lastCheckMessage(st)))
	return o, nil
}

// AbortBound is how soon after the abort is applied the candidate must have served its last call:
// half a step interval, and at most two seconds.
func (r Rollout) AbortBound() time.Duration { return min(r.Interval/2, 2*time.Second) }

// CanaryAbort rolls out the candidate under load, waits until it serves abortAt percent, and aborts:
// every call is back on the stable subset within AbortBound, long before a step would end, and the
// condition says Aborted.
func (m *Mesh) CanaryAbort(ctx context.Context, r Rollout, steps []int32, abortAt int32) (CanaryOutcome, error) {
	o := CanaryOutcome{Name: "canary-abort", Title: fmt.Sprintf("spec.canary.abort at %d%%: every call back on %s at once", abortAt, r.Stable)}
	if err := m.startFromStable(ctx, r); err != nil {
		return o, err
	}
	l := m.StartLoad(ctx, r.CallsPerSecond)
	defer l.Stop()
	p := m.CanaryPolicy(r, steps)
	if _, err := m.apply(ctx, p); err != nil {
		return o, err
	}
	revision := canary.Revision(&p.Spec)
	wctx, cancel := context.WithTimeout(ctx, r.stepsTimeout(steps))
	defer cancel()
	err := wait.Until(wctx, 50*time.Millisecond, func(ctx context.Context) error {
		live, err := m.live(ctx, p)
		if err != nil {
			return err
		}
		if st := live.Status.Canary; st == nil || st.Revision != revision || st.Weight != abortAt {
			return fmt.Errorf("not at %d%% yet: %+v", abortAt, st)
		}
		return nil
	})
	if err != nil {
		return o, err
	}
	if err := sleep(ctx, r.Settle); err != nil {
		return o, err
	}
	window := 2 * time.Second
	candidate, total, err := m.shareOver(ctx, r.Candidate, window)
	if err != nil {
		return o, err
	}
	o.Rows = append(o.Rows, shareRow(fmt.Sprintf("%s before the abort", window), abortAt, candidate, total, r.MinCalls/2, nil, 0))
	p.Spec.Canary.Abort = true
	aborted, err := m.apply(ctx, p)
	if err != nil {
		return o, err
	}
	// The candidate's last call: poll its counter until it stays put for two seconds.
	lastServed, last := aborted, -1
	for time.Since(lastServed) < 2*time.Second && time.Since(aborted) < 20*time.Second {
		served, err := m.servedBy(ctx)
		if err != nil {
			return o, err
		}
		if served[r.Candidate] != last {
			if last >= 0 {
				lastServed = time.Now()
			}
			last = served[r.Candidate]
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return o, err
		}
	}
	stopped := lastServed.Sub(aborted)
	candidate, total, err = m.shareOver(ctx, r.Candidate, window)
	if err != nil {
		return o, err
	}
	l.Stop()
	o.Rows = append(o.Rows, noneRow(fmt.Sprintf("%s after the abort", window), candidate, total, r.MinCalls/2))
	bound := r.AbortBound()
	o.Timings = append(o.Timings, fmt.Sprintf("Aborted: %s's last call %s after the apply (bound %s).", r.Candidate, stopped.Round(10*time.Millisecond), bound))
	if stopped > bound {
		o.Failures = append(o.Failures, fmt.Errorf("%s served calls until %s after the abort, want at most %s", r.Candidate, stopped, bound))
	}
	live, err := m.live(ctx, p)
	if err != nil {
		return o, err
	}
	if c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionCanary); c == nil || c.Reason != canary.ReasonAborted {
		o.Failures = append(o.Failures, fmt.Errorf("canary condition %+v, want reason %s", c, canary.ReasonAborted))
	}
	return o, nil
}

func (m *Mesh) setCandidateFaults(ctx context.Context, r Rollout, rules string) error {
	var errs []error
	for _, in := range m.Instances {
		if in.Subset == r.Candidate {
			errs = append(errs, m.setFaults(ctx, in, rules))
		}
	}
	return errors.Join(errs...)
}

func lastCheckResult(st *v1alpha1.CanaryStatus) string {
	if st.LastCheck == nil {
		return "none"
	}
	return string(st.LastCheck.Result)
}

func lastCheckMessage(st *v1alpha1.CanaryStatus) string {
	if st.LastCheck == nil {
		return "no check yet"
	}
	return st.LastCheck.Message
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
