// Package promql assembles the PromQL expressions Meshplane's dashboards and rules share, so a label or a
// window is spelled once and every query has the same shape: rates over a window, aggregations by
// explicit labels, quoted values. It produces text; the module's tests parse every result with
// Prometheus's own parser.
package promql

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// RateInterval is Grafana's rate window: at least four scrape intervals and never shorter than the panel
// step, so a panel does not show "No data" when Prometheus scrapes less often than the default step.
const RateInterval = "$__rate_interval"

// Matcher is one label matcher of a selector.
type Matcher struct {
	Label string
	Op    string // =, !=, =~ or !~
	Value string
}

// Eq matches a label equal to value.
func Eq(label, value string) Matcher { return Matcher{label, "=", value} }

// Neq matches a label not equal to value.
func Neq(label, value string) Matcher { return Matcher{label, "!=", value} }

// Re matches a label against an anchored RE2 regular expression.
func Re(label, value string) Matcher { return Matcher{label, "=~", value} }

// Nre matches a label not matching an anchored RE2 regular expression.
func Nre(label, value string) Matcher { return Matcher{label, "!~", value} }

// Le matches the classic-histogram bucket with upper bound v. Prometheus 3 normalises bucket bounds to
// floats on ingestion ("250" becomes "250.0") while older data and other writers keep "250", so whole
// numbers match both spellings.
func Le(v float64) Matcher {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	re := regexp.QuoteMeta(s)
	if !strings.Contains(s, ".") {
		re += `(\.0)?`
	}
	return Re("le", re)
}

func (m Matcher) String() string { return m.Label + m.Op + strconv.Quote(m.Value) }

// Selector is a metric name with label matchers.
type Selector struct {
	Metric   string
	Matchers []Matcher
}

// Sel returns a selector for metric with matchers.
func Sel(metric string, ms ...Matcher) Selector { return Selector{Metric: metric, Matchers: ms} }

// With returns a copy of s with more matchers; s is not changed.
func (s Selector) With(ms ...Matcher) Selector {
	out := Selector{Metric: s.Metric, Matchers: make([]Matcher, 0, len(s.Matchers)+len(ms))}
	out.Matchers = append(append(out.Matchers, s.Matchers...), ms...)
	return out
}

func (s Selector) String() string {
	if len(s.Matchers) == 0 {
		return s.Metric
	}
	parts := make([]string, len(s.Matchers))
	for i, m := range s.Matchers {
		parts[i] = m.String()
	}
	return s.Metric + "{" + strings.Join(parts, ", ") + "}"
}

// Rate is the per-second rate of the counter s over window.
func Rate(s Selector, window string) string { return "rate(" + s.String() + "[" + window + "])" }

// Increase is the increase of the counter s over window.
func Increase(s Selector, window string) string {
	return "increase(" + s.String() + "[" + window + "])"
}

// Sum aggregates expr with sum, keeping the by labels (none: one series).
func Sum(expr string, by ...string) string { return aggregate("sum", expr, by) }

// Max aggregates expr with max, keeping the by labels.
func Max(expr string, by ...string) string { return aggregate("max", expr, by) }

func aggregate(op, expr string, by []string) string {
	if len(by) == 0 {
		return op + "(" + expr + ")"
	}
	return op + " by (" + strings.Join(by, ", ") + ") (" + expr + ")"
}

// SumRate is sum by (by) (rate(s[window])), the usual shape of a request-rate query.
func SumRate(s Selector, window string, by ...string) string { return Sum(Rate(s, window), by...) }

// HistogramQuantile is the q-quantile of the classic histogram whose _bucket series buckets selects,
// over window, per by-label set.
func HistogramQuantile(q float64, buckets Selector, window string, by ...string) string {
	return fmt.Sprintf("histogram_quantile(%s, %s)", strconv.FormatFloat(q, 'f', -1, 64),
		SumRate(buckets, window, append([]string{"le"}, by...)...))
}

// Div divides two expressions, each parenthesised, so callers need not think about precedence.
func Div(num, den string) string { return "(" + num + ") / (" + den + ")" }
