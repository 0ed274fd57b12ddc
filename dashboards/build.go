package dashboards

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/logs"
	"github.com/grafana/grafana-foundation-sdk/go/loki"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/statetimeline"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Classic is the classic dashboard schema Meshplane's dashboards are built in. The SDK marks it
// deprecated in favour of its v2 schema, but v2 imports only into Grafana 12 with the new dashboard APIs
// enabled, while classic JSON imports into any Grafana from 10 on, through the UI, the HTTP API or file
// provisioning.
type Classic = dashboard.Dashboard //nolint:staticcheck // on purpose, see above

// Build turns d into a Grafana dashboard: panels and rows numbered from 1 in order, queries lettered
// A, B, … within each panel, every panel and query bound to the dashboard's datasource variables, every
// variable with the keys Grafana writes for its kind (see asExported).
func Build(d Dashboard) (Classic, error) {
	if err := d.Validate(); err != nil {
		return Classic{}, err
	}
	//nolint:staticcheck // the classic schema's builder, see Classic
	b := dashboard.NewDashboardBuilder(d.Title).
		Uid(d.UID).
		Description(d.Description).
		Tags(append([]string{Tag}, d.Tags...)).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Link(dashboard.NewDashboardLinkBuilder("Meshplane").
			Type(dashboard.DashboardLinkTypeDashboards).
			Tags([]string{Tag}).
			AsDropdown(true).
			IncludeVars(true).
			KeepTime(true).
			Tooltip("Other Meshplane dashboards, with this time range and matching variables").
			Icon("external link"))
	for _, v := range d.Variables {
		b.WithVariable(variable(v))
	}
	b.Annotation(dashboard.NewAnnotationQueryBuilder().
		Name("Annotations & Alerts").
		Datasource(common.DataSourceRef{Type: ptr("grafana"), Uid: ptr("-- Grafana --")}).
		BuiltIn(1).
		Enable(true).
		Hide(true).
		IconColor("rgba(0, 211, 255, 1)").
		Type("dashboard"))
	for _, a := range d.Annotations {
		b.Annotation(dashboard.NewAnnotationQueryBuilder().
			Name(a.Name).
			Datasource(datasourceRef(Prometheus)).
			Enable(true).
			IconColor(a.Color).
			Expr(a.Expr).
			TitleFormat(a.Title).
			TagKeys(a.Tags).
			Step("60s"))
	}
	id := uint32(0)
	for _, r := range d.Rows {
		id++
		b.WithRow(dashboard.NewRowBuilder(r.Title).Id(id))
		for _, p := range r.Panels {
			id++
			b.WithPanel(panel(id, p))
		}
	}
	out, err := b.Build()
	if err != nil {
		return Classic{}, err
	}
	for i := range out.Templating.List {
		asExported(&out.Templating.List[i])
	}
	return out, nil
}

// JSON renders d as indented dashboard JSON, the form Grafana imports and provisions, with the empty
// options lists Grafana writes and the SDK omits (see exportedVariable).
func JSON(d Dashboard) ([]byte, error) {
	built, err := Build(d)
	if err != nil {
		return nil, fmt.Errorf("build dashboard %s: %w", d.UID, err)
	}
	out, err := json.MarshalIndent(exported(built), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal dashboard %s: %w", d.UID, err)
	}
	return append(out, '\n'), nil
}

// Validate reports the first thing that would make d confusing in Grafana: a missing UID, unit or
// description, or a panel without queries.
func (d Dashboard) Validate() error {
	if d.UID == "" || len(d.UID) > 40 {
		return fmt.Errorf("dashboard %q: uid %q must be 1 to 40 characters", d.Title, d.UID)
	}
	for _, r := range d.Rows {
		for _, p := range r.Panels {
			switch {
			case p.Description == "":
				return fmt.Errorf("dashboard %s: panel %q has no description", d.UID, p.Title)
			case p.Unit == "" && p.Viz != Logs:
				return fmt.Errorf("dashboard %s: panel %q has no unit", d.UID, p.Title)
			case len(p.Queries) == 0:
				return fmt.Errorf("dashboard %s: panel %q has no queries", d.UID, p.Title)
			case len(p.Queries) > 26:
				return fmt.Errorf("dashboard %s: panel %q has more queries than refIds A-Z", d.UID, p.Title)
			}
		}
	}
	return nil
}

