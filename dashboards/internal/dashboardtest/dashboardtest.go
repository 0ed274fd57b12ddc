// Package dashboardtest reads the generated dashboards and rules back the way a user's Grafana and
// Prometheus would — dashboards through the Grafana Foundation SDK's types, expressions through
// Prometheus's own PromQL parser — and lists their queries with Grafana's variables filled in, for the
// tests that parse and run them.
package dashboardtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/loki"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/prometheus/prometheus/promql/parser"

	"meshplane.dev/dashboards"
)

func init() {
	// Panels and queries decode into their plugin's types only once the plugins are registered.
	plugins.RegisterDefaultPlugins()
}

// ModuleDir is the dashboards module's directory.
func ModuleDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// GeneratedDir holds the committed, generated dashboards and rules.
func GeneratedDir() string { return filepath.Join(ModuleDir(), "generated") }

// RulesFile is the generated Prometheus rule file.
func RulesFile() string { return filepath.Join(GeneratedDir(), "prometheus", "meshplane-rules.yaml") }

// Decode reads dashboard JSON into the SDK's types. It fails on anything the SDK's strict decoder
// rejects (unknown or missing fields, wrong types). The value comes from the lenient decoder: in SDK
// v0.0.18 the strict decoder returns a typed nil error from every panel and so drops all panels.
func Decode(b []byte) (dashboards.Classic, error) {
	var strict dashboards.Classic
	if err := strict.UnmarshalJSONStrict(b); err != nil {
		var be cog.BuildErrors
		if !errors.As(err, &be) || len(be) > 0 {
			return dashboards.Classic{}, fmt.Errorf("strict decode: %w", err)
		}
	}
	var d dashboards.Classic
	if err := json.Unmarshal(b, &d); err != nil {
		return dashboards.Classic{}, fmt.Errorf("decode: %w", err)
	}
	return d, nil
}

// File is a generated dashboard: its JSON and its decoded form.
type File struct {
	Path      string
	JSON      []byte
	Dashboard dashboards.Classic
}

// Load decodes every generated dashboard, in file name order.
func Load(t testing.TB) []File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(GeneratedDir(), "grafana", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no dashboards in %s: run `make generate`", GeneratedDir())
	}
	var out []File
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out = append(out, File{Path: p, JSON: b, Dashboard: d})
	}
	return out
}

// Target is one query of a panel.
type Target struct {
	Dashboard  string // UID
	Panel      string // title
	PanelID    uint32
	RefID      string
	Datasource string // prometheus or loki
	// Expr is the query as written, with Grafana variables.
	Expr    string
	Instant bool
}

func (t Target) String() string {
	return fmt.Sprintf("%s panel %d %q query %s", t.Dashboard, t.PanelID, t.Panel, t.RefID)
}

