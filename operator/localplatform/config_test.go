package localplatform

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

func TestPortsSet(t *testing.T) {
	p := DefaultPorts()
	if err := p.Set("prometheus=19090,gateway=18080"); err != nil {
		t.Fatal(err)
	}
	if p["prometheus"] != 19090 || p["gateway"] != 18080 || p["consul"] != 8500 {
		t.Errorf("ports after Set = %v", p)
	}
	for in, want := range map[string]string{
		"grafana=3000":     `unknown component "grafana"`,
		"prometheus":       "want name=port",
		"prometheus=99999": `"99999" is not a port number`,
	} {
		if err := p.Set(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Set(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestCheckFreeNamesComponentAndPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	err = Ports{"prometheus": taken}.CheckFree()
	want := "prometheus: port " + strconv.Itoa(taken) + " is in use"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckFree = %v, want %q", err, want)
	}
	if err := (Ports{"a": taken + 1, "b": taken + 1}).CheckFree(); err == nil || !strings.Contains(err.Error(), "both want port") {
		t.Errorf("duplicate ports: %v", err)
	}
}

// TestPrometheusLabelsEachShopTargetWithItsVersion checks the relabel rules make up's Prometheus gets:
// every shop instance's target, known by the pod its endpoint names, carries its version label (the
// canary checks' grpc queries select it), and one of another service never matches.
func TestPrometheusLabelsEachShopTargetWithItsVersion(t *testing.T) {
	var rules []struct {
		SourceLabels []string `json:"source_labels"`
		Regex        string   `json:"regex"`
		TargetLabel  string   `json:"target_label"`
		Replacement  string   `json:"replacement"`
	}
	if err := yaml.Unmarshal([]byte(versionRelabeling(shopInstances())), &rules); err != nil {
		t.Fatal(err)
	}
	// relabel applies the rules as Prometheus does: each regex anchored at both ends.
	relabel := func(pod string) string {
		version := ""
		for _, r := range rules {
			if fmt.Sprint(r.SourceLabels) != "[__meta_consul_service_metadata_k8s_pod]" || r.TargetLabel != "version" {
				t.Fatalf("rule %+v, want one from the k8s-pod meta to the version label", r)
			}
			if regexp.MustCompile("^(?:" + r.Regex + ")$").MatchString(pod) {
				version = r.Replacement
			}
		}
		return version
	}
	got := map[string]string{}
	for _, in := range shopInstances() {
		got[in.key] = relabel(in.podName())
	}
	want := map[string]string{
		"catalog": "v1", "catalog-v2": "v2", "payments": "v1", "payments-v2": "v2", "orders": "v1", "orders-2": "v1",
		"fulfillment": "v1", "fulfillment-2": "v1", "gateway": "v1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("version by instance (-want +got):\n%s", diff)
	}
	if v := relabel("payments-v2-local-other"); v != "" {
		t.Errorf("an unknown pod got version %q", v)
	}
}
