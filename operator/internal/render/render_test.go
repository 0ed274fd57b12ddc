package render_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/internal/render"
	"meshplane.dev/operator/test/envtest"
	"meshplane.dev/operator/test/istioctl"
)

var (
	update = flag.Bool("update", false, "rewrite the golden files from the current output")
	env    *envtest.Env
)

func TestMain(m *testing.M) {
	flag.Parse()
	env = envtest.MustStart(envtest.Options{})
	code := m.Run()
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

func renderFiles(t *testing.T, paths ...string) ([]byte, render.Problems) {
	t.Helper()
	in, problems := render.Load(paths, nil, "default")
	rendered, invalid := render.Render(in, desiredstate.PlatformDefaults())
	if problems = append(problems, invalid...); len(problems) > 0 {
		return nil, problems
	}
	var out bytes.Buffer
	if err := render.WriteYAML(&out, rendered); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), nil
}

// Each testdata/<case>.yaml (Services and TrafficPolicies) renders to testdata/<case>.golden.yaml. The
// golden output must also be what Istio accepts: every object passes Istio's CRD schemas on a real API
// server, and istioctl's analyzers find no error or warning in it together with the Services.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	namespaces := map[string]bool{}
	for _, input := range inputs {
		if strings.HasSuffix(input, ".golden.yaml") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(input), ".yaml")
		t.Run(name, func(t *testing.T) {
			got, problems := renderFiles(t, input)
			if problems != nil {
				t.Fatalf("render %s:\n%v", input, problems)
			}
			golden := strings.TrimSuffix(input, ".yaml") + ".golden.yaml"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Fatalf("render %s differs from %s (-want +got; go test -update rewrites it):\n%s", input, golden, diff)
			}

			// Istio's CRD schemas (including their CEL rules) accept every object.
			for _, u := range documents(t, want) {
				if ns := u.GetNamespace(); !namespaces[ns] {
					if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
						t.Fatal(err)
					}
					namespaces[ns] = true
				}
				if err := env.Client.Create(ctx, u, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
					t.Errorf("API server rejects golden %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
				}
			}

			// Istio's analyzers agree, with the Services the objects refer to.
			services := filepath.Join(t.TempDir(), "services.yaml")
			if err := os.WriteFile(services, servicesOf(t, input), 0o644); err != nil {
				t.Fatal(err)
			}
			msgs, err := istioctl.Analyze(golden, services)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if m.Level == "Error" || m.Level == "Warning" {
					t.Errorf("istioctl analyze %s: %s", golden, m)
				}
			}
		})
	}
}

func documents(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || string(bytes.TrimSpace(doc)) == "---" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := sigsyaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
}

func servicesOf(t *testing.T, input string) []byte {
	t.Helper()
	data, err := os.ReadFile(input)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, u := range documents(t, data) {
		if u.GetKind() == "Service" {
			b, err := sigsyaml.Marshal(u.Object)
			if err != nil {
				t.Fatal(err)
			}
			buf.WriteString("---\n")
			buf.Write(b)
		}
	}
	return buf.Bytes()
}

