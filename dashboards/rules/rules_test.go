package rules_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"meshplane.dev/dashboards/internal/dashboardtest"
	"meshplane.dev/dashboards/rules"
	"meshplane.dev/dashboards/slo"
	"meshplane.dev/mesh/devkit/devserver"
)

func generate(t *testing.T) rules.File {
	t.Helper()
	f, err := rules.Generate(slo.All)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAlertsAreActionable wants every alert to say how bad it is (severity), how long it must hold
// (for), what is wrong (summary, description) and what to do (a runbook section that exists).
func TestAlertsAreActionable(t *testing.T) {
	runbooks, err := os.ReadFile(filepath.Join(dashboardtest.ModuleDir(), "RUNBOOKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\w+)$`).FindAllStringSubmatch(string(runbooks), -1) {
		headings[strings.ToLower(m[1])] = true
	}
	alerts := 0
	for _, g := range generate(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			where := g.Name + " " + r.Alert
			if r.For == "" {
				t.Errorf("%s: no for: one bad evaluation would page", where)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical (page) or warning (ticket)", where, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			anchor := r.Annotations["runbook_url"][strings.LastIndex(r.Annotations["runbook_url"], "#")+1:]
			if !headings[anchor] {
				t.Errorf("%s: runbook_url %s has no \"## %s\" section in RUNBOOKS.md", where, r.Annotations["runbook_url"], r.Alert)
			}
		}
	}
	t.Logf("%d alerting rules", alerts)
}

// TestSLOGroupRejectsBadObjective: an SLO that cannot be right is refused with its name and field,
// before any rule is written.
func TestSLOGroupRejectsBadObjective(t *testing.T) {
	s := slo.All[0]
	s.Objective = 99.5
	_, err := rules.Generate([]slo.SLO{s})
	if err == nil || !strings.Contains(err.Error(), s.Name) || !strings.Contains(err.Error(), "objective") {
		t.Errorf("got %v, want an error naming %s and its objective", err, s.Name)
	}
}

// TestPromtoolCheckRules runs Prometheus's own checker on the committed rule file.
func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", dashboardtest.RulesFile()).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := devserver.Binary("promtool", "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
