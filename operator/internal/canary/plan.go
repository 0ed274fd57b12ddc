// Package canary runs a TrafficPolicy's progressive rollout: the plan a spec.canary describes (its steps,
// the thresholds it derives from the service's SLO, how long promotion takes), the state machine that
// moves the candidate from step to step on checks of live metrics, and the Prometheus queries those
// checks run. The state machine is pure — the clock and the metrics come in as arguments — so the
// operator, `meshplane render --explain` and the tests share it.
package canary

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"meshplane.dev/operator/api/v1alpha1"
)

// Plan is what a valid spec.canary will do, in numbers.
type Plan struct {
	Stable, Candidate string
	// Steps are the candidate's weights in percent.
	Steps []int32
	// Interval is the time at each weight before its check, and the window each check measures.
	Interval time.Duration
	// Objective is the SLO as a ratio, e.g. 0.999; MaxBurnRate as written.
	Objective, MaxBurnRate float64
	// MaxErrorRatio is the largest error ratio of the candidate a check passes: MaxBurnRate × (1 −
	// Objective).
	MaxErrorRatio float64
	// StableMargin is how far the candidate's error ratio may exceed the stable's, as a ratio; negative
	// when the two are not compared.
	StableMargin float64
	// LatencyQuantile is the quantile checked, 0 when latency is not; MaxLatency its bound.
	LatencyQuantile float64
	MaxLatency      time.Duration
	// MinRequests is the fewest calls of the candidate a check judges.
	MinRequests int64
	// MaxHolds is how many holds in a row a step may take before they count as failed checks; 0 means
	// holds never fail.
	MaxHolds int32
	// FailureThreshold is how many failed checks roll the rollout back.
	FailureThreshold int32
	// ScrapeInterval is Prometheus' scrape interval the spec declares.
	ScrapeInterval time.Duration
}

// NewPlan returns the plan of c, which must be valid (v1alpha1's Validate accepts it).
func NewPlan(c *v1alpha1.Canary) Plan {
	a := &c.Analysis
	objective, _ := a.Objective.Float()
	burn, _ := a.MaxBurnRate.Float()
	interval, _ := c.Interval.Parse()
	p := Plan{
		Stable: c.Stable, Candidate: c.Candidate, Steps: slices.Clone(c.Steps), Interval: interval,
		// Rounded, so decimal inputs meet the limits they write: 10 × (100 − 99.9) is 1%, not 0.99999…%.
		Objective: objective / 100, MaxBurnRate: burn, MaxErrorRatio: round(burn*(100-objective), 8) / 100,
		StableMargin: -1, FailureThreshold: a.FailureThresholdOrDefault(), ScrapeInterval: a.ScrapeIntervalOrDefault(),
	}
	if a.MinRequests != nil {
		p.MinRequests = int64(*a.MinRequests)
	}
	if a.StableMargin != nil {
		m, _ := a.StableMargin.Float()
		p.StableMargin = m / 100
	}
	if a.Latency != nil {
		p.LatencyQuantile, _ = a.Latency.Quantile.Float()
		p.MaxLatency, _ = a.Latency.Max.Parse()
	}
	if a.MaxHolds != nil {
		p.MaxHolds = *a.MaxHolds
	}
	return p
}

// Fastest is the time from the first step to promotion when every check passes at once: one interval
// per step.
func (p Plan) Fastest() time.Duration { return time.Duration(len(p.Steps)) * p.Interval }

// WorstCase is the longest a rollout can take and still be promoted: every step holds MaxHolds times
// for too little traffic before its check passes, and FailureThreshold − 1 checks fail without rolling
// back. Unbounded (false) when holds never fail: a step without traffic holds until traffic comes.
// Either way a Prometheus that does not answer holds the rollout for as long as it does not.
func (p Plan) WorstCase() (time.Duration, bool) {
	if p.MaxHolds == 0 {
		return 0, false
	}
	checks := int64(len(p.Steps))*int64(1+p.MaxHolds) + int64(p.FailureThreshold-1)
	return time.Duration(checks) * p.Interval, true
}

