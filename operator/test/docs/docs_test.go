package docs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/test/envtest"
)

// account says how one command shown in the docs is kept true. Exactly one of its fields is set.
type account struct {
	// run: this check runs it, in the order of its page, from the repository root, against a real API
	// server (KUBECONFIG) with the binaries `make tools` builds first on PATH; it must exit 0 and print
	// what the page shows after it.
	run bool
	// test names the test that runs it, as "<package dir> <TestName>"; the check makes sure it exists.
	test string
	// notHere says why it cannot run on this machine.
	notHere string
}

const (
	noDocker  = "needs Docker and a network (kind, image builds)"
	noCluster = "needs a cluster that runs pods"
	noGrafana = "needs a Grafana server; no Grafana binary builds from the module proxy here"
)

// accounts maps every command of every page to how it is kept true. A command missing here fails the
// check, and so does an entry no page shows any more.
var accounts = map[string]account{
	// README.md
	"make up":   {test: "operator/localplatform TestUpStatusDown"}, // runs the `meshplane up` binary `make up` builds and starts
	"make test": {notHere: "it is what runs this check: .ci/run calls it on a clean clone"},

	// docs/trafficpolicy.md
	"go run ./operator/cmd/meshplane render -f operator/config/samples":                                                                                                      {run: true},
	"go run ./operator/cmd/meshplane render -f operator/config/samples --explain":                                                                                            {run: true},
	"go run ./operator/cmd/meshplane render -f - < operator/config/samples/traffic_v1alpha1_trafficpolicy_catalog.yaml":                                                      {run: true},
	"go run ./operator/cmd/meshplane check -f operator/config/samples":                                                                                                       {run: true},
	"go run ./operator/cmd/meshplane check --namespace shop -f manifests/base/shop -f manifests/components/example-trafficpolicies --graph docs/callgraph/shop.yaml --paths": {run: true},

	// docs/operating.md
	"make cluster-up": {notHere: noDocker},
	"kubectl --context kind-meshplane -n monitoring port-forward svc/grafana 3000:3000": {notHere: noCluster},
	"kubectl --context kind-meshplane -n shop port-forward svc/gateway 8080:8080":       {notHere: noCluster},
	"kubectl --context kind-meshplane get trafficpolicies -A":                           {notHere: noDocker},
	"make cluster-down": {notHere: noDocker},
	"istioctl install -y -f manifests/base/istio/install/istiooperator.yaml":                                         {notHere: noCluster + " (istioctl waits for istiod's rollout)"},
	"kubectl apply --server-side -k operator/config/crd":                                                             {run: true},
	"kubectl wait --for condition=Established crd/trafficpolicies.traffic.meshplane.dev":                             {run: true},
	`kubectl -n monitoring create secret generic grafana-admin --from-literal=password="$(openssl rand -base64 24)"`: {run: true},
	"kubectl apply --server-side -k manifests/overlays/prod":                                                         {run: true},
	"kubectl apply --server-side -f operator/config/crd/bases":                                                       {run: true},
	"kubectl create namespace meshplane-system":                                                                      {run: true},
	"kubectl apply --server-side -k operator/config/rbac":                                                            {run: true},
	"go run ./operator/cmd/manager --kubeconfig PATH":                                                                {run: true},
	"kubectl create namespace shop":                                                                                  {run: true},
	"kubectl apply -f operator/config/samples":                                                                       {run: true},
	"kubectl get tp -n shop":                                                                                         {run: true},
	`kubectl -n shop create secret generic orders-db --from-literal=password="$ORDERS_DB_PASSWORD"`:                  {notHere: noCluster + " (and the CloudNativePG operator)"},
	`kubectl -n shop create secret generic payments-db --from-literal=password="$PAYMENTS_DB_PASSWORD"`:              {notHere: noCluster + " (and the CloudNativePG operator)"},
	`kubectl -n shop create secret generic fulfillment-db --from-literal=password="$FULFILLMENT_DB_PASSWORD"`:        {notHere: noCluster + " (and the CloudNativePG operator)"},

	// docs/local-platform.md
	"make drill": {test: "operator/localplatform TestUpStatusDown"},
	"meshplane inforce --istiod http://127.0.0.1:15080 -n shop payments": {test: "operator/localplatform/scenario TestInForce"},

	// docs/services.md: the shop's processes listen on fixed default ports, which this check must not
	// assume free; the tests below run the same programs on free ports.
	`curl -X PUT localhost:9031/admin/faults -d '[{"target":"Charge","errorRate":1}]'`:                 {test: "services/shoptest TestShop"},
	`curl -X PUT localhost:8081/admin/faults -d '[{"target":"GET /v1/products","delay":"300ms"}]'`:     {test: "services/shoptest TestShop"},
	"curl -X DELETE localhost:9031/admin/faults":                                                       {test: "services/shoptest TestShop"},
	"go run ./services/payments":                                                                       {test: "services/payments TestRunServesAndDrains"},
	"curl -s localhost:9031/readyz; curl -s localhost:9031/metrics | grep meshplane_payments":          {test: "services/payments TestRunServesAndDrains"},
	"go run ./services/payments -grpc-addr 127.0.0.1:9130 -admin-addr 127.0.0.1:9131 -log-level debug": {test: "services/payments TestRunServesAndDrains"},
	"go run ./services/catalog &  go run ./services/payments &":                                        {test: "services/shoptest TestShop"},
	"go run ./services/orders &   go run ./services/gateway &":                                         {test: "services/shoptest TestShop"},
	"curl -s localhost:8080/v1/products":                                                               {test: "services/shoptest TestShop"},
	`curl -si localhost:8080/v1/orders -H 'Content-Type: application/json' -H 'Idempotency-Key: k1' -d '{"items":[{"productId":"moka-pot","quantity":1}],"cardToken":"tok_visa"}'`:                                                                                          {test: "services/shoptest TestShop"},
	`docker run -d --name shop-db -p 127.0.0.1:5432:5432 -e POSTGRES_PASSWORD=dev -e ORDERS_DB_PASSWORD=dev -e PAYMENTS_DB_PASSWORD=dev -e FULFILLMENT_DB_PASSWORD=dev -v "$PWD/manifests/components/postgres/init:/docker-entrypoint-initdb.d:ro" postgres:15.18-bookworm`: {notHere: noDocker + "; operator/test/manifests TestDevDatabaseInitServesTheServices runs the same init script against Debian's PostgreSQL"},
	"export DATABASE_PASSWORD=dev":                                                                   {test: "services/shoptest TestShop"},
	"go run ./services/loadgen -rate 20 -duration 30s":                                               {test: "services/loadgen TestRunBoundedPrintsSummary"},
	"bin=$(scripts/tools.sh --print-bin)":                                                            {test: "services/shoptest TestShop"},
	"$bin/consul agent -dev -client 127.0.0.1 &":                                                     {test: "services/shoptest TestShop"},
	"export CONSUL_HTTP_ADDR=127.0.0.1:8500 CONSUL_REGISTER=true LOKI_URL=http://127.0.0.1:3100":     {test: "services/shoptest TestShop"},
	"PAYMENTS_TARGET=consul:///payments CATALOG_TARGET=consul:///catalog go run ./services/orders &": {test: "services/shoptest TestShop"},
	"ORDERS_TARGET=consul:///orders CATALOG_TARGET=consul:///catalog go run ./services/gateway &":    {test: "services/shoptest TestShop"},

	// dashboards/README.md
	`for f in dashboards/generated/grafana/*.json; do jq '{dashboard: ., overwrite: true}' "$f" | curl -sf -X POST "$GRAFANA_URL/api/dashboards/db" -H "Authorization: Bearer $GRAFANA_TOKEN" -H 'Content-Type: application/json' -d @-; done`: {notHere: noGrafana},
	"kubectl create configmap meshplane-dashboards -n monitoring --from-file=dashboards/generated/grafana/":                                                                                                                                    {run: true},
	"kubectl label configmap meshplane-dashboards -n monitoring grafana_dashboard=1":                                                                                                                                                           {run: true},
	`{ printf 'apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: meshplane\nspec:\n'; sed -e '/^#/d' -e 's/^/  /' dashboards/generated/prometheus/meshplane-rules.yaml; } | kubectl apply -n monitoring -f -`:     {notHere: "needs the Prometheus Operator's PrometheusRule CRD in the cluster"},
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.work not found above the working directory")
		}
		dir = parent
	}
}

