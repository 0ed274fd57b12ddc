package dashboards_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"meshplane.dev/dashboards"
	"meshplane.dev/dashboards/internal/dashboardtest"
	"meshplane.dev/dashboards/rules"
	"meshplane.dev/dashboards/signal"
	"meshplane.dev/dashboards/slo"
)

// singles are the test values of single-value variables (the Service dashboard's exact-match ones).
var singles = map[string]string{"namespace": "shop", "service": "orders"}

// TestRoundTrip decodes every generated dashboard strictly into the Grafana Foundation SDK's types and
// encodes it again: nothing may be unknown to the schema, missing, or lost on the way.
func TestRoundTrip(t *testing.T) {
	for _, f := range dashboardtest.Load(t) {
		again, err := json.Marshal(f.Dashboard)
		if err != nil {
			t.Fatal(err)
		}
		var got, want any
		if err := json.Unmarshal(again, &got); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(f.JSON, &want); err != nil {
			t.Fatal(err)
		}
		restoreEmptyOptions(want, got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s changed through the SDK's types (-generated +round trip):\n%s", f.Path, diff)
		}
	}
}

// restoreEmptyOptions puts back into the round-tripped dashboard got the empty options lists of the
// generated one, want: the SDK's types omit an empty list, and Grafana (so dashboards.JSON) writes
// "options": [] for query and datasource variables. Only an empty list the SDK dropped is restored.
func restoreEmptyOptions(want, got any) {
	variables := func(d any) []any {
		dash, _ := d.(map[string]any)
		templating, _ := dash["templating"].(map[string]any)
		list, _ := templating["list"].([]any)
		return list
	}
	gotVars := variables(got)
	for i, w := range variables(want) {
		wantVar, _ := w.(map[string]any)
		if options, ok := wantVar["options"].([]any); !ok || len(options) > 0 || i >= len(gotVars) {
			continue
		}
		if gotVar, ok := gotVars[i].(map[string]any); ok {
			if _, has := gotVar["options"]; !has {
				gotVar["options"] = []any{}
			}
		}
	}
}

// TestDashboards checks what makes a dashboard usable in an incident: stable UIDs, unique panel ids and
// refIds, a description and a unit on every panel, queries bound to the datasource variables, rates over
// $__rate_interval, and links that lead to a dashboard that exists.
func TestDashboards(t *testing.T) {
	files := dashboardtest.Load(t)
	uids := map[string]bool{}
	for _, f := range files {
		uids[*f.Dashboard.Uid] = true
	}
	wantUIDs := []string{dashboards.UIDConsulSync, dashboards.UIDLogs, dashboards.UIDMesh, dashboards.UIDOperator,
		dashboards.UIDRED, dashboards.UIDResilience, dashboards.UIDService, dashboards.UIDSLO}
	var gotUIDs []string
	for uid := range uids {
		gotUIDs = append(gotUIDs, uid)
	}
	slices.Sort(gotUIDs)
	if diff := cmp.Diff(wantUIDs, gotUIDs); diff != "" {
		t.Errorf("dashboard UIDs changed; links and bookmarks break (-want +got):\n%s", diff)
	}

	panels, queries := 0, 0
	for _, f := range files {
		d := f.Dashboard
		uid := *d.Uid
		if !slices.Contains(d.Tags, dashboards.Tag) {
			t.Errorf("%s: tags %v lack %q, so the dashboards menu does not list it", uid, d.Tags, dashboards.Tag)
		}
		for _, l := range d.Links {
			checkLink(t, uids, uid, "dashboard link", l)
		}
		ids := map[uint32]string{}
		for _, pr := range d.Panels {
			var id *uint32
			var title string
			if pr.RowPanel != nil {
				id, title = &pr.RowPanel.Id, deref(pr.RowPanel.Title)
			} else {
				id, title = pr.Panel.Id, deref(pr.Panel.Title)
			}
			if id == nil || *id == 0 {
				t.Errorf("%s: panel %q has no id", uid, title)
				continue
			}
			if other, dup := ids[*id]; dup {
				t.Errorf("%s: panels %q and %q share id %d", uid, other, title, *id)
			}
			ids[*id] = title
			p := pr.Panel
			if p == nil {
				continue
			}
			panels++
			where := fmt.Sprintf("%s panel %d %q", uid, *id, title)
			if deref(p.Description) == "" {
				t.Errorf("%s: no description", where)
			}
			if p.Type != "logs" && (p.FieldConfig == nil || deref(p.FieldConfig.Defaults.Unit) == "") {
				t.Errorf("%s: no unit", where)
			}
			ds := p.Datasource
			if ds == nil || (deref(ds.Uid) != "${datasource}" && deref(ds.Uid) != "${loki}") {
				t.Errorf("%s: datasource %v is not a datasource variable", where, ds)
			}
			for _, l := range p.Links {
				checkLink(t, uids, where, "panel link", l)
			}
			if p.FieldConfig != nil {
				for _, l := range p.FieldConfig.Defaults.Links {
					checkLink(t, uids, where, "data link", l)
				}
			}
		}
		targets, err := dashboardtest.Targets(d)
		if err != nil {
			t.Fatal(err)
		}
		refs := map[uint32][]string{}
		for _, tg := range targets {
			queries++
			refs[tg.PanelID] = append(refs[tg.PanelID], tg.RefID)
			checkWindows(t, tg)
		}
		for id, got := range refs {
			want := make([]string, len(got))
			for i := range want {
				want[i] = string(rune('A' + i))
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s panel %d: refIds %v, want %v", uid, id, got, want)
			}
		}
	}
	t.Logf("%d dashboards, %d panels, %d queries", len(files), panels, queries)
}

