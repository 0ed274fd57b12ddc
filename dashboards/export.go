package dashboards

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

// asExported gives v the keys Grafana writes for a variable of its kind when it saves or exports a
// dashboard, and drops those it never writes for that kind. The SDK's builders leave a text box without
// a query, which tools written against Grafana's exports refuse (grafana/dashboard-linter: "invalid type
// for field 'query': <nil>"), and give every kind the interval variable's auto, auto_min and auto_count.
//
// Grafana's shapes: grafana/grafana
// public/app/features/dashboard-scene/serialization/sceneVariablesSetToVariables.ts (Grafana 11-12) and
// public/app/features/variables/textbox/reducer.ts, adapter.ts (Grafana 10); the defaults (regex "", an
// empty text box) from grafana/scenes packages/scenes/src/variables/variants. The test
// TestVariablesHaveGrafanasExportShape spells out the keys and value types per kind.
func asExported(v *dashboard.VariableModel) {
	if v.Type != dashboard.VariableTypeInterval {
		v.Auto, v.AutoMin, v.AutoCount = nil, nil, nil
	}
	switch v.Type {
	case dashboard.VariableTypeQuery, dashboard.VariableTypeDatasource:
		if v.Regex == nil {
			v.Regex = ptr("")
		}
		if v.Current == nil {
			// Nothing chosen yet: Grafana picks the first value (or the default datasource) on load.
			v.Current = ptr(variableOption(""))
		}
		if v.Type == dashboard.VariableTypeDatasource {
			// The only refresh Grafana has for a datasource variable; the SDK's builder has no setter.
			v.Refresh = ptr(dashboard.VariableRefreshOnDashboardLoad)
		}
	case dashboard.VariableTypeTextbox:
		// query is the box's default text; current and its one option hold the same text.
		text := ""
		if v.Query != nil && v.Query.String != nil {
			text = *v.Query.String
		}
		v.Query = &dashboard.StringOrMap{String: ptr(text)}
		v.Current = ptr(variableOption(text))
		selected := variableOption(text)
		selected.Selected = ptr(true)
		v.Options = []dashboard.VariableOption{selected}
		v.Multi, v.IncludeAll, v.AllowCustomValue = nil, nil, nil
	}
}

func variableOption(text string) dashboard.VariableOption {
	return dashboard.VariableOption{
		Text:  dashboard.StringOrArrayOfString{String: ptr(text)},
		Value: dashboard.StringOrArrayOfString{String: ptr(text)},
	}
}

// exportedDashboard is a dashboard the way JSON writes it: as the SDK encodes it, but with each
// variable's options list written even when empty.
type exportedDashboard struct {
	Classic
	Templating struct {
		List []exportedVariable `json:"list,omitempty"`
	} `json:"templating"`
}

// exportedVariable writes "options": [] where the SDK omits an empty list: Grafana writes it for query
// and datasource variables, whose options it fetches on load (sceneVariablesSetToVariables.ts, above).
type exportedVariable struct {
	dashboard.VariableModel
	Options []dashboard.VariableOption `json:"options"`
}

func exported(d Classic) exportedDashboard {
	out := exportedDashboard{Classic: d}
	for _, v := range d.Templating.List {
		options := v.Options
		if options == nil {
			options = []dashboard.VariableOption{}
		}
		out.Templating.List = append(out.Templating.List, exportedVariable{VariableModel: v, Options: options})
	}
	return out
}
