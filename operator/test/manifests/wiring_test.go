package manifests

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	sigsyaml "sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/devserver"
)

// find returns the object of that kind, namespace and name, or fails the test.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && u.GetNamespace() == ns && u.GetName() == name {
			return u
		}
	}
	t.Fatalf("no %s %s/%s", kind, ns, name)
	return nil
}

// mounted returns the ConfigMap a workload mounts as volume, and where its first container mounts it.
func mounted(t *testing.T, objs []*unstructured.Unstructured, kind, ns, name, volume string) (*corev1.ConfigMap, string) {
	t.Helper()
	workloads, err := Workloads([]*unstructured.Unstructured{find(t, objs, kind, ns, name)})
	if err != nil {
		t.Fatal(err)
	}
	spec := workloads[0].Template.Spec
	var cmName, path string
	for _, v := range spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	for _, m := range spec.Containers[0].VolumeMounts {
		if m.Name == volume {
			path = m.MountPath
		}
	}
	if cmName == "" || path == "" {
		t.Fatalf("%s %s/%s does not mount a ConfigMap as volume %s", kind, ns, name, volume)
	}
	var cm corev1.ConfigMap
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(find(t, objs, "ConfigMap", ns, cmName).Object, &cm); err != nil {
		t.Fatal(err)
	}
	return &cm, path
}

// writeConfigMap writes a ConfigMap's files into dir, as the kubelet mounts them.
func writeConfigMap(t *testing.T, cm *corev1.ConfigMap, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// run runs a tool built by `make tools` and returns its combined output.
func run(t *testing.T, name, tool string, args ...string) (string, error) {
	t.Helper()
	bin, err := devserver.Binary(name, tool)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

var rulesFound = regexp.MustCompile(`SUCCESS: (\d+) rules found`)

// TestConfigsAcceptedByTheirPrograms hands each overlay's Prometheus, Loki and Consul configuration, as
// the pods mount it, to the real programs' own checks: promtool (the scrape config and, through
// rule_files, the generated rules), loki -verify-config, consul validate.
func TestConfigsAcceptedByTheirPrograms(t *testing.T) {
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			objs := rendered(t, name).objs
			root := t.TempDir()

			config, configPath := mounted(t, objs, "Deployment", "monitoring", "prometheus", "config")
			rules, rulesPath := mounted(t, objs, "Deployment", "monitoring", "prometheus", "rules")
			writeConfigMap(t, config, filepath.Join(root, configPath))
			writeConfigMap(t, rules, filepath.Join(root, rulesPath))
			out, err := run(t, "promtool", "prometheus", "check", "config", filepath.Join(root, configPath, "prometheus.yml"))
			if err != nil {
				t.Errorf("promtool check config: %v\n%s", err, out)
			}
			if m := rulesFound.FindStringSubmatch(out); m == nil || m[1] == "0" {
				t.Errorf("promtool found no rules through rule_files (rules mounted at %s):\n%s", rulesPath, out)
			}

			loki, lokiPath := mounted(t, objs, "Deployment", "monitoring", "loki", "config")
			writeConfigMap(t, loki, filepath.Join(root, lokiPath))
			if out, err := run(t, "loki", "loki", "-verify-config", "-config.file="+filepath.Join(root, lokiPath, "loki.yaml")); err != nil {
				t.Errorf("loki -verify-config: %v\n%s", err, out)
			}

			consul, consulPath := mounted(t, objs, "StatefulSet", "consul", "consul-server", "config")
			writeConfigMap(t, consul, filepath.Join(root, consulPath))
			if out, err := run(t, "consul", "consul", "validate", filepath.Join(root, consulPath)); err != nil {
				t.Errorf("consul validate: %v\n%s", err, out)
			}
			// Servers expected equals servers run, or the cluster never elects a leader (or splits).
			var server struct {
				BootstrapExpect int      `json:"bootstrap_expect"`
				RetryJoin       []string `json:"retry_join"`
			}
			if err := sigsyaml.Unmarshal([]byte(consul.Data["server.json"]), &server); err != nil {
				t.Fatal(err)
			}
			replicas, _, _ := unstructured.NestedInt64(find(t, objs, "StatefulSet", "consul", "consul-server").Object, "spec", "replicas")
			if int64(server.BootstrapExpect) != replicas || int64(len(server.RetryJoin)) != replicas {
				t.Errorf("Consul: %d replicas, bootstrap_expect %d, %d retry_join addresses; want all equal", replicas, server.BootstrapExpect, len(server.RetryJoin))
			}
		})
	}
}

