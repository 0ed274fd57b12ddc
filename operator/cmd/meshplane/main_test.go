package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/operator/test/istioctl"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

const samples = "../../config/samples"

func meshplane(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, func(string) string { return "" }, strings.NewReader(stdin), &out, &errOut)
	if exit, ok := errors.AsType[*exitError](err); ok {
		code = exit.code
	} else if err != nil {
		t.Fatalf("meshplane %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("output differs from %s (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

// The samples render, byte for byte the same every time, and Istio's analyzers find nothing wrong with
// the result together with the samples' Services.
func TestRenderSamples(t *testing.T) {
	out, stderr, code := meshplane(t, "", "render", "-f", samples)
	if code != 0 || stderr != "" {
		t.Fatalf("render samples: exit %d, stderr:\n%s", code, stderr)
	}
	golden(t, "samples.golden.yaml", out)
	for range 3 {
		again, _, _ := meshplane(t, "", "render", "-f", samples)
		if again != out {
			t.Fatalf("render output changed between runs:\n%s", cmp.Diff(out, again))
		}
	}

	rendered := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(rendered, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	msgs, err := istioctl.Analyze(rendered, filepath.Join(samples, "shop_services.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Level == "Error" || m.Level == "Warning" {
			t.Errorf("istioctl analyze: %s", m)
		}
	}
}

func TestRenderExplain(t *testing.T) {
	out, stderr, code := meshplane(t, "", "render", "-f", samples, "--explain")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "samples.explain.txt", out)
	// The call-graph findings of `meshplane check` follow the table; they never change the exit status.
	out, stderr, code = meshplane(t, "", "render", "-f", "testdata/retry-storm.yaml", "--graph", "testdata/storm-graph.yaml", "--explain")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "storm.explain.txt", out)
}

// The default retry policy is a flag; a policy that sets retries keeps its own.
func TestRenderDefaultRetryFlags(t *testing.T) {
	out, stderr, code := meshplane(t, "", "render", "-f", samples, "--explain",
		"--default-retry-attempts=1", "--default-retry-on=connect-failure", "--default-per-try-timeout=250ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(out, "\n")
	catalog := strings.Fields(lines[1]) // shop/catalog leaves retries unset
	if want := []string{"shop/catalog", "catalog.shop.svc.cluster.local", "1s", "1", "(default)", "250ms", "connect-failure", "2", "500ms", "inherited", "-"}; !cmp.Equal(catalog, want) {
		t.Errorf("catalog with flag defaults = %q, want %q", catalog, want)
	}
	if orders := strings.Fields(lines[2]); orders[3] != "2" {
		t.Errorf("orders sets attempts 2 itself, got %q", orders)
	}

	_, stderr, code = meshplane(t, "", "render", "-f", samples, "--default-retry-on=sometimes")
	if code != 2 || !strings.Contains(stderr, "retryOn[0]") {
		t.Errorf("bad --default-retry-on: exit %d, stderr %q; want exit 2 naming retryOn[0]", code, stderr)
	}
}

// Invalid input: exit 1, nothing on stdout, every problem on stderr as FILE: KIND NS/NAME: FIELD: message.
func TestRenderInvalidInput(t *testing.T) {
	in := `apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRef: {name: orders}
  timeout: 1.5s
  retries: {attempts: 11}
  mtls: {mode: STRICT}
  colour: blue
`
	out, stderr, code := meshplane(t, in, "render", "-f", "-")
	if code != 1 || out != "" {
		t.Errorf("exit %d with %d bytes on stdout, want exit 1 and nothing", code, len(out))
	}
	want := `<stdin>: TrafficPolicy shop/orders: spec.colour: unknown field
<stdin>: TrafficPolicy shop/orders: spec.timeout: Invalid value: "1.5s": must be a duration such as 3s, 500ms or 1m30s (digits followed by h, m, s or ms)
<stdin>: TrafficPolicy shop/orders: spec.retries.attempts: Invalid value: 11: must be between 0 and 10
`
	if diff := cmp.Diff(want, stderr); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

func TestUsage(t *testing.T) {
	_, stderr, code := meshplane(t, "")
	if code != 2 || !strings.Contains(stderr, "render") {
		t.Errorf("no command: exit %d, stderr %q; want 2 and a list of commands", code, stderr)
	}
	_, stderr, code = meshplane(t, "", "deploy")
	if code != 2 || !strings.Contains(stderr, `unknown command "deploy"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = meshplane(t, "", "render")
	if code != 2 || !strings.Contains(stderr, "-f PATH") {
		t.Errorf("render without -f: exit %d, stderr %q; want 2 and usage", code, stderr)
	}
}

const (
	examples = "../../../manifests/components/example-trafficpolicies"
	shop     = "../../../manifests/base/shop"
	shopCall = "../../../docs/callgraph/shop.yaml"
)

// meshplane check on the samples and on the cluster manifests' example policies (with the shop's
// Services and its call graph): no finding. The example policies as they were before the check existed
// show what it found there; the retry storm shows every kind of finding and the exit status.
func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		golden string
		code   int
	}{
		{"samples", []string{"-f", samples}, "check-samples.txt", 0},
		{"samples, payments must not be repeated", []string{"-f", samples, "--non-idempotent", "shop/payments/Charge"}, "", 0},
		{"examples with the shop's Services and call graph", []string{"--namespace", "shop", "-f", shop, "-f", examples, "--graph", shopCall, "--paths"}, "check-examples.txt", 0},
		{"examples before the check", []string{"--namespace", "shop", "-f", shop, "-f", "testdata/examples-before-check.yaml", "--graph", shopCall}, "check-examples-before.txt", 1},
		{"examples before the check, as JSON", []string{"--namespace", "shop", "-f", shop, "-f", "testdata/examples-before-check.yaml", "--graph", shopCall, "-o", "json"}, "check-examples-before.json", 1},
		{"retry storm", []string{"-f", "testdata/retry-storm.yaml", "--graph", "testdata/storm-graph.yaml", "--paths"}, "check-storm.txt", 1},
		// The graph declares backend non-idempotent, and it is retried on unavailable and 5xx: an error.
		{"retry storm, failing on errors", []string{"-f", "testdata/retry-storm.yaml", "--graph", "testdata/storm-graph.yaml", "--fail-on", "error"}, "", 1},
		{"retry storm without its graph, failing on errors", []string{"-f", "testdata/retry-storm.yaml", "--fail-on", "error"}, "", 0},
		{"retry storm without its graph, failing on warnings", []string{"-f", "testdata/retry-storm.yaml"}, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"check"}, tt.args...)
			out, stderr, code := meshplane(t, "", args...)
			if code != tt.code || stderr != "" {
				t.Fatalf("meshplane %s: exit %d, want %d; stderr:\n%s\nstdout:\n%s", strings.Join(args, " "), code, tt.code, stderr, out)
			}
			if tt.golden != "" {
				golden(t, tt.golden, out)
			}
		})
	}
}

// Bad input gets a clear message and exit status 2 (or, for a graph that names an unknown service, a
// finding), never a panic.
func TestCheckBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	typo := write("typo.yaml", "calls:\n- {from: gateway, to: paymnets}\n")
	malformed := write("malformed.yaml", "calls:\n- {frm: gateway, to: orders}\n")
	loop := write("loop.yaml", "calls:\n- {from: payments, to: orders}\n")
	invalid := "apiVersion: traffic.meshplane.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: orders, namespace: shop}\nspec:\n  targetRef: {name: orders}\n  retries: {attempts: 11}\n"
	tests := []struct {
		name          string
		stdin         string
		args          []string
		code          int
		stdout, error string
	}{
		{"graph names an unknown service", "", []string{"-f", samples, "--namespace", "shop", "--graph", typo}, 1,
			"shop/paymnets, which is not a Service or a service declared in the graph file (did you mean shop/payments?)", ""},
		{"malformed graph file", "", []string{"-f", samples, "--graph", malformed}, 2, "", `malformed.yaml: unknown field "frm"`},
		{"missing graph file", "", []string{"-f", samples, "--graph", filepath.Join(dir, "none.yaml")}, 2, "", "none.yaml: no such file or directory"},
		{"cycle", "", []string{"-f", samples, "--namespace", "shop", "--graph", loop}, 1, "calls loop: shop/orders → shop/payments → shop/orders", ""},
		{"invalid policy", invalid, []string{"-f", "-"}, 2, "", "<stdin>: TrafficPolicy shop/orders: spec.retries.attempts: Invalid value: 11: must be between 0 and 10"},
		{"bad --non-idempotent", "", []string{"-f", samples, "--non-idempotent", "Shop/payments"}, 2, "", `--non-idempotent "Shop/payments": namespace "Shop"`},
		{"bad --fail-on", "", []string{"-f", samples, "--fail-on", "sometimes"}, 2, "", `--fail-on: severity "sometimes": want info, warning or error`},
		{"bad -o", "", []string{"-f", samples, "-o", "yaml"}, 2, "", "Usage: meshplane check"},
		{"no -f", "", nil, 2, "", "Usage: meshplane check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := meshplane(t, tt.stdin, append([]string{"check"}, tt.args...)...)
			if code != tt.code || !strings.Contains(out, tt.stdout) || !strings.Contains(stderr, tt.error) {
				t.Errorf("exit %d, want %d\nstdout (want %q):\n%s\nstderr (want %q):\n%s", code, tt.code, tt.stdout, out, tt.error, stderr)
			}
		})
	}
}