// Targets lists every query of every panel of d, in panel order.
func Targets(d dashboards.Classic) ([]Target, error) {
	var out []Target
	uid := deref(d.Uid)
	for _, pr := range d.Panels {
		p := pr.Panel
		if p == nil {
			continue
		}
		for _, q := range p.Targets {
			t := Target{Dashboard: uid, Panel: deref(p.Title), PanelID: deref(p.Id)}
			switch q := q.(type) {
			case *prometheus.Dataquery:
				t.Datasource, t.RefID, t.Expr, t.Instant = "prometheus", deref(q.RefId), q.Expr, deref(q.Instant)
			case *loki.Dataquery:
				t.Datasource, t.RefID, t.Expr, t.Instant = "loki", deref(q.RefId), q.Expr, deref(q.Instant)
			default:
				return nil, fmt.Errorf("%s panel %q: query of unexpected type %T", uid, deref(p.Title), q)
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// Builtins are the values the tests give Grafana's built-in variables by default: a rate window of
// four 15s scrapes.
var Builtins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "1m",
	"__auto":          "1m",
	"__range":         "1h",
}

// Values gives every variable of d a value: a multi-value variable its All value (.+), a single-value
// one the value in given, a text box "". Built-ins come from given, else from Builtins.
func Values(d dashboards.Classic, given map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range Builtins {
		out[k] = v
	}
	for k, v := range given {
		if strings.HasPrefix(k, "__") {
			out[k] = v
		}
	}
	for _, v := range d.Templating.List {
		switch {
		case v.Type == dashboard.VariableTypeDatasource:
			// Only in datasource references, never in expressions.
		case v.Type == dashboard.VariableTypeTextbox:
			out[v.Name] = ""
		case deref(v.Multi):
			out[v.Name] = deref(v.AllValue)
		default:
			val, ok := given[v.Name]
			if !ok {
				return nil, fmt.Errorf("%s: no test value for single-value variable %s", deref(d.Uid), v.Name)
			}
			out[v.Name] = val
		}
	}
	return out, nil
}

// Substitute replaces Grafana variables ($name and ${name}) in expr, longest names first so $service
// does not eat the start of $service_name. An unknown variable is an error: the query would fail in
// Grafana too.
func Substitute(expr string, values map[string]string) (string, error) {
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return len(b) - len(a) })
	for _, n := range names {
		expr = strings.ReplaceAll(expr, "${"+n+"}", values[n])
		expr = strings.ReplaceAll(expr, "$"+n, values[n])
	}
	if i := strings.Index(expr, "$"); i >= 0 {
		return "", fmt.Errorf("unknown variable at %q", expr[i:])
	}
	return expr, nil
}

// Parse parses a PromQL expression with Prometheus's own parser.
func Parse(expr string) (parser.Expr, error) {
	return parser.ParseExpr(expr)
}

// OrSides returns both operands of every "or" in expr (outermost first), each as PromQL text that can be
// evaluated alone. "A or B" returns data whenever B does, so a missing A (a renamed metric, a label that
// never matches) hides behind B unless each side is checked on its own.
func OrSides(e parser.Expr) [][2]string {
	var out [][2]string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if b, ok := n.(*parser.BinaryExpr); ok && b.Op == parser.LOR {
			out = append(out, [2]string{b.LHS.String(), b.RHS.String()})
		}
		return nil
	})
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Query is one PromQL expression to run, and where it comes from.
type Query struct {
	Where string
	Expr  string
	// Metrics are the metric names it reads.
	Metrics []string
}

// PrometheusQueries lists every Prometheus query of the dashboards — panel queries and annotations,
// variables filled in from given (see Values) — and, for each "or" in one, both of its operands as
// queries of their own.
func PrometheusQueries(files []File, given map[string]string) ([]Query, error) {
	var out []Query
	add := func(where, expr string) error {
		parsed, err := Parse(expr)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		out = append(out, Query{Where: where, Expr: expr, Metrics: metricNames(parsed)})
		for i, sides := range OrSides(parsed) {
			for j, side := range sides {
				p, err := Parse(side)
				if err != nil {
					return fmt.Errorf("%s: or operand: %w", where, err)
				}
				out = append(out, Query{Where: fmt.Sprintf("%s, operand %d of \"or\" #%d", where, j+1, i+1), Expr: side, Metrics: metricNames(p)})
			}
		}
		return nil
	}
	for _, f := range files {
		d := f.Dashboard
		values, err := Values(d, given)
		if err != nil {
			return nil, err
		}
		targets, err := Targets(d)
		if err != nil {
			return nil, err
		}
		for _, tg := range targets {
			if tg.Datasource != "prometheus" {
				continue
			}
			expr, err := Substitute(tg.Expr, values)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tg, err)
			}
			if err := add(tg.String(), expr); err != nil {
				return nil, err
			}
		}
		for _, a := range d.Annotations.List {
			if a.Expr == nil {
				continue
			}
			expr, err := Substitute(*a.Expr, values)
			if err != nil {
				return nil, err
			}
			if err := add(deref(d.Uid)+" annotation "+a.Name, expr); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func metricNames(e parser.Expr) []string {
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && !slices.Contains(out, vs.Name) {
			out = append(out, vs.Name)
		}
		return nil
	})
	slices.Sort(out)
	return out
}
