package dashboards_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/dashboards/internal/dashboardtest"
)

// exportedVariables is the JSON Grafana writes for a template variable of each kind when it saves or
// exports a dashboard (Grafana 10 to 12), so that a generated dashboard reads like one a person exported:
// tools written against Grafana's exports (grafana/dashboard-linter decodes every variable's "query" as a
// string or an object and refuses anything else) accept ours.
//
// Where it comes from:
//   - Grafana 11–12, keys and values per kind: grafana/grafana
//     public/app/features/dashboard-scene/serialization/sceneVariablesSetToVariables.ts (after its
//     "Remove some defaults" pass, which drops hide 0, skipUrlSync false, an empty label, multi false and
//     sort 0), with the state defaults of grafana/scenes
//     packages/scenes/src/variables/variants/query/QueryVariable.tsx, DataSourceVariable.tsx and
//     TextBoxVariable.tsx (regex "", value "").
//   - Grafana 10: grafana/grafana public/app/features/variables/textbox/reducer.ts and adapter.ts (a text
//     box saves query, current and options, never a missing query), and the initial states in
//     variables/query/reducer.ts and variables/datasource/reducer.ts (current, options [], regex "",
//     a datasource variable's refresh 1), which also write hide, skipUrlSync and multi at their
//     defaults, and label and allValue as null when unset.
//   - Value types: grafana/grafana kinds/dashboard/dashboard_kind.cue (#VariableModel: query is a string
//     or an object; #VariableOption: text and value are a string or a list of strings, selected a bool),
//     and grafana/dashboard-linter lint/lint.go (Template.UnmarshalJSON, RawTemplateValue.Get: the
//     linter reads the first element of a list, so a list must not be empty).
//
// A key in neither list is one Grafana does not write for that kind (the SDK's interval defaults auto,
// auto_min and auto_count on a query variable, multi on a text box): Grafana drops it on the next save.
var exportedVariables = map[string]variableShape{
	"query": {
		required: map[string]jsonShape{
			"query": stringOrObject, "datasource": datasourceRef, "current": option, "options": options,
			"refresh": refresh, "regex": jsonString,
		},
		optional: map[string]jsonShape{
			"definition": jsonString, "sort": sortOrder, "allValue": stringOrNull, "includeAll": jsonBool,
			"multi": jsonBool, "allowCustomValue": jsonBool, "staticOptions": options,
			"staticOptionsOrder": jsonString,
		},
	},
	"datasource": {
		// query is the datasource plugin's id; options stay empty, Grafana lists the datasources on load.
		required: map[string]jsonShape{
			"query": jsonString, "current": option, "options": options, "refresh": refresh, "regex": jsonString,
		},
		optional: map[string]jsonShape{
			"multi": jsonBool, "allValue": stringOrNull, "includeAll": jsonBool, "allowCustomValue": jsonBool,
		},
	},
	"textbox": {
		// query is the box's default text; current and options hold that same text.
		required: map[string]jsonShape{"query": jsonString, "current": option, "options": options},
	},
}

// everyVariable is what Grafana writes for a variable of any kind.
var everyVariable = variableShape{
	required: map[string]jsonShape{"name": jsonString, "type": jsonString},
	optional: map[string]jsonShape{"label": stringOrNull, "description": stringOrNull, "hide": hide, "skipUrlSync": jsonBool},
}

// variableShape is the keys of one kind of variable: those Grafana always writes and those it may.
type variableShape struct{ required, optional map[string]jsonShape }

// jsonShape is the shape of a JSON value as encoding/json decodes it into any.
type jsonShape struct {
	name string // as in a failure message: what Grafana writes there
	fits func(v any) bool
}

func is[T any](v any) bool { _, ok := v.(T); return ok }

