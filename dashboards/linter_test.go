package dashboards_test

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/grafana/dashboard-linter/lint"

	"meshplane.dev/dashboards/internal/dashboardtest"
)

// TestDashboardLinterReadsVariables reads every generated dashboard with grafana/dashboard-linter, a
// parser written against Grafana's own exports and independent of the SDK that generates ours: it
// refuses a variable whose query is neither a string nor an object ("invalid type for field 'query'"),
// and its rules read each variable's current value and first option. It must see the variables the
// generator wrote, with their queries.
func TestDashboardLinterReadsVariables(t *testing.T) {
	type variable struct{ Name, Type, Query string }
	for _, f := range dashboardtest.Load(t) {
		name := filepath.Base(f.Path)
		d, err := lint.NewDashboard(f.JSON)
		if err != nil {
			t.Errorf("%s: dashboard-linter cannot read it: %v", name, err)
			continue
		}
		var want, got []variable
		for _, v := range f.Dashboard.Templating.List {
			q := ""
			if v.Query != nil && v.Query.String != nil {
				q = *v.Query.String
			}
			want = append(want, variable{Name: v.Name, Type: string(v.Type), Query: q})
		}
		for _, v := range d.Templating.List {
			got = append(got, variable{Name: v.Name, Type: v.Type, Query: v.Query})
			if _, err := v.Current.Get(); err != nil {
				t.Errorf("%s variable %s: dashboard-linter cannot read current: %v", name, v.Name, err)
			}
			for _, o := range v.Options {
				if _, err := o.Get(); err != nil {
					t.Errorf("%s variable %s: dashboard-linter cannot read an option: %v", name, v.Name, err)
				}
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: variables as dashboard-linter reads them (-generated +linter):\n%s", name, diff)
		}
	}
}