// TestGeneratedDashboardsAndRulesProvisioned: what Grafana and Prometheus mount is exactly what
// dashboards/cmd/generate wrote (every file, unchanged), and Grafana's dashboard provider reads the
// directory the dashboards are mounted at.
func TestGeneratedDashboardsAndRulesProvisioned(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	generated := func(sub string) map[string]string {
		files, err := filepath.Glob(filepath.Join(root, "dashboards", "generated", sub, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no generated files in dashboards/generated/%s: %v", sub, err)
		}
		out := map[string]string{}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Base(f)] = string(b)
		}
		return out
	}
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			objs := rendered(t, name).objs
			dashboards, dashboardsPath := mounted(t, objs, "Deployment", "monitoring", "grafana", "dashboards")
			if diff := cmp.Diff(generated("grafana"), dashboards.Data); diff != "" {
				t.Errorf("dashboards Grafana mounts differ from dashboards/generated/grafana (-generated +mounted):\n%s", diff)
			}
			rules, _ := mounted(t, objs, "Deployment", "monitoring", "prometheus", "rules")
			if diff := cmp.Diff(generated("prometheus"), rules.Data); diff != "" {
				t.Errorf("rules Prometheus mounts differ from dashboards/generated/prometheus (-generated +mounted):\n%s", diff)
			}
			providers, _ := mounted(t, objs, "Deployment", "monitoring", "grafana", "dashboard-providers")
			var p struct {
				Providers []struct {
					Options struct {
						Path string `json:"path"`
					} `json:"options"`
				} `json:"providers"`
			}
			if err := sigsyaml.Unmarshal([]byte(providers.Data["dashboards.yaml"]), &p); err != nil {
				t.Fatal(err)
			}
			if len(p.Providers) != 1 || p.Providers[0].Options.Path != dashboardsPath {
				t.Errorf("dashboard providers %+v; want one reading %s", p.Providers, dashboardsPath)
			}
		})
	}
}

var clusterAddress = regexp.MustCompile(`([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)`)

// TestInClusterAddressesExist: every <service>.<namespace>.svc.cluster.local:<port> the manifests name
// (service targets, LOKI_URL, the operator's Consul address, Grafana's datasources) is a port of a
// Service they define.
func TestInClusterAddressesExist(t *testing.T) {
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			o := rendered(t, name)
			ports := map[string]bool{}
			for _, u := range o.objs {
				if u.GetKind() != "Service" {
					continue
				}
				list, _, _ := unstructured.NestedSlice(u.Object, "spec", "ports")
				for _, p := range list {
					port, _, _ := unstructured.NestedInt64(p.(map[string]any), "port")
					ports[fmt.Sprintf("%s.%s:%d", u.GetName(), u.GetNamespace(), port)] = true
				}
			}
			matches := clusterAddress.FindAllStringSubmatch(string(o.yaml), -1)
			if len(matches) == 0 {
				t.Fatal("no in-cluster addresses found; the pattern is wrong")
			}
			seen := map[string]bool{}
			for _, m := range matches {
				addr := m[1] + "." + m[2] + ":" + m[3]
				if !seen[addr] && !ports[addr] {
					t.Errorf("overlay %s names %s, but defines no Service %s/%s with port %s", name, m[0], m[2], m[1], m[3])
				}
				seen[addr] = true
			}
			t.Logf("overlay %s: %d distinct in-cluster addresses, all Services' ports", name, len(seen))
		})
	}
}