var (
	jsonString     = jsonShape{"a string", is[string]}
	jsonBool       = jsonShape{"a bool", is[bool]}
	stringOrNull   = jsonShape{"a string or null", func(v any) bool { return v == nil || is[string](v) }}
	stringOrObject = jsonShape{"a string or an object", func(v any) bool { return is[string](v) || is[map[string]any](v) }}
	hide           = jsonShape{"0, 1 or 2", oneOf(0, 1, 2)}
	refresh        = jsonShape{"0, 1 or 2 (never, on load, on time range change)", oneOf(0, 1, 2)}
	sortOrder      = jsonShape{"a sort order 0 to 8", oneOf(0, 1, 2, 3, 4, 5, 6, 7, 8)}
	// datasourceRef is null (the default datasource) or a reference by uid, optionally with its type.
	datasourceRef = jsonShape{`null or {"type": string, "uid": string}`, func(v any) bool {
		if v == nil {
			return true
		}
		ref, ok := v.(map[string]any)
		return ok && is[string](ref["uid"]) && fitsObject(ref, map[string]jsonShape{"uid": jsonString}, map[string]jsonShape{"type": jsonString})
	}}
	option = jsonShape{`{"text": T, "value": T, "selected"?: bool} where T is a string or a non-empty list of strings`, func(v any) bool {
		o, ok := v.(map[string]any)
		return ok && fitsObject(o, map[string]jsonShape{"text": textOrTexts, "value": textOrTexts}, map[string]jsonShape{"selected": jsonBool})
	}}
	options = jsonShape{"a list of options " + option.name, func(v any) bool {
		list, ok := v.([]any)
		return ok && !slices.ContainsFunc(list, func(o any) bool { return !option.fits(o) })
	}}
	textOrTexts = jsonShape{"a string or a non-empty list of strings", func(v any) bool {
		list, ok := v.([]any)
		if !ok {
			return is[string](v)
		}
		return len(list) > 0 && !slices.ContainsFunc(list, func(s any) bool { return !is[string](s) })
	}}
)

// oneOf fits a JSON number that is one of values.
func oneOf(values ...float64) func(any) bool {
	return func(v any) bool { n, ok := v.(float64); return ok && slices.Contains(values, n) }
}

// fitsObject reports whether o has every required key, no key outside required and optional, and each
// value of the shape its key names.
func fitsObject(o map[string]any, required, optional map[string]jsonShape) bool {
	for k := range required {
		if _, ok := o[k]; !ok {
			return false
		}
	}
	for k, v := range o {
		s, ok := required[k]
		if !ok {
			s, ok = optional[k]
		}
		if !ok || !s.fits(v) {
			return false
		}
	}
	return true
}

// variableProblems lists how v differs from what Grafana exports for its kind, sorted.
func variableProblems(v map[string]any) []string {
	var problems []string
	kind, _ := v["type"].(string)
	shape, known := exportedVariables[kind]
	if !known {
		return []string{fmt.Sprintf("kind %q has no shape in exportedVariables: add the one Grafana exports", kind)}
	}
	for _, s := range []variableShape{everyVariable, shape} {
		for k, want := range s.required {
			if _, ok := v[k]; !ok {
				problems = append(problems, fmt.Sprintf("missing %q (Grafana writes %s)", k, want.name))
			}
		}
	}
	for k, value := range v {
		want, ok := everyVariable.required[k]
		for _, keys := range []map[string]jsonShape{everyVariable.optional, shape.required, shape.optional} {
			if !ok {
				want, ok = keys[k]
			}
		}
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%q is not written by Grafana for a %s variable", k, kind))
		case !want.fits(value):
			b, _ := json.Marshal(value)
			problems = append(problems, fmt.Sprintf("%q is %s, Grafana writes %s", k, b, want.name))
		}
	}
	slices.Sort(problems)
	return problems
}

