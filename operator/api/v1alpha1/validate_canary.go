package v1alpha1

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The rules of spec.canary, mirroring the CRD's markers and CEL rules one for one, as validate.go does
// for the rest of the spec.

// Limits and defaults of spec.canary, as the CRD declares them.
const (
	maxCanarySteps  = 10
	maxMinRequests  = 1_000_000_000
	maxHoldsLimit   = 1000
	maxFailureLimit = 10
	// DefaultFailureThreshold is the failed checks that roll a rollout back when failureThreshold is unset.
	DefaultFailureThreshold = 2
	// DefaultScrapeInterval is Prometheus' scrape interval of the service when scrapeInterval is unset.
	DefaultScrapeInterval = 15 * time.Second
)

var (
	decimalPattern  = regexp.MustCompile(`^[0-9]{1,3}([.][0-9]{1,4})?$`)
	quantilePattern = regexp.MustCompile(`^0[.][0-9]{1,4}$`)
)

// Float returns the number d denotes, and false when it is not written as the API requires.
func (d Decimal) Float() (float64, bool) {
	if !decimalPattern.MatchString(string(d)) {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(d), 64)
	return v, err == nil
}

// Float returns the quantile q denotes, and false when it is not written as the API requires.
func (q Quantile) Float() (float64, bool) {
	if !quantilePattern.MatchString(string(q)) {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(q), 64)
	return v, err == nil
}

// FailureThresholdOrDefault is failureThreshold, or DefaultFailureThreshold when it is unset.
func (a *CanaryAnalysis) FailureThresholdOrDefault() int32 {
	if a.FailureThreshold == nil {
		return DefaultFailureThreshold
	}
	return *a.FailureThreshold
}

// ScrapeIntervalOrDefault is scrapeInterval, or DefaultScrapeInterval when it is unset or malformed.
func (a *CanaryAnalysis) ScrapeIntervalOrDefault() time.Duration {
	if a.ScrapeInterval != nil {
		if d, ok := a.ScrapeInterval.wellFormed(); ok {
			return d
		}
	}
	return DefaultScrapeInterval
}

// validateCanary checks spec.canary and how it refers to spec.split; specPath is the spec's path.
func validateCanary(s *TrafficPolicySpec, specPath *field.Path) field.ErrorList {
	c, path := s.Canary, specPath.Child("canary")
	var errs field.ErrorList
	errs = append(errs, validateSubsetName(c.Stable, path.Child("stable"), "the subset of spec.split that serves the traffic today")...)
	errs = append(errs, validateSubsetName(c.Candidate, path.Child("candidate"), "the subset of spec.split the rollout moves traffic to")...)
	if c.Stable != "" && c.Stable == c.Candidate {
		errs = append(errs, field.Invalid(path.Child("candidate"), c.Candidate, "must differ from stable: a rollout moves traffic from one subset to another"))
	}
	errs = append(errs, validateSteps(c.Steps, path.Child("steps"))...)

	interval := path.Child("interval")
	if c.Interval == "" {
		errs = append(errs, field.Required(interval, "how long the candidate stays at a weight before its check, e.g. 1m"))
	} else {
		errs = append(errs, c.Interval.validate(interval)...)
	}
	errs = append(errs, c.Analysis.validate(path.Child("analysis"))...)
	scrape := c.Analysis.ScrapeInterval
	scrapeOK := true
	if scrape != nil {
		_, scrapeOK = scrape.wellFormed()
	}
	if d, ok := c.Interval.wellFormed(); ok && scrapeOK {
		if minimum := c.Analysis.ScrapeIntervalOrDefault(); d < 2*minimum {
			shown := "15s"
			if scrape != nil {
				shown = string(*scrape)
			}
			errs = append(errs, field.Invalid(interval, string(c.Interval), fmt.Sprintf(
				"%s is shorter than twice analysis.scrapeInterval (%s): a check needs two scrapes within the step to measure a rate", c.Interval, shown)))
		}
	}

	// How the canary refers to spec.split.
	if s.Split == nil {
		return append(errs, field.Required(specPath.Child("split"), "spec.canary needs spec.split, which defines its stable and candidate subsets"))
	}
	for _, ref := range []struct {
		name, field string
	}{{c.Stable, "stable"}, {c.Candidate, "candidate"}} {
		if !slices.ContainsFunc(s.Split, func(sub Subset) bool { return sub.Subset == ref.name }) {
			errs = append(errs, field.Invalid(path.Child(ref.field), ref.name, ref.name+" is not a subset of spec.split"))
		}
	}
	weightsValid := !slices.ContainsFunc(s.Split, func(sub Subset) bool {
		return sub.Weight == nil || *sub.Weight < 0 || *sub.Weight > 100
	})
	if i := slices.IndexFunc(s.Split, func(sub Subset) bool { return sub.Subset == c.Stable }); weightsValid && i >= 0 && *s.Split[i].Weight != 100 {
		errs = append(errs, field.Invalid(specPath.Child("split"), *s.Split[i].Weight, fmt.Sprintf(
			"the stable subset %s has weight %d: while spec.canary is set it must have 100 (every other subset 0), where a rollback or an abort returns; the canary moves the weights",
			c.Stable, *s.Split[i].Weight)))
	}
	return errs
}

func validateSubsetName(name string, path *field.Path, what string) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(path, what)}
	}
	var errs field.ErrorList
	for _, msg := range content.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(path, name, msg))
	}
	return errs
}