// panelBuilder is what every SDK panel builder offers; panel configures them all the same way.
type panelBuilder[B any] interface {
	cog.Builder[dashboard.Panel]
	Id(uint32) B
	Title(string) B
	Description(string) B
	Datasource(common.DataSourceRef) B
	WithTarget(cog.Builder[variants.Dataquery]) B
	Span(uint32) B
	Height(uint32) B
	Unit(string) B
	Min(float64) B
	Max(float64) B
	Links([]cog.Builder[dashboard.DashboardLink]) B
	DataLinks([]cog.Builder[dashboard.DashboardLink]) B
	Thresholds(cog.Builder[dashboard.ThresholdsConfig]) B
	Mappings([]dashboard.ValueMapping) B
	WithTransformation(dashboard.DataTransformerConfig) B
	OverrideByQuery(string, []dashboard.DynamicConfigValue) B
}

func panel(id uint32, p Panel) cog.Builder[dashboard.Panel] {
	switch p.Viz {
	case Stat:
		return configure(stat.NewPanelBuilder().GraphMode(common.BigValueGraphModeArea).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)), id, p, 6, 4)
	case Table:
		// The SDK's default footer has a null reducer, which its own strict decoder (and Grafana's schema)
		// reject; an empty list is what Grafana writes.
		return configure(table.NewPanelBuilder().
			Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{}).CountRows(false)), id, p, 24, 8)
	case StateTimeline:
		return configure(statetimeline.NewPanelBuilder().ShowValue(common.VisibilityModeNever), id, p, 12, 8)
	case Logs:
		return configure(logs.NewPanelBuilder().ShowTime(true).WrapLogMessage(true).EnableLogDetails(true).
			SortOrder(common.LogsSortOrderDescending), id, p, 24, 10)
	case Bars:
		ts := timeseries.NewPanelBuilder().DrawStyle(common.GraphDrawStyleBars).FillOpacity(80).
			Legend(legend())
		if p.Stack {
			ts.Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))
		}
		return configure(ts, id, p, 12, 8)
	default:
		ts := timeseries.NewPanelBuilder().FillOpacity(10).ShowPoints(common.VisibilityModeNever).
			Legend(legend())
		if p.Stack {
			ts.Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).FillOpacity(40)
		}
		if len(p.Steps) > 1 {
			// Thresholds on a graph are reference lines: a burn rate's alert level, an objective.
			ts.ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed))
		}
		return configure(ts, id, p, 12, 8)
	}
}

func legend() *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		DisplayMode(common.LegendDisplayModeList).
		Placement(common.LegendPlacementBottom).
		ShowLegend(true)
}

func configure[B panelBuilder[B]](b B, id uint32, p Panel, width, height uint32) B {
	if p.Width != 0 {
		width = p.Width
	}
	if p.Height != 0 {
		height = p.Height
	}
	ds := p.Datasource
	if ds == "" {
		ds = Prometheus
	}
	b.Id(id).Title(p.Title).Description(p.Description).Datasource(datasourceRef(ds)).Span(width).Height(height)
	if p.Unit != "" {
		b.Unit(p.Unit)
	}
	if p.Min != nil {
		b.Min(*p.Min)
	}
	if p.Max != nil {
		b.Max(*p.Max)
	}
	for i, q := range p.Queries {
		b.WithTarget(target(ds, refID(i), q))
	}
	if len(p.Links) > 0 {
		b.Links(links(p.Links))
	}
	if len(p.DataLinks) > 0 {
		b.DataLinks(links(p.DataLinks))
	}
	b.Thresholds(thresholds(p.Steps))
	if len(p.Mappings) > 0 {
		b.Mappings(mappings(p.Mappings))
	}
	if p.Viz == Table {
		// Instant queries of a table come back as one frame each; merge joins them on their labels.
		b.WithTransformation(dashboard.DataTransformerConfig{Id: "merge", Options: map[string]any{}})
		rename := map[string]any{"Time": ""}
		for ref, name := range p.Columns {
			rename["Value #"+ref] = name
		}
		b.WithTransformation(dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{
			"excludeByName": map[string]any{"Time": true},
			"renameByName":  rename,
		}})
		for _, ref := range sortedKeys(p.ColumnUnits) {
			b.OverrideByQuery(ref, []dashboard.DynamicConfigValue{{Id: "unit", Value: p.ColumnUnits[ref]}})
		}
	}
	return b
}