var dashboardPath = regexp.MustCompile(`^/d/([^/?]+)`)

func checkLink(t *testing.T, uids map[string]bool, where, kind string, l dashboard.DashboardLink) {
	t.Helper()
	if l.Type == dashboard.DashboardLinkTypeDashboards {
		if !slices.Contains(l.Tags, dashboards.Tag) {
			t.Errorf("%s: %s %q lists dashboards by tags %v, want %q", where, kind, l.Title, l.Tags, dashboards.Tag)
		}
		return
	}
	url := deref(l.Url)
	m := dashboardPath.FindStringSubmatch(url)
	if m == nil {
		t.Errorf("%s: %s %q to %q is not a /d/<uid> link (path links break across Grafana versions)", where, kind, l.Title, url)
		return
	}
	if !uids[m[1]] {
		t.Errorf("%s: %s %q leads to unknown dashboard %q", where, kind, l.Title, m[1])
	}
}

// window finds range selectors: a duration or a variable in brackets (not a regex character class).
var window = regexp.MustCompile(`\[(\$__\w+|\d+[a-z]+)\]`)

// checkWindows wants every PromQL range to be $__rate_interval ($__range for "over the time range"
// totals) and every LogQL range $__auto: a fixed window shows "No data" when the scrape interval or the
// step is longer, and hides detail when it is shorter.
func checkWindows(t *testing.T, tg dashboardtest.Target) {
	t.Helper()
	allowed := []string{"$__rate_interval", "$__range"}
	if tg.Datasource == "loki" {
		allowed = []string{"$__auto"}
	}
	for _, m := range window.FindAllStringSubmatch(tg.Expr, -1) {
		if !slices.Contains(allowed, m[1]) {
			t.Errorf("%s: range [%s] in %s, want one of %v", tg, m[1], tg.Expr, allowed)
		}
	}
	if strings.Contains(tg.Expr, "irate(") {
		t.Errorf("%s: irate shows the last two samples only; use rate: %s", tg, tg.Expr)
	}
}