// Bad input: every problem at once, each as FILE: KIND NS/NAME: FIELD: message, and nothing rendered.
func TestProblems(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	services := write("services.yaml", `apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec: {selector: {app: orders}}
---
# A Deployment is skipped: render reads whole manifest directories.
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
`)
	policies := write("policies.yaml", `apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRef: {name: orders}
  timeout: 1s
  retries: {attempts: 2, perTryTimeout: 2s}
  circuitBreaker: {maxEjectionPercent: 0}
---
apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders-too, namespace: shop}
spec:
  targetRef: {name: orders}
---
apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: payments, namespace: shop}
spec:
  targetRef: {name: payments}
  mtls: {mode: STRICT}
  retry: {attempts: 1}
---
apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicies
metadata: {name: typo}
`)
	out, problems := renderFiles(t, services, policies)
	if out != nil {
		t.Errorf("rendered %d bytes despite problems, want nothing", len(out))
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	want := []string{
		policies + `: TrafficPolicy shop/payments: spec.retry: unknown field`,
		policies + `: document 4: unknown kind traffic.meshplane.dev/v1alpha1 TrafficPolicies (want traffic.meshplane.dev/v1alpha1 TrafficPolicy)`,
		policies + `: TrafficPolicy shop/orders: spec.retries.perTryTimeout: Invalid value: "2s": spec.retries.perTryTimeout must not exceed spec.timeout (1s): each attempt must fit in the whole request`,
		policies + `: TrafficPolicy shop/orders: spec.circuitBreaker.maxEjectionPercent: Invalid value: 0: must be between 1 and 100 (Istio reads 0 as its 10% default; set consecutiveErrors: 0 to stop ejecting)`,
		policies + `: TrafficPolicy shop/orders-too: spec.targetRef.name: Invalid value: "orders": Service shop/orders is already governed by TrafficPolicy shop/orders; one Service takes one policy`,
		policies + `: TrafficPolicy shop/payments: spec.targetRef.name: Invalid value: "payments": Service shop/payments not found: mtls and allow need its selector to pick the workloads`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// Bad routes and faults: each problem once, at the field to change, before anything is rendered.
func TestRouteProblems(t *testing.T) {
	policies := filepath.Join(t.TempDir(), "payments.yaml")
	if err := os.WriteFile(policies, []byte(`apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: payments, namespace: shop}
spec:
  targetRef: {name: payments}
  timeout: 1s
  routes:
  - name: charge
    match: {grpc: {method: Charge}}
    retries: {attempts: 0}
  - name: charge-too
    match: {grpc: {method: Charge}}
    timeout: 2s
  - name: everything
    match: {http: {path: {type: Prefix, value: /}}}
    timeout: 1s
  - name: nothing
    match: {}
    timeout: 1s
  - name: slow-tries
    match: {grpc: {method: GetCharge}}
    retries: {attempts: 1, perTryTimeout: 2s}
  - name: chaos
    match: {grpc: {method: Refund}}
    fault:
      delay: {fixedDelay: 1s, percentage: 150}
      abort: {percentage: 10}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, problems := renderFiles(t, policies)
	if out != nil {
		t.Errorf("rendered %d bytes despite problems, want nothing", len(out))
	}
	var got []string
	for _, p := range problems {
		got = append(got, strings.TrimPrefix(p.String(), policies+": TrafficPolicy shop/payments: "))
	}
	want := []string{
		`spec.routes[2].match.http: Invalid value: matches every request: set a path other than the prefix /, a method or headers, or set these fields at the top level of spec`,
		`spec.routes[3].match: Invalid value: set exactly one of grpc (gRPC calls by method or service) and http (HTTP requests by path, method and headers)`,
		`spec.routes[5].fault.delay.percentage: Invalid value: 150: must be between 0 and 100`,
		`spec.routes[5].fault.abort.code: Required value: what aborted calls fail with: a gRPC code such as UNAVAILABLE, or an HTTP status such as "503"`,
		`spec.routes: Invalid value: routes ["charge", "charge-too"] match the same calls: only the first would ever apply; merge them or tell their matches apart`,
		`spec.routes: Invalid value: routes ["slow-tries"] set retries.perTryTimeout above spec.timeout (1s), which they inherit: each attempt must fit in the whole request; give them a timeout of their own or a shorter perTryTimeout`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// A directory reads its YAML files in name order, stdin reads with -, and the output does not depend on
// the order of the inputs.
func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"b-policy.yaml":  "apiVersion: traffic.meshplane.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: orders}\nspec: {targetRef: {name: orders}, mtls: {mode: STRICT}}\n",
		"a-service.yml":  "apiVersion: v1\nkind: Service\nmetadata: {name: orders}\nspec: {selector: {app: orders}}\n",
		"notes.txt":      "not YAML, not read",
		"c-empty.yaml":   "# nothing\n---\n",
		"d-catalog.json": `{"apiVersion":"traffic.meshplane.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"catalog","namespace":"web"},"spec":{"targetRef":{"name":"catalog"}}}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in, problems := render.Load([]string{dir}, nil, "shop")
	if problems != nil {
		t.Fatal(problems)
	}
	var got []string
	for _, p := range in.Policies {
		got = append(got, p.File+" "+p.Namespace+"/"+p.Name)
	}
	for _, s := range in.Services {
		got = append(got, s.File+" "+s.Namespace+"/"+s.Name)
	}
	want := []string{
		filepath.Join(dir, "b-policy.yaml") + " shop/orders",
		filepath.Join(dir, "d-catalog.json") + " web/catalog",
		filepath.Join(dir, "a-service.yml") + " shop/orders",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("loaded (-want +got):\n%s", diff)
	}

	stdin := strings.NewReader("apiVersion: traffic.meshplane.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: x}\nspec: {targetRef: {name: x}, bogus: 1}\n")
	_, problems = render.Load([]string{render.Stdin}, stdin, "shop")
	if len(problems) != 1 || problems[0].String() != "<stdin>: TrafficPolicy shop/x: spec.bogus: unknown field" {
		t.Errorf("stdin problems = %q, want one naming <stdin> and spec.bogus", problems)
	}

	_, problems = render.Load([]string{filepath.Join(dir, "missing.yaml")}, nil, "shop")
	if len(problems) != 1 || !strings.Contains(problems[0].String(), "no such file") {
		t.Errorf("missing file problems = %q, want one saying no such file", problems)
	}
}

// Bad canaries: render names each field as the API server would, before anything is rendered.
func TestCanaryProblems(t *testing.T) {
	policies := filepath.Join(t.TempDir(), "payments.yaml")
	if err := os.WriteFile(policies, []byte(`apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: payments, namespace: shop}
spec:
  targetRef: {name: payments}
  split:
  - {subset: v1, labels: {version: v1}, weight: 100}
  - {subset: v2, labels: {version: v2}, weight: 0}
  canary:
    stable: v1
    candidate: v3
    steps: [25, 10, 50]
    interval: 20s
    analysis: {objective: "100", maxBurnRate: "10", minRequests: 100}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, problems := renderFiles(t, policies)
	var got []string
	for _, p := range problems {
		got = append(got, strings.TrimPrefix(p.String(), policies+": TrafficPolicy shop/payments: "))
	}
	want := []string{
		`spec.canary.steps: Invalid value: [25,10,50]: must increase strictly, e.g. [10, 25, 50, 100]`,
		`spec.canary.steps: Invalid value: [25,10,50]: must end at 100 (the candidate serves every call once promoted), not 50`,
		`spec.canary.analysis.objective: Invalid value: "100": 100 is not a percentage strictly between 0 and 100, such as 99.9`,
		`spec.canary.interval: Invalid value: "20s": 20s is shorter than twice analysis.scrapeInterval (15s): a check needs two scrapes within the step to measure a rate`,
		`spec.canary.candidate: Invalid value: "v3": v3 is not a subset of spec.split`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// --explain prints a canary's plan: its steps, the thresholds derived from the SLO, and how long
// promotion takes at the fastest and at worst.
func TestExplainCanary(t *testing.T) {
	in, problems := render.Load([]string{filepath.Join("testdata", "canary.yaml")}, nil, "default")
	rendered, invalid := render.Render(in, desiredstate.PlatformDefaults())
	if problems = append(problems, invalid...); len(problems) > 0 {
		t.Fatal(problems)
	}
	var out bytes.Buffer
	if err := render.WriteExplain(&out, rendered, nil); err != nil {
		t.Fatal(err)
	}
	want := `Canary shop/payments (the operator moves the weights; render shows the start, v2 at 0%):
  steps: 10% → 25% → 50% → 100% of calls to v2 (the rest to v1), 1m0s each
  pass: success rate ≥ 99% over each step (objective 99.9%, max burn rate 10: error ratio ≤ 1%)
  pass: error ratio at most 0.5pp above v1's over the same window
  pass: p99 latency ≤ 300ms
  hold: a check of fewer than 100 calls to v2, or without metrics, holds; after 5 holds in a row each further one counts as a failed check
  roll back: at 2 failed checks, at once
  promotion: 4m0s at the fastest; worst case 25m0s (Prometheus outages hold longer)
`
	if got := out.String(); !strings.HasSuffix(got, want) {
		t.Errorf("--explain ends with:\n%s\nwant:\n%s", got, want)
	}
}