func pages(t *testing.T) (string, []Page) {
	t.Helper()
	root := repoRoot(t)
	ps, err := Pages(root)
	if err != nil {
		t.Fatal(err)
	}
	return root, ps
}

func TestLinksResolve(t *testing.T) {
	root, ps := pages(t)
	anchors := map[string]map[string]bool{}
	for _, p := range ps {
		anchors[p.Path] = p.Anchors()
	}
	for _, p := range ps {
		for _, l := range p.Links() {
			target := p.Path
			if l.Target != "" {
				target = path.Clean(path.Join(path.Dir(p.Path), l.Target))
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
					t.Errorf("%s: link to %s: no such file or directory", p.Path, l.Target)
					continue
				}
			}
			if l.Anchor != "" && strings.HasSuffix(target, ".md") && !anchors[target][l.Anchor] {
				t.Errorf("%s: link to %s#%s: %s has no such heading", p.Path, l.Target, l.Anchor, target)
			}
		}
	}
}

func TestReadmeIsShortAndLinksEveryPage(t *testing.T) {
	root, ps := pages(t)
	readme := slices.IndexFunc(ps, func(p Page) bool { return p.Path == "README.md" })
	if readme < 0 {
		t.Fatal("no README.md")
	}
	if n := strings.Count(ps[readme].Text, "\n"); n >= 200 {
		t.Errorf("README.md has %d lines, want under 200: reference material goes to docs/", n)
	}
	linked := map[string]bool{}
	for _, l := range ps[readme].Links() {
		linked[path.Clean(l.Target)] = true
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(docs, filepath.Join(root, "dashboards", "README.md")) {
		rel, _ := filepath.Rel(root, d)
		if !linked[filepath.ToSlash(rel)] {
			t.Errorf("README.md does not link %s", filepath.ToSlash(rel))
		}
	}
	if len(docs) == 0 {
		t.Error("docs/ holds no page")
	}
}

// The architecture diagram names every service that exists and every server the platform runs.
func TestArchitectureDiagramNamesWhatExists(t *testing.T) {
	root, ps := pages(t)
	var diagram string
	for _, p := range ps {
		if p.Path != "README.md" {
			continue
		}
		for _, b := range p.Blocks() {
			if b.Info == "mermaid" {
				diagram = strings.Join(b.Lines, "\n")
			}
		}
	}
	if diagram == "" {
		t.Fatal("README.md has no mermaid block")
	}
	mains, err := filepath.Glob(filepath.Join(root, "services", "*", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kube-apiserver", "istiod", "operator", "Consul", "Prometheus", "Loki", "Grafana", "TrafficPolicy"}
	for _, m := range mains {
		want = append(want, filepath.Base(filepath.Dir(m)))
	}
	for _, name := range want {
		if !strings.Contains(diagram, name) {
			t.Errorf("the README's architecture diagram does not name %s", name)
		}
	}
}

// Every command the pages show is accounted for, and every account is for a command a page shows.
func TestEveryCommandIsAccountedFor(t *testing.T) {
	root, ps := pages(t)
	shown := map[string]bool{}
	for _, p := range ps {
		for _, c := range p.Commands() {
			shown[c.Text] = true
			if _, ok := accounts[c.Text]; !ok {
				t.Errorf("%s:%d: command %q is run by nothing: add it to accounts in operator/test/docs (run here, a test that runs it, or why it cannot run here)", c.Page, c.Line, c.Text)
			}
		}
	}
	for text, a := range accounts {
		if !shown[text] {
			t.Errorf("accounts lists %q, which no page shows any more", text)
		}
		if a.test != "" {
			dir, name, _ := strings.Cut(a.test, " ")
			if !testExists(t, filepath.Join(root, filepath.FromSlash(dir)), name) {
				t.Errorf("%q: its test %s does not exist", text, a.test)
			}
		}
	}
}

func testExists(t *testing.T, dir, name string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^func ` + regexp.QuoteMeta(name) + `\(t \*testing\.T\)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if decl.Match(b) {
			return true
		}
	}
	return false
}

// sectionSetup is what a cluster already has where a page's section starts, as kubectl arguments: the
// namespace `istioctl install` creates (it cannot run here), the monitoring namespace the dashboards go to.
var sectionSetup = map[string][][]string{
	"docs/operating.md#install-on-a-cluster":               {{"create", "namespace", "istio-system"}},
	"dashboards/README.md#import-into-an-existing-grafana": {{"create", "namespace", "monitoring"}},
}

// The commands this check runs, in the pages' order, each page section against its own real API server
// (sections are alternatives: an existing cluster, or the operator from source).
func TestRunnableCommandsRun(t *testing.T) {
	root, ps := pages(t)
	bin := devserver.BinDir()
	tmp := t.TempDir()
	for _, p := range ps {
		var env *envtest.Env
		section := ""
		for _, c := range p.Commands() {
			if !accounts[c.Text].run {
				continue
			}
			// Only what talks to a cluster gets one (render runs offline).
			needsCluster := strings.Contains(c.Text, "kubectl") || strings.Contains(c.Text, "--kubeconfig")
			if needsCluster && (env == nil || c.Section != section) {
				section = c.Section
				env = envtest.Start(t, envtest.Options{})
				for _, args := range sectionSetup[p.Path+"#"+section] {
					if _, err := env.Kubectl(context.Background(), nil, args...); err != nil {
						t.Fatal(err)
					}
				}
			}
			environ := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
			if needsCluster {
				environ = append(environ, "KUBECONFIG="+env.Kubeconfig)
			}
			if !t.Run(fmt.Sprintf("%s:%d", p.Path, c.Line), func(st *testing.T) {
				if c.Text == "go run ./operator/cmd/manager --kubeconfig PATH" {
					startManager(st, t, root, tmp, env.Kubeconfig)
					return
				}
				runShown(st, root, environ, c)
			}) {
				return // the page's later commands build on this one
			}
		}
	}
}

// runShown runs a command through bash and compares its output with what the page shows: every shown
// line's fields, except a last AGE column, must match a line of the output. A page showing state that
// settles (policies becoming Ready) is polled until it matches, for up to a minute.
func runShown(t *testing.T, root string, environ []string, c Command) {
	t.Helper()
	wait.For(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", c.Text)
		cmd.Dir, cmd.Env = root, environ
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return wait.Stop(fmt.Errorf("%s:%d: %s: %w\n%s", c.Page, c.Line, c.Text, err, stderr.String()))
		}
		return matchShown(c.Output, stdout.String())
	})
}