// Thresholds are the limits each check applies, as status reports them.
func (p Plan) Thresholds() v1alpha1.CanaryThresholds {
	t := v1alpha1.CanaryThresholds{MinSuccessRate: percent(1-p.MaxErrorRatio, 4), MinRequests: int32(p.MinRequests)}
	if p.StableMargin >= 0 {
		t.MaxErrorRatioOverStable = strconv.FormatFloat(round(p.StableMargin*100, 4), 'f', -1, 64) + "pp"
	}
	if p.LatencyQuantile > 0 {
		t.MaxLatency = fmt.Sprintf("%s ≤ %s", quantileName(p.LatencyQuantile), p.MaxLatency)
	}
	return t
}

// Describe says the plan in words, one line per aspect, for `meshplane render --explain`.
func (p Plan) Describe() []string {
	steps := make([]string, len(p.Steps))
	for i, w := range p.Steps {
		steps[i] = fmt.Sprintf("%d%%", w)
	}
	lines := []string{
		fmt.Sprintf("steps: %s of calls to %s (the rest to %s), %s each", strings.Join(steps, " → "), p.Candidate, p.Stable, p.Interval),
		fmt.Sprintf("pass: success rate ≥ %s over each step (objective %s, max burn rate %s: error ratio ≤ %s)",
			percent(1-p.MaxErrorRatio, 4), percent(p.Objective, 4), strconv.FormatFloat(p.MaxBurnRate, 'f', -1, 64), percent(p.MaxErrorRatio, 4)),
	}
	if p.StableMargin >= 0 {
		lines = append(lines, fmt.Sprintf("pass: error ratio at most %s above %s's over the same window",
			strconv.FormatFloat(round(p.StableMargin*100, 4), 'f', -1, 64)+"pp", p.Stable))
	}
	if p.LatencyQuantile > 0 {
		lines = append(lines, fmt.Sprintf("pass: %s latency ≤ %s", quantileName(p.LatencyQuantile), p.MaxLatency))
	}
	hold := "holds until traffic comes (maxHolds unset)"
	if p.MaxHolds > 0 {
		hold = fmt.Sprintf("holds; after %d holds in a row each further one counts as a failed check", p.MaxHolds)
	}
	lines = append(lines,
		fmt.Sprintf("hold: a check of fewer than %d calls to %s, or without metrics, %s", p.MinRequests, p.Candidate, hold),
		fmt.Sprintf("roll back: at %s, at once", count(int(p.FailureThreshold), "failed check")),
	)
	worst := "unbounded: a step without traffic holds until traffic comes"
	if w, ok := p.WorstCase(); ok {
		worst = w.String()
	}
	lines = append(lines, fmt.Sprintf("promotion: %s at the fastest; worst case %s (Prometheus outages hold longer)", p.Fastest(), worst))
	return lines
}

// Revision identifies what a policy's canary rolls out: spec.canary (paused aside, which pauses a
// rollout rather than changing it) and the labels of its two subsets. A rollout starts over when it
// changes, so a rolled-back candidate stays rolled back until the team changes something about it.
func Revision(spec *v1alpha1.TrafficPolicySpec) string {
	c := *spec.Canary
	c.Paused = false
	labels := func(name string) map[string]v1alpha1.LabelValue {
		for _, s := range spec.Split {
			if s.Subset == name {
				return s.Labels
			}
		}
		return nil
	}
	b, err := json.Marshal(struct {
		Canary                  v1alpha1.Canary
		StableLabels, Candidate map[string]v1alpha1.LabelValue
	}{c, labels(c.Stable), labels(c.Candidate)})
	if err != nil {
		panic(fmt.Sprintf("encode canary revision: %v", err)) // plain structs of strings and numbers always encode
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// percent writes a ratio as a percentage with up to digits decimals: 0.999 → "99.9%".
func percent(ratio float64, digits int) string {
	return strconv.FormatFloat(round(ratio*100, digits), 'f', -1, 64) + "%"
}

func round(v float64, digits int) float64 {
	scale := math.Pow(10, float64(digits))
	return math.Round(v*scale) / scale
}

// quantileName writes 0.99 as p99 and 0.999 as p99.9.
func quantileName(q float64) string {
	return "p" + strconv.FormatFloat(round(q*100, 2), 'f', -1, 64)
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
