package promql_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/dashboards/promql"
)

func TestBuilders(t *testing.T) {
	reqs := promql.Sel("istio_requests_total", promql.Re("reporter", "destination|waypoint"))
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"bare selector", promql.Sel("up").String(), `up`},
		{"matchers quoted", promql.Sel("m", promql.Eq("a", `x"y`), promql.Neq("b", "c"), promql.Nre("d", `\d`)).String(),
			`m{a="x\"y", b!="c", d!~"\\d"}`},
		{"with copies", reqs.With(promql.Eq("response_code", "200")).String(),
			`istio_requests_total{reporter=~"destination|waypoint", response_code="200"}`},
		{"with leaves the original alone", reqs.String(), `istio_requests_total{reporter=~"destination|waypoint"}`},
		{"rate", promql.Rate(reqs, promql.RateInterval), `rate(istio_requests_total{reporter=~"destination|waypoint"}[$__rate_interval])`},
		{"sum without by", promql.Sum("x"), `sum(x)`},
		{"sum by", promql.SumRate(promql.Sel("c"), "5m", "a", "b"), `sum by (a, b) (rate(c[5m]))`},
		{"max by", promql.Max("x", "a"), `max by (a) (x)`},
		{"increase", promql.Increase(promql.Sel("c"), "1h"), `increase(c[1h])`},
		{"quantile adds le", promql.HistogramQuantile(0.99, promql.Sel("h_bucket"), "5m", "svc"),
			`histogram_quantile(0.99, sum by (le, svc) (rate(h_bucket[5m])))`},
		{"div parenthesises", promql.Div("a + b", "c"), `(a + b) / (c)`},
		{"le whole number matches both spellings", promql.Sel("h", promql.Le(250)).String(), `h{le=~"250(\\.0)?"}`},
		{"le fraction", promql.Sel("h", promql.Le(0.25)).String(), `h{le=~"0\\.25"}`},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s: got %s, want %s", tt.name, tt.got, tt.want)
		}
	}
}