func matchShown(shown []string, got string) error {
	if len(shown) == 0 {
		return nil
	}
	ageColumn := strings.HasSuffix(strings.TrimSpace(shown[0]), "AGE")
	fields := func(line string) string {
		f := strings.Fields(line)
		if ageColumn && len(f) > 0 {
			f = f[:len(f)-1]
		}
		return strings.Join(f, " ")
	}
	have := map[string]bool{}
	for _, line := range strings.Split(got, "\n") {
		have[fields(line)] = true
	}
	for _, line := range shown {
		if strings.TrimSpace(line) != "" && !have[fields(line)] {
			return fmt.Errorf("the page shows %q, the command printed:\n%s", line, got)
		}
	}
	return nil
}

// startManager runs the operator as the page shows — built once with go build rather than go run, so
// stopping it stops the manager itself — with PATH replaced by the kubeconfig and its metrics and probes
// on free loopback ports (the defaults, :8080 and :8081, may be taken on this machine). It runs until
// owner, the test of the whole page, ends: the page's later commands need it.
func startManager(t, owner *testing.T, root, tmp, kubeconfig string) {
	t.Helper()
	manager := filepath.Join(tmp, "manager")
	build := exec.Command("go", "build", "-o", manager, "./operator/cmd/manager")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./operator/cmd/manager: %v\n%s", err, out)
	}
	ports, err := devserver.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	probes := "127.0.0.1:" + strconv.Itoa(ports[1])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	proc, err := devserver.Run(ctx, devserver.Options{Dir: filepath.Join(tmp, "manager-run")}, devserver.Program{
		Name: "manager", Bin: manager, Addr: probes, Ready: devserver.HTTPReady("http://" + probes + "/readyz"),
		Args: []string{"--kubeconfig", kubeconfig, "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[0]),
			"--health-probe-bind-address=" + probes},
	})
	if err != nil {
		t.Fatal(err)
	}
	owner.Cleanup(func() { _ = proc.Stop() })
}
