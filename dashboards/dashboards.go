// Package dashboards defines Meshplane's Grafana dashboards as Go values — rows of panels, each with its
// queries, unit, description and links — and builds them with the Grafana Foundation SDK into dashboard
// JSON with stable UIDs, explicit panel ids and query refIds. The same queries are what the module's
// tests parse and run against real Prometheus and Loki servers.
package dashboards

import (
	"fmt"
	"maps"
	"slices"

	"meshplane.dev/dashboards/promql"
)

// Datasource is the kind of datasource a panel or variable queries.
type Datasource string

// Datasources. Every dashboard selects its instances through variables, so they import into any Grafana.
const (
	Prometheus Datasource = "prometheus"
	Loki       Datasource = "loki"
)

// Viz is a panel's visualization.
type Viz string

// Visualizations.
const (
	TimeSeries    Viz = "timeseries"
	Bars          Viz = "bars" // a time series drawn as bars, for counts per interval
	Stat          Viz = "stat"
	Table         Viz = "table"
	StateTimeline Viz = "state-timeline"
	Logs          Viz = "logs"
)

// Dashboard is one generated dashboard.
type Dashboard struct {
	// UID is stable across generations and Grafana instances; links between dashboards use it.
	UID         string
	Title       string
	Description string
	// Tags are added to "meshplane", which the dashboards' link menu lists.
	Tags        []string
	Variables   []Variable
	Annotations []Annotation
	Rows        []Row
}

// Row is a titled group of panels.
type Row struct {
	Title  string
	Panels []Panel
}

// Panel is one panel.
type Panel struct {
	Title string
	// Description says what the panel shows and how to read it; Grafana shows it as the panel's tooltip.
	Description string
	// Unit is a Grafana unit id (reqps, percentunit, ms, s, short, ...).
	Unit       string
	Viz        Viz
	Datasource Datasource // default Prometheus
	Queries    []Query
	// Width and Height in grid units (24 wide); 0 picks the visualization's default.
	Width, Height uint32
	// Links open another dashboard or page from the panel header.
	Links []Link
	// DataLinks open from a series or table cell; ${__data.fields.x} and ${__field.labels.x} fill in values.
	DataLinks []Link
	// Steps are thresholds, lowest first; the first step's From is ignored (it is the base colour).
	Steps []Step
	// Mappings turn values into text and colour (e.g. breaker states).
	Mappings []Mapping
	// Stack stacks the series (shares of a whole, e.g. requests by response code).
	Stack bool
	// Min and Max fix the axis or gauge range.
	Min, Max *float64
	// ColumnUnits sets a table column's unit by the refId of the query that fills it.
	ColumnUnits map[string]string
	// Columns names a table's value columns by refId (Grafana calls them "Value #A").
	Columns map[string]string
}

// Query is one panel query.
type Query struct {
	Expr   string
	Legend string
	// Instant asks for one value at the end of the time range (tables).
	Instant bool
	// Exemplars overlays exemplars (with their trace_id) on a latency series.
	Exemplars bool
}

// Link is a title and URL; dashboard links use /d/<uid>.
type Link struct {
	Title string
	URL   string
}

// Step is a threshold: from this value on, the colour applies.
type Step struct {
	From  float64
	Color string
}

// Mapping shows Value as Text in Color.
type Mapping struct {
	Value string
	Text  string
	Color string
}

// VariableKind is how a variable gets its values.
type VariableKind string

// Variable kinds.
const (
	DatasourceVariable VariableKind = "datasource"
	QueryVariable      VariableKind = "query"
	TextVariable       VariableKind = "textbox"
)

// Variable is a dashboard template variable.
type Variable struct {
	Name        string
	Label       string
	Description string
	Kind        VariableKind
	// Datasource is the plugin type of a datasource variable, or the datasource a query variable asks.
	Datasource Datasource
	// Query lists a query variable's values, e.g. label_values(up, service).
	Query string
	// Multi allows several values and All; All is the regex .+, so selectors use =~.
	Multi bool
}

// Annotation marks events on every time series panel, e.g. the operator's writes of Istio objects.
type Annotation struct {
	Name  string
	Expr  string
	Title string // legend-style template, e.g. {{kind}} {{op}}
	Tags  string // comma-separated label names
	Color string
}

// Tag is on every Meshplane dashboard.
const Tag = "meshplane"

// UIDs of the dashboards, used by links between them.
const (
	UIDMesh       = "meshplane-mesh"
	UIDService    = "meshplane-service"
	UIDResilience = "meshplane-resilience"
	UIDOperator   = "meshplane-operator"
	UIDConsulSync = "meshplane-consul-sync"
	UIDLogs       = "meshplane-logs"
	UIDSLO        = "meshplane-slo"
	UIDRED        = "meshplane-red"
)

// All returns every Meshplane dashboard.
func All() []Dashboard {
	return []Dashboard{Mesh(), Service(), Resilience(), Operator(), ConsulSync(), LogsDashboard(), SLO(), RED()}
}

// rate is the window of every dashboard rate: Grafana's $__rate_interval.
const rate = promql.RateInterval

// dashboardURL links to a dashboard by UID, keeping the time range; query adds variables (var-x=...).
func dashboardURL(uid, query string) string {
	u := fmt.Sprintf("/d/%s?${__url_time_range}", uid)
	if query != "" {
		u += "&" + query
	}
	return u
}

// Common variables.
var (
	promDatasource = Variable{Name: "datasource", Label: "Prometheus", Kind: DatasourceVariable, Datasource: Prometheus,
		Description: "The Prometheus that scrapes the mesh and the services."}
	lokiDatasource = Variable{Name: "loki", Label: "Loki", Kind: DatasourceVariable, Datasource: Loki,
		Description: "The Loki the services ship their logs to."}
)

// policyChanges marks the operator's writes of Istio objects: a change of routing, retries or breaking
// next to the change in traffic it caused.
var policyChanges = Annotation{
	Name:  "Policy changes",
	Expr:  `sum by (kind, op) (increase(meshplane_operator_writes_total[$__rate_interval])) > 0`,
	Title: "{{op}} {{kind}}",
	Tags:  "kind,op",
	Color: "purple",
}

// ratio divides part by whole per label set, counting a missing part as 0 while whole has traffic: an
// error counter only exists after the first error, and a success rate must read 0%, not "No data", when
// everything fails.
func ratio(part, whole string) string { return "(" + part + " or 0 * " + whole + ") / " + whole }

// floor is expr, or 0 while reference has series: a counter of rare events reads 0 rather than "No data".
func floor(expr, reference string) string { return expr + " or 0 * " + reference }

// burnUnit shows a burn rate as a multiple ("14.4×"): Grafana has no such unit, but takes a suffix.
const burnUnit = "suffix:×"

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