// TestVariablesHaveGrafanasExportShape checks every variable of every generated dashboard against the
// JSON Grafana itself writes for its kind: the keys it always writes, no keys it never writes, and the
// type of each value.
func TestVariablesHaveGrafanasExportShape(t *testing.T) {
	kinds := map[string]int{}
	for _, f := range dashboardtest.Load(t) {
		var d struct {
			Templating struct {
				List []map[string]any `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(f.JSON, &d); err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		for _, v := range d.Templating.List {
			kinds[fmt.Sprint(v["type"])]++
			for _, p := range variableProblems(v) {
				t.Errorf("%s variable %v: %s", filepath.Base(f.Path), v["name"], p)
			}
		}
	}
	t.Logf("variables checked by kind: %v", kinds)
}

// TestVariableShapeChecker runs the checker on variables as Grafana exports them, which it must accept,
// and on the Logs dashboard's text box as it was generated before it had a query, which it must reject.
func TestVariableShapeChecker(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want []string
	}{
		{
			name: "text box as Grafana 11-12 exports it",
			json: `{"name": "search", "label": "Line contains", "description": "d", "type": "textbox",
				"current": {"text": "", "value": ""}, "options": [{"text": "", "value": "", "selected": true}], "query": ""}`,
		},
		{
			name: "text box as Grafana 10 saves it",
			json: `{"type": "textbox", "name": "search", "label": "", "hide": 0, "skipUrlSync": false, "query": "abc",
				"current": {"selected": false, "text": "abc", "value": "abc"}, "options": [{"selected": false, "text": "abc", "value": "abc"}]}`,
		},
		{
			name: "multi-value query variable as Grafana 11-12 exports it",
			json: `{"name": "service", "type": "query", "current": {"text": ["All"], "value": ["$__all"]}, "options": [],
				"query": "label_values(up, service)", "definition": "label_values(up, service)",
				"datasource": {"type": "prometheus", "uid": "${datasource}"}, "sort": 1, "refresh": 2, "regex": "",
				"allValue": ".+", "includeAll": true, "multi": true, "allowCustomValue": true}`,
		},
		{
			name: "query variable as Grafana 10 saves it",
			json: `{"type": "query", "name": "namespace", "label": null, "hide": 0, "skipUrlSync": false, "datasource": null,
				"query": "label_values(up, namespace)", "regex": "", "sort": 0, "refresh": 1, "multi": false,
				"includeAll": false, "allValue": null, "options": [], "current": {"selected": false, "text": "shop", "value": "shop"},
				"definition": "label_values(up, namespace)"}`,
		},
		{
			name: "datasource variable as Grafana 11-12 exports it",
			json: `{"name": "datasource", "label": "Prometheus", "type": "datasource", "current": {"text": "Prometheus", "value": "P1"},
				"options": [], "regex": "", "refresh": 1, "query": "prometheus", "includeAll": false, "allowCustomValue": true}`,
		},
		{
			name: "text box without a query, as generated before",
			json: `{"type": "textbox", "name": "search", "label": "Line contains", "skipUrlSync": false, "description": "d",
				"multi": false, "allowCustomValue": true, "includeAll": false, "auto": false, "auto_min": "10s", "auto_count": 30}`,
			want: []string{
				`"allowCustomValue" is not written by Grafana for a textbox variable`,
				`"auto" is not written by Grafana for a textbox variable`,
				`"auto_count" is not written by Grafana for a textbox variable`,
				`"auto_min" is not written by Grafana for a textbox variable`,
				`"includeAll" is not written by Grafana for a textbox variable`,
				`"multi" is not written by Grafana for a textbox variable`,
				`missing "current" (Grafana writes ` + option.name + `)`,
				`missing "options" (Grafana writes ` + options.name + `)`,
				`missing "query" (Grafana writes a string)`,
			},
		},
		{
			name: "wrong value types",
			json: `{"type": "query", "name": "x", "query": null, "datasource": "prom", "current": {"text": [], "value": 1},
				"options": [{"text": "a"}], "refresh": 5, "regex": ""}`,
			want: []string{
				`"current" is {"text":[],"value":1}, Grafana writes ` + option.name,
				`"datasource" is "prom", Grafana writes ` + datasourceRef.name,
				`"options" is [{"text":"a"}], Grafana writes ` + options.name,
				`"query" is null, Grafana writes a string or an object`,
				`"refresh" is 5, Grafana writes ` + refresh.name,
			},
		},
		{
			name: "kind without a shape",
			json: `{"type": "adhoc", "name": "filters"}`,
			want: []string{`kind "adhoc" has no shape in exportedVariables: add the one Grafana exports`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v map[string]any
			if err := json.Unmarshal([]byte(tc.json), &v); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, variableProblems(v)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
