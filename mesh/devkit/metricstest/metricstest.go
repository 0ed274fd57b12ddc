// Package metricstest reads metric values in tests, from a registry or from a process's /metrics
// endpoint, so tests assert on numbers rather than on the presence of a name.
package metricstest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a gathered set of metric families by name.
type Families map[string]*dto.MetricFamily

// Gather collects g.
func Gather(g prometheus.Gatherer) (Families, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := Families{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out, nil
}

// Scrape fetches and parses a Prometheus text endpoint such as http://127.0.0.1:9031/metrics.
func Scrape(ctx context.Context, url string) (Families, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads the Prometheus text format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return Families(mfs), nil
}

// Value is the sum over the series of name whose labels include labels: counters and gauges by
// value, histograms by sample count. A missing family or series is 0.
func (f Families) Value(name string, labels map[string]string) float64 {
	mf, ok := f[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// Bucket is the cumulative count of the histogram series matching labels at upper bound le.
func (f Families) Bucket(name string, labels map[string]string, le float64) float64 {
	mf, ok := f[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		if !matches(m, labels) || m.Histogram == nil {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if b.GetUpperBound() == le {
				sum += float64(b.GetCumulativeCount())
			}
		}
	}
	return sum
}

// Series lists the label sets of name, each rendered as {k="v",...} sorted, with its Value.
func (f Families) Series(name string) map[string]float64 {
	out := map[string]float64{}
	mf, ok := f[name]
	if !ok {
		return out
	}
	for _, m := range mf.GetMetric() {
		var parts []string
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			parts = append(parts, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			labels[lp.GetName()] = lp.GetValue()
		}
		sort.Strings(parts)
		out["{"+strings.Join(parts, ",")+"}"] = Families{name: &dto.MetricFamily{Metric: []*dto.Metric{m}}}.Value(name, labels)
	}
	return out
}

// Exemplars returns the exemplar labels found on the histogram buckets of name's series matching
// labels.
func (f Families) Exemplars(name string, labels map[string]string) []map[string]string {
	var out []map[string]string
	mf, ok := f[name]
	if !ok {
		return nil
	}
	for _, m := range mf.GetMetric() {
		if !matches(m, labels) || m.Histogram == nil {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if ex := b.GetExemplar(); ex != nil {
				l := map[string]string{}
				for _, lp := range ex.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				out = append(out, l)
			}
		}
	}
	return out
}

func matches(m *dto.Metric, labels map[string]string) bool {
	have := map[string]string{}
	for _, lp := range m.GetLabel() {
		have[lp.GetName()] = lp.GetValue()
	}
	for k, v := range labels {
		if have[k] != v {
			return false
		}
	}
	return true
}
