package dashboardtest

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// OpenMetrics writes synthetic series, one sample per Step from Start to End, in the OpenMetrics text
// format `promtool tsdb create-blocks-from openmetrics` reads.
type OpenMetrics struct {
	Start, End time.Time
	Step       time.Duration
	series     map[string][]sampled // by metric name, so each name's samples are contiguous
}

type sampled struct {
	labels map[string]string
	value  func(t float64) float64 // t: seconds since Start
}

func (o *OpenMetrics) add(name string, labels map[string]string, value func(float64) float64) {
	if o.series == nil {
		o.series = map[string][]sampled{}
	}
	o.series[name] = append(o.series[name], sampled{labels: maps.Clone(labels), value: value})
}

// Counter adds a counter growing by perSecond.
func (o *OpenMetrics) Counter(name string, labels map[string]string, perSecond float64) {
	o.add(name, labels, func(t float64) float64 { return perSecond * t })
}

// Steps adds a counter that grows by one every period: events such as breaker transitions or writes.
func (o *OpenMetrics) Steps(name string, labels map[string]string, period time.Duration) {
	o.add(name, labels, func(t float64) float64 { return math.Floor(t / period.Seconds()) })
}

// Gauge adds a gauge with value f(t), t in seconds since Start.
func (o *OpenMetrics) Gauge(name string, labels map[string]string, f func(t float64) float64) {
	o.add(name, labels, f)
}

// Histogram adds a classic histogram observing perSecond values, cumulative[i] of them at most
// bounds[i] (cumulative shares, ending at 1 for +Inf), each the size of its bucket's bound. Bounds are
// written as Prometheus 3 stores them (250 as "250.0").
func (o *OpenMetrics) Histogram(name string, labels map[string]string, perSecond float64, bounds, cumulative []float64) {
	if len(bounds) != len(cumulative) {
		panic("histogram " + name + ": bounds and shares differ in length")
	}
	for i, b := range bounds {
		l := maps.Clone(labels)
		l["le"] = LeLabel(b)
		share := cumulative[i]
		o.Counter(name+"_bucket", l, perSecond*share)
	}
	inf := maps.Clone(labels)
	inf["le"] = "+Inf"
	o.Counter(name+"_bucket", inf, perSecond)
	o.Counter(name+"_count", labels, perSecond)
	mean := 0.0
	prev := 0.0
	for i, b := range bounds {
		mean += (cumulative[i] - prev) * b
		prev = cumulative[i]
	}
	o.Counter(name+"_sum", labels, perSecond*mean)
}

// LeLabel spells a bucket bound the way Prometheus 3 normalises it: always with a decimal point.
func LeLabel(b float64) string {
	s := strconv.FormatFloat(b, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// Series returns how many series o holds.
func (o *OpenMetrics) Series() int {
	n := 0
	for _, s := range o.series {
		n += len(s)
	}
	return n
}

// Bytes renders o: every series of a name together, each series' samples in time order, then # EOF.
func (o *OpenMetrics) Bytes() []byte {
	var b bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(o.series)) {
		for _, s := range o.series[name] {
			ls := labelString(s.labels)
			for t := o.Start; !t.After(o.End); t = t.Add(o.Step) {
				fmt.Fprintf(&b, "%s%s %s %d\n", name, ls,
					strconv.FormatFloat(s.value(t.Sub(o.Start).Seconds()), 'g', -1, 64), t.Unix())
			}
		}
	}
	b.WriteString("# EOF\n")
	return b.Bytes()
}

func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+strconv.Quote(labels[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}