// TestPromQL parses every Prometheus query of every dashboard (variables filled in as Grafana would)
// and every expression of the generated rules with Prometheus's own parser, and checks each against the
// metric contract: the metric is declared (or recorded by the rules), every label it matches on or
// groups by exists on it, and counters are only read through rate or increase.
func TestPromQL(t *testing.T) {
	file, err := rules.Generate(slo.All)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	var exprs []labelled
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
			exprs = append(exprs, labelled{where: fmt.Sprintf("rule group %s %s%s", g.Name, r.Record, r.Alert), expr: r.Expr})
		}
	}
	ruleExprs := len(exprs)
	for _, f := range dashboardtest.Load(t) {
		d := f.Dashboard
		values, err := dashboardtest.Values(d, singles)
		if err != nil {
			t.Fatal(err)
		}
		targets, err := dashboardtest.Targets(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range targets {
			if tg.Datasource != "prometheus" {
				continue
			}
			expr, err := dashboardtest.Substitute(tg.Expr, values)
			if err != nil {
				t.Errorf("%s: %v", tg, err)
				continue
			}
			exprs = append(exprs, labelled{where: tg.String(), expr: expr})
		}
		for _, a := range d.Annotations.List {
			if a.Expr != nil {
				expr, err := dashboardtest.Substitute(*a.Expr, values)
				if err != nil {
					t.Errorf("%s annotation %q: %v", *d.Uid, a.Name, err)
					continue
				}
				exprs = append(exprs, labelled{where: *d.Uid + " annotation " + a.Name, expr: expr})
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != dashboard.VariableTypeQuery || v.Datasource == nil || deref(v.Datasource.Type) != "prometheus" {
				continue
			}
			sel, err := labelValuesSelector(deref(v.Query.String))
			if err != nil {
				t.Errorf("%s variable %s: %v", *d.Uid, v.Name, err)
				continue
			}
			expr, err := dashboardtest.Substitute(sel, values)
			if err != nil {
				t.Errorf("%s variable %s: %v", *d.Uid, v.Name, err)
				continue
			}
			exprs = append(exprs, labelled{where: *d.Uid + " variable " + v.Name, expr: expr, series: true})
		}
	}
	for _, e := range exprs {
		parsed, err := dashboardtest.Parse(e.expr)
		if err != nil {
			t.Errorf("%s: %v\n%s", e.where, err, e.expr)
			continue
		}
		for _, problem := range contractProblems(parsed, recorded, e.series) {
			t.Errorf("%s: %s\n%s", e.where, problem, e.expr)
		}
	}
	t.Logf("parsed %d PromQL expressions: %d from rules, %d from dashboards (queries, annotations, variables)",
		len(exprs), ruleExprs, len(exprs)-ruleExprs)
}

type labelled struct {
	where, expr string
	// series is a variable's series selector: counters need no rate there.
	series bool
}

var labelValues = regexp.MustCompile(`^label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// labelValuesSelector returns the series selector of a label_values(selector, label) variable query.
func labelValuesSelector(q string) (string, error) {
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		return "", fmt.Errorf("query %q is not label_values(selector, label)", q)
	}
	return m[1], nil
}

// recordedLabels are the labels of the SLO recording rules' series.
var recordedLabels = slo.RecordLabels

// contractProblems checks e against the metric contract.
func contractProblems(e parser.Expr, recorded map[string]bool, series bool) []string {
	var problems []string
	// labelsOf is the union of labels the selectors below a node can carry.
	labelsOf := func(n parser.Node) map[string]bool {
		out := map[string]bool{}
		parser.Inspect(n, func(c parser.Node, _ []parser.Node) error {
			vs, ok := c.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			if recorded[vs.Name] {
				for _, l := range recordedLabels {
					out[l] = true
				}
				return nil
			}
			if m, ok := signal.Lookup(vs.Name); ok {
				for _, l := range append(append(slices.Clone(m.Labels), signal.TargetLabels...), "le") {
					out[l] = true
				}
			}
			return nil
		})
		return out
	}
	parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if recorded[n.Name] {
				for _, m := range n.LabelMatchers {
					if m.Name != "__name__" && !slices.Contains(recordedLabels, m.Name) {
						problems = append(problems, fmt.Sprintf("recorded %s has no label %s", n.Name, m.Name))
					}
				}
				return nil
			}
			m, ok := signal.Lookup(n.Name)
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %s is neither declared in package signal nor recorded by the rules", n.Name))
				return nil
			}
			for _, lm := range n.LabelMatchers {
				if lm.Name != "__name__" && !m.HasLabel(lm.Name) {
					problems = append(problems, fmt.Sprintf("%s has no label %s", n.Name, lm.Name))
				}
			}
			if !series && isCounterSeries(m, n.Name) && !underRate(path) {
				problems = append(problems, fmt.Sprintf("counter %s is read without rate or increase", n.Name))
			}
		case *parser.AggregateExpr:
			have := labelsOf(n.Expr)
			for _, l := range n.Grouping {
				if !have[l] {
					problems = append(problems, fmt.Sprintf("%s by %s, but no series below carries %s", n.Op, l, l))
				}
			}
		}
		return nil
	})
	return problems
}

func isCounterSeries(m signal.Metric, series string) bool {
	return m.Type == signal.Counter || (m.Type == signal.Histogram && series != m.Name)
}

// underRate reports whether the selector at the end of path is the range of a rate or increase call.
func underRate(path []parser.Node) bool {
	for i := len(path) - 1; i >= 0; i-- {
		if c, ok := path[i].(*parser.Call); ok {
			return slices.Contains([]string{"rate", "increase", "absent"}, c.Func.Name)
		}
	}
	return false
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// generatedRules reads the committed rule file.
func generatedRules(t *testing.T) []rules.Rule {
	t.Helper()
	b, err := os.ReadFile(dashboardtest.RulesFile())
	if err != nil {
		t.Fatal(err)
	}
	var f rules.File
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var out []rules.Rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}
