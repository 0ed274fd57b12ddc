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