// TestOperatorUsesGeneratedCRDAndRBAC: the overlays carry every CRD controller-gen wrote and exactly the
// generated roles, bound to the ServiceAccount the operator runs as.
func TestOperatorUsesGeneratedCRDAndRBAC(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var generated []*unstructured.Unstructured
	files, _ := filepath.Glob(filepath.Join(root, "operator", "config", "crd", "bases", "*.yaml"))
	files = append(files, filepath.Join(root, "operator", "config", "rbac", "role.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		generated = append(generated, objs...)
	}
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			objs := rendered(t, name).objs
			for _, g := range generated {
				got := find(t, objs, g.GetKind(), g.GetNamespace(), g.GetName())
				for _, field := range []string{"spec", "rules"} {
					if diff := cmp.Diff(g.Object[field], got.Object[field]); diff != "" {
						t.Errorf("%s differs from the generated file (-generated +overlay):\n%s", ID(g), diff)
					}
				}
			}
			deploy := find(t, objs, "Deployment", "meshplane-system", "meshplane-operator")
			sa, _, _ := unstructured.NestedString(deploy.Object, "spec", "template", "spec", "serviceAccountName")
			for _, g := range generated {
				if g.GetKind() != "ClusterRole" && g.GetKind() != "Role" {
					continue
				}
				bound := false
				for _, b := range objs {
					if b.GetKind() != g.GetKind()+"Binding" || b.GetNamespace() != g.GetNamespace() {
						continue
					}
					ref, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
					subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
					for _, s := range subjects {
						s := s.(map[string]any)
						if ref == g.GetName() && s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == deploy.GetNamespace() {
							bound = true
						}
					}
				}
				if !bound {
					t.Errorf("%s is not bound to ServiceAccount %s/%s, which the operator runs as", ID(g), deploy.GetNamespace(), sa)
				}
			}
		})
	}
}

// versions reads scripts/versions.env.
func versions(t *testing.T) map[string]string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "scripts", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}