func target(ds Datasource, ref string, q Query) cog.Builder[variants.Dataquery] {
	if ds == Loki {
		t := loki.NewDataqueryBuilder().Datasource(datasourceRef(Loki)).RefId(ref).Expr(q.Expr).
			EditorMode(loki.QueryEditorModeCode)
		if q.Instant {
			t.QueryType("instant").Instant(true)
		} else {
			t.QueryType("range").Range(true)
		}
		if q.Legend != "" {
			t.LegendFormat(q.Legend)
		}
		return t
	}
	t := prometheus.NewDataqueryBuilder().Datasource(datasourceRef(Prometheus)).RefId(ref).Expr(q.Expr).
		EditorMode(prometheus.QueryEditorModeCode)
	if q.Legend != "" {
		t.LegendFormat(q.Legend)
	}
	if q.Instant {
		t.Instant().Format(prometheus.PromQueryFormatTable)
	} else {
		t.Range()
	}
	if q.Exemplars {
		t.Exemplar(true)
	}
	return t
}

// refID letters a panel's queries A, B, C, ….
func refID(i int) string { return string(rune('A' + i)) }

func datasourceRef(ds Datasource) common.DataSourceRef {
	if ds == Loki {
		return common.DataSourceRef{Type: ptr("loki"), Uid: ptr("${" + lokiDatasource.Name + "}")}
	}
	return common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${" + promDatasource.Name + "}")}
}

func variable(v Variable) cog.Builder[dashboard.VariableModel] {
	label := v.Label
	if label == "" {
		label = v.Name
	}
	switch v.Kind {
	case DatasourceVariable:
		return dashboard.NewDatasourceVariableBuilder(v.Name).Label(label).Description(v.Description).
			Type(string(v.Datasource))
	case TextVariable:
		return dashboard.NewTextBoxVariableBuilder(v.Name).Label(label).Description(v.Description)
	}
	q := dashboard.NewQueryVariableBuilder(v.Name).Label(label).Description(v.Description).
		Datasource(datasourceRef(v.Datasource)).
		Query(dashboard.StringOrMap{String: ptr(v.Query)}).
		Definition(v.Query).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc)
	if v.Multi {
		// .+ rather than Grafana's list of every value: shorter queries, and Loki rejects a selector
		// that matches the empty string.
		q.Multi(true).IncludeAll(true).AllValue(".+").Current(dashboard.VariableOption{
			Selected: ptr(true),
			Text:     dashboard.StringOrArrayOfString{String: ptr("All")},
			Value:    dashboard.StringOrArrayOfString{String: ptr("$__all")},
		})
	}
	return q
}

func links(ls []Link) []cog.Builder[dashboard.DashboardLink] {
	out := make([]cog.Builder[dashboard.DashboardLink], len(ls))
	for i, l := range ls {
		out[i] = dashboard.NewDashboardLinkBuilder(l.Title).Type(dashboard.DashboardLinkTypeLink).Url(l.URL)
	}
	return out
}

func thresholds(steps []Step) *dashboard.ThresholdsConfigBuilder {
	if len(steps) == 0 {
		steps = []Step{{Color: "green"}}
	}
	out := make([]dashboard.Threshold, len(steps))
	for i, s := range steps {
		out[i] = dashboard.Threshold{Color: s.Color}
		if i > 0 {
			out[i].Value = ptr(s.From)
		}
	}
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(out)
}

func mappings(ms []Mapping) []dashboard.ValueMapping {
	opts := make(map[string]dashboard.ValueMappingResult, len(ms))
	for i, m := range ms {
		opts[m.Value] = dashboard.ValueMappingResult{Text: ptr(m.Text), Color: ptr(m.Color), Index: ptr(int32(i))}
	}
	return []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{Type: dashboard.MappingTypeValueToText, Options: opts}}}
}

func ptr[T any](v T) *T { return &v }