func validateSteps(steps []int32, path *field.Path) field.ErrorList {
	switch {
	case steps == nil:
		return field.ErrorList{field.Required(path, "the candidate's weights in order, ending at 100, e.g. [10, 25, 50, 100]")}
	case len(steps) == 0:
		return field.ErrorList{field.Required(path, "list at least one weight, ending at 100")}
	}
	var errs field.ErrorList
	if len(steps) > maxCanarySteps {
		errs = append(errs, field.TooMany(path, len(steps), maxCanarySteps))
	}
	for i, w := range steps {
		if w < 1 || w > 100 {
			errs = append(errs, field.Invalid(path.Index(i), w, "must be between 1 and 100"))
		}
	}
	for i := 1; i < len(steps); i++ {
		if steps[i] <= steps[i-1] {
			errs = append(errs, field.Invalid(path, steps, "must increase strictly, e.g. [10, 25, 50, 100]"))
			break
		}
	}
	if last := steps[len(steps)-1]; last != 100 {
		errs = append(errs, field.Invalid(path, steps, fmt.Sprintf("must end at 100 (the candidate serves every call once promoted), not %d", last)))
	}
	return errs
}

const decimalMessage = "must be a number such as 99.9: up to three digits, then up to four decimals"

func (d Decimal) validate(path *field.Path) field.ErrorList {
	if _, ok := d.Float(); !ok {
		return field.ErrorList{field.Invalid(path, string(d), decimalMessage)}
	}
	return nil
}

func (a *CanaryAnalysis) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	objective, burn := path.Child("objective"), path.Child("maxBurnRate")
	o, oOK := a.Objective.Float()
	switch {
	case a.Objective == "":
		errs = append(errs, field.Required(objective, "the service's SLO in percent, e.g. 99.9"))
	case !oOK:
		errs = append(errs, a.Objective.validate(objective)...)
	case o <= 0 || o >= 100:
		oOK = false
		errs = append(errs, field.Invalid(objective, string(a.Objective), fmt.Sprintf("%s is not a percentage strictly between 0 and 100, such as 99.9", a.Objective)))
	}
	b, bOK := a.MaxBurnRate.Float()
	switch {
	case a.MaxBurnRate == "":
		errs = append(errs, field.Required(burn, "how fast the candidate may burn the error budget, e.g. 10"))
	case !bOK:
		errs = append(errs, a.MaxBurnRate.validate(burn)...)
	case b <= 0:
		bOK = false
		errs = append(errs, field.Invalid(burn, string(a.MaxBurnRate), "must be above 0: it is how many times faster than the SLO allows the candidate may fail"))
	}
	if oOK && bOK && b*(100-o) >= 100 {
		errs = append(errs, field.Invalid(burn, string(a.MaxBurnRate), fmt.Sprintf(
			"maxBurnRate %s times the error budget of objective %s allows every call to fail: the check would pass anything; lower it", a.MaxBurnRate, a.Objective)))
	}
	if a.StableMargin != nil {
		margin := path.Child("stableMargin")
		if m, ok := a.StableMargin.Float(); !ok {
			errs = append(errs, a.StableMargin.validate(margin)...)
		} else if m >= 100 {
			errs = append(errs, field.Invalid(margin, string(*a.StableMargin), fmt.Sprintf("%s is not a percentage below 100, such as 0.5", *a.StableMargin)))
		}
	}
	if l := a.Latency; l != nil {
		lp := path.Child("latency")
		q := lp.Child("quantile")
		switch v, ok := l.Quantile.Float(); {
		case l.Quantile == "":
			errs = append(errs, field.Required(q, "the quantile checked, e.g. 0.99"))
		case !ok:
			errs = append(errs, field.Invalid(q, string(l.Quantile), "must be a quantile such as 0.99: 0. then up to four digits"))
		case v <= 0:
			errs = append(errs, field.Invalid(q, string(l.Quantile), "must be above 0, e.g. 0.99"))
		}
		if l.Max == "" {
			errs = append(errs, field.Required(lp.Child("max"), "the longest the quantile may be, e.g. 300ms"))
		} else {
			errs = append(errs, l.Max.validate(lp.Child("max"))...)
		}
	}
	minRequests := path.Child("minRequests")
	switch {
	case a.MinRequests == nil:
		errs = append(errs, field.Required(minRequests, "the fewest calls a check needs to judge the candidate, e.g. 100"))
	case *a.MinRequests < 1 || *a.MinRequests > maxMinRequests:
		errs = append(errs, field.Invalid(minRequests, *a.MinRequests, fmt.Sprintf("must be between 1 and %d", maxMinRequests)))
	}
	if a.MaxHolds != nil && (*a.MaxHolds < 1 || *a.MaxHolds > maxHoldsLimit) {
		errs = append(errs, field.Invalid(path.Child("maxHolds"), *a.MaxHolds, fmt.Sprintf("must be between 1 and %d; leave it unset to hold until traffic comes", maxHoldsLimit)))
	}
	if a.FailureThreshold != nil && (*a.FailureThreshold < 1 || *a.FailureThreshold > maxFailureLimit) {
		errs = append(errs, field.Invalid(path.Child("failureThreshold"), *a.FailureThreshold, fmt.Sprintf("must be between 1 and %d", maxFailureLimit)))
	}
	if a.ScrapeInterval != nil {
		errs = append(errs, a.ScrapeInterval.validate(path.Child("scrapeInterval"))...)
	}
	return errs
}