// TestImagesAreTheTestedVersions: the Prometheus, Loki, Consul and NATS images run the versions whose binaries
// the tests here build and run (scripts/versions.env), so a configuration accepted here is accepted there.
func TestImagesAreTheTestedVersions(t *testing.T) {
	v := versions(t)
	// Prometheus 3.x is tagged v0.3MM.P as a Go module for release v3.MM.P.
	prom := v["PROMETHEUS_VERSION"]
	minor, patch, ok := strings.Cut(strings.TrimPrefix(prom, "v0.3"), ".")
	if n, err := strconv.Atoi(minor); !ok || err != nil || !strings.HasPrefix(prom, "v0.3") {
		t.Fatalf("PROMETHEUS_VERSION %q is not a Prometheus 3 module version", prom)
	} else {
		minor = strconv.Itoa(n)
	}
	want := map[string]string{
		"prometheus": "quay.io/prometheus/prometheus:v3." + minor + "." + patch,
		"loki":       "docker.io/grafana/loki:" + strings.TrimPrefix(v["LOKI_VERSION"], "v"),
		"consul":     "docker.io/hashicorp/consul:" + strings.TrimPrefix(v["CONSUL_VERSION"], "v"),
		"nats":       "docker.io/library/nats:" + strings.TrimPrefix(v["NATS_SERVER_VERSION"], "v") + "-alpine",
	}
	for _, name := range Overlays {
		workloads, err := Workloads(rendered(t, name).objs)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, w := range workloads {
			for _, c := range w.Template.Spec.Containers {
				if _, ok := want[c.Name]; ok {
					got[c.Name] = c.Image
				}
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("overlay %s: images (-tested +manifests):\n%s", name, diff)
		}
	}
}

// TestIstioInstallEnablesDashboardStats renders the Istio installation offline (`istioctl manifest
// generate`, which also validates the IstioOperator) and checks the mesh config it produces: every Envoy
// cluster stat the generated dashboards and rules query passes the sidecars' proxyStatsMatcher (Istio
// drops these stats by default), and the CNI plugin the shop's baseline Pod Security level relies on is
// installed.
func TestIstioInstallEnablesDashboardStats(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "istioctl", "istio", "manifest", "generate", "-f", filepath.Join(root, "manifests", "base", "istio", "install", "istiooperator.yaml"))
	if err != nil {
		t.Fatalf("istioctl manifest generate: %v\n%s", err, out)
	}
	objs, err := Decode([]byte(out[strings.Index(out, "apiVersion"):]))
	if err != nil {
		t.Fatal(err)
	}
	var mesh struct {
		DefaultConfig struct {
			ProxyStatsMatcher struct {
				InclusionRegexps  []string `json:"inclusionRegexps"`
				InclusionPrefixes []string `json:"inclusionPrefixes"`
				InclusionSuffixes []string `json:"inclusionSuffixes"`
			} `json:"proxyStatsMatcher"`
		} `json:"defaultConfig"`
		EnablePrometheusMerge *bool `json:"enablePrometheusMerge"`
	}
	meshYAML, _, _ := unstructured.NestedString(find(t, objs, "ConfigMap", "istio-system", "istio").Object, "data", "mesh")
	if err := sigsyaml.Unmarshal([]byte(meshYAML), &mesh); err != nil {
		t.Fatal(err)
	}
	if mesh.EnablePrometheusMerge != nil && !*mesh.EnablePrometheusMerge {
		t.Error("enablePrometheusMerge is off: Prometheus could not scrape the shop through STRICT mTLS")
	}
	find(t, objs, "DaemonSet", "istio-system", "istio-cni-node")

	m := mesh.DefaultConfig.ProxyStatsMatcher
	var regexps []*regexp.Regexp
	for _, r := range m.InclusionRegexps {
		regexps = append(regexps, regexp.MustCompile("^(?:"+r+")$")) // Envoy matches the whole name
	}
	included := func(stat string) bool {
		for _, r := range regexps {
			if r.MatchString(stat) {
				return true
			}
		}
		return slices.ContainsFunc(m.InclusionPrefixes, func(p string) bool { return strings.HasPrefix(stat, p) }) ||
			slices.ContainsFunc(m.InclusionSuffixes, func(s string) bool { return strings.HasSuffix(stat, s) })
	}
	for _, metric := range envoyClusterMetrics(t, root) {
		// Envoy's name is cluster.<cluster>.<stat>, with dots where Prometheus has underscores; which
		// underscores were dots is not recorded, so any spelling may match.
		ok := false
		for _, stat := range dotted(strings.TrimPrefix(metric, "envoy_cluster_")) {
			if included("cluster.outbound|9020||orders.shop.svc.cluster.local." + stat) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("the dashboards query %s, but proxyStatsMatcher %+v drops it", metric, m)
		}
	}
}

var envoyMetric = regexp.MustCompile(`envoy_cluster_[a-z_]+`)

// envoyClusterMetrics lists the Envoy cluster metrics the generated dashboards and rules use.
func envoyClusterMetrics(t *testing.T, root string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, "dashboards", "generated", "*", "*"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, envoyMetric.FindAllString(string(b), -1)...)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		t.Fatal("the generated dashboards query no envoy_cluster_ metric; nothing to check")
	}
	return out
}

// dotted returns every spelling of s with some of its underscores as dots.
func dotted(s string) []string {
	out := []string{""}
	for _, part := range strings.Split(s, "_") {
		var next []string
		for _, prefix := range out {
			if prefix == "" {
				next = append(next, part)
				continue
			}
			next = append(next, prefix+"_"+part, prefix+"."+part)
		}
		out = next
	}
	return out
}

var configDocEnv = regexp.MustCompile("(?m)^\\| `([A-Z0-9_]+)` \\|")

// TestSettingsAreTheProgramsOwn: every environment variable the manifests give a shop container is a
// setting its Config documents (`<service> -config-doc`, the source of the settings tables in docs/services.md), and
// the operator's Deployment args are flags the manager defines, so a typo cannot silently fall back to
// a default (127.0.0.1 listen addresses would make every probe fail).
func TestSettingsAreTheProgramsOwn(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	documented := map[string][]string{}
	settings := func(service string) []string {
		if env, ok := documented[service]; ok {
			return env
		}
		cmd := exec.CommandContext(ctx, "go", "run", "./services/"+service, "-config-doc")
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go run ./services/%s -config-doc: %v", service, err)
		}
		for _, m := range configDocEnv.FindAllStringSubmatch(string(out), -1) {
			documented[service] = append(documented[service], m[1])
		}
		return documented[service]
	}
	manager := filepath.Join(t.TempDir(), "manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", manager, "./cmd/manager")
	build.Dir = filepath.Join(root, "operator")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the manager: %v\n%s", err, out)
	}
	for _, name := range Overlays {
		workloads, err := Workloads(rendered(t, name).objs)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range workloads {
			for _, c := range w.Template.Spec.Containers {
				_, image, ok := strings.Cut(c.Image, "meshplane/")
				if !ok {
					continue
				}
				program, _, _ := strings.Cut(image, ":")
				if program == "operator" {
					// -h after the args: the flag set parses every arg first, then stops with its usage.
					out, _ := exec.CommandContext(ctx, manager, append(slices.Clone(c.Args), "-h")...).CombinedOutput()
					complaint, _, usage := strings.Cut(string(out), "Usage of manager")
					if !usage || strings.TrimSpace(complaint) != "" {
						t.Errorf("overlay %s: %s: the manager refuses args %q: %s", name, ID(w.Object), c.Args, strings.TrimSpace(complaint))
					}
					continue
				}
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "GO") { // the Go runtime's own (GOMEMLIMIT)
						continue
					}
					if !slices.Contains(settings(program), e.Name) {
						t.Errorf("overlay %s: %s sets %s, which is not a setting of %s (`go run ./services/%s -config-doc`)", name, ID(w.Object), e.Name, program, program)
					}
				}
			}
		}
	}
}

// TestGrafanaAdminSecretCommand runs the command the docs give for Grafana's admin password (`kubectl -n
// monitoring create secret generic grafana-admin --from-literal=password=...`) against the API server:
// it is accepted, and the Secret it makes holds the key prod's Grafana requires.
func TestGrafanaAdminSecretCommand(t *testing.T) {
	objs := rendered(t, "prod").objs
	createNamespaces(t, objs)
	stdout, stderr, err := kubectl(t, nil, "-n", "monitoring", "create", "secret", "generic", "grafana-admin",
		"--from-literal=password=s3cret", "--dry-run=server", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl create secret: %v: %s", err, stderr)
	}
	var secret corev1.Secret
	if err := sigsyaml.Unmarshal([]byte(stdout), &secret); err != nil {
		t.Fatal(err)
	}
	workloads, err := Workloads([]*unstructured.Unstructured{find(t, objs, "Deployment", "monitoring", "grafana")})
	if err != nil {
		t.Fatal(err)
	}
	var ref *corev1.SecretKeySelector
	for _, e := range workloads[0].Template.Spec.Containers[0].Env {
		if e.Name == "GF_SECURITY_ADMIN_PASSWORD" && e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
	}
	switch {
	case ref == nil:
		t.Fatal("prod's Grafana does not take GF_SECURITY_ADMIN_PASSWORD from a Secret")
	case ref.Optional != nil && *ref.Optional:
		t.Error("prod's Grafana starts without its admin Secret")
	case secret.Namespace != "monitoring" || secret.Name != ref.Name || string(secret.Data[ref.Key]) != "s3cret":
		t.Errorf("the command makes Secret %s/%s with keys %v; Grafana reads key %s of Secret monitoring/%s", secret.Namespace, secret.Name, slices.Sorted(maps.Keys(secret.Data)), ref.Key, ref.Name)
	}
}
