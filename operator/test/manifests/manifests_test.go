package manifests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/internal/render"
	"meshplane.dev/operator/test/envtest"
	"meshplane.dev/operator/test/istioctl"
)

var env *envtest.Env

func TestMain(m *testing.M) {
	env = envtest.MustStart(envtest.Options{})
	code := m.Run()
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

// externalNamespaces are the namespaces objects of the overlays live in without the overlays creating
// them: istio-system is Istio's (istioctl install creates it before the overlay is applied).
var externalNamespaces = []string{"istio-system"}

// overlay is one rendered overlay.
type overlay struct {
	yaml []byte
	objs []*unstructured.Unstructured
}

var (
	renderMu sync.Mutex
	renders  = map[string]overlay{}
)

// rendered builds manifests/overlays/<name> once per test binary.
func rendered(t *testing.T, name string) overlay {
	t.Helper()
	renderMu.Lock()
	defer renderMu.Unlock()
	if o, ok := renders[name]; ok {
		return o
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data, err := Build(ctx, filepath.Join("manifests", "overlays", name))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(data)
	if err != nil {
		t.Fatalf("overlay %s: %v", name, err)
	}
	o := overlay{yaml: data, objs: objs}
	renders[name] = o
	return o
}

// kubectl runs the kubectl matching the apiserver against it and returns stdout and stderr (warnings
// included), whatever the exit status.
func kubectl(t *testing.T, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(devserver.BinDir(), "kubectl"), append([]string{"--kubeconfig=" + env.Kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// createNamespaces applies the overlay's Namespaces for real (a dry run of an object in a namespace that
// does not exist fails) and creates the external ones. It fails the test for an object in a namespace
// that is neither.
func createNamespaces(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var docs bytes.Buffer
	own := map[string]bool{}
	for _, u := range objs {
		if u.GetAPIVersion() == "v1" && u.GetKind() == "Namespace" {
			own[u.GetName()] = true
			b, err := u.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			docs.Write(b)
			docs.WriteString("\n")
		}
	}
	for _, ns := range externalNamespaces {
		docs.WriteString(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"` + ns + `"}}` + "\n")
	}
	for _, u := range objs {
		if ns := u.GetNamespace(); ns != "" && !own[ns] && !slices.Contains(externalNamespaces, ns) {
			t.Errorf("%s is in namespace %s, which the overlay does not create and Istio's install does not either", ID(u), ns)
		}
	}
	if _, stderr, err := kubectl(t, docs.Bytes(), "apply", "--server-side", "--field-manager=manifeststest", "-f", "-"); err != nil {
		t.Fatalf("create namespaces: %v: %s", err, stderr)
	}
}

// TestOverlaysBuild: every overlay builds, byte for byte the same each time (hash-suffixed ConfigMap
// names included), and holds what a platform needs.
func TestOverlaysBuild(t *testing.T) {
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			o := rendered(t, name)
			again, err := Build(context.Background(), filepath.Join("manifests", "overlays", name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.yaml, again) {
				t.Errorf("two builds of overlay %s differ", name)
			}
			kinds := map[string]int{}
			for _, u := range o.objs {
				kinds[u.GetKind()]++
			}
			t.Logf("overlay %s: %d objects %v", name, len(o.objs), kinds)
			for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ClusterRole", "Deployment", "StatefulSet", "Service", "NetworkPolicy", "PeerAuthentication", "ConfigMap"} {
				if kinds[kind] == 0 {
					t.Errorf("overlay %s has no %s", name, kind)
				}
			}
		})
	}
}

var warningLine = regexp.MustCompile(`(?m)^Warning: .*$`)

// TestOverlaysAcceptedByAPIServer submits every object of every overlay to a real kube-apiserver (our
// CRD and Istio's installed) with `kubectl apply --server-side --dry-run=server`: schemas, CEL rules,
// admission (Pod Security at the namespaces' levels) and strict field validation all judge it. Any
// rejection fails with the API server's message, and so does any warning (a Pod Security violation at
// the warn level, a deprecated API, an unknown field).
func TestOverlaysAcceptedByAPIServer(t *testing.T) {
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			o := rendered(t, name)
			createNamespaces(t, o.objs)
			stdout, stderr, err := kubectl(t, o.yaml, "apply", "--server-side", "--dry-run=server", "--field-manager=meshplane", "-f", "-")
			if err != nil {
				t.Fatalf("the API server rejected objects of overlay %s: %v\n%s", name, err, stderr)
			}
			for _, w := range warningLine.FindAllString(stderr, -1) {
				t.Errorf("overlay %s: %s", name, w)
			}
			accepted := strings.Count(stdout, "serverside-applied (server dry run)")
			if accepted != len(o.objs) {
				t.Errorf("overlay %s: %d of %d objects reported applied:\n%s", name, accepted, len(o.objs), stdout)
			}
		})
	}
}

// TestPolicy walks every rendered object of every overlay: probes (liveness apart from readiness),
// requests and limits, bounded ephemeral storage, the hardened securityContext, pinned images,
// rollouts without needless outages, Istio-readable Service ports, and a NetworkPolicy for every
// workload; prod also requires every Secret its pods read.
func TestPolicy(t *testing.T) {
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			objs := rendered(t, name).objs
			violations, err := Check(objs)
			if err != nil {
				t.Fatal(err)
			}
			if name == "prod" {
				production, err := CheckProduction(objs)
				if err != nil {
					t.Fatal(err)
				}
				violations = append(violations, production...)
			}
			for _, v := range violations {
				t.Errorf("overlay %s: %s", name, v)
			}
		})
	}
}

// TestIstioAnalyze runs Istio's analyzers (`istioctl analyze --use-kube=false -A`) over each rendered
// overlay together with the Istio objects the operator generates for the overlay's TrafficPolicies (the
// same render `meshplane render` does): no message may be an error. The generated objects must also be
// accepted by the API server, as the operator will apply them.
func TestIstioAnalyze(t *testing.T) {
	for _, name := range Overlays {
		t.Run(name, func(t *testing.T) {
			o := rendered(t, name)
			dir := t.TempDir()
			manifests := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(manifests, o.yaml, 0o644); err != nil {
				t.Fatal(err)
			}
			in, problems := render.Load([]string{manifests}, nil, "default")
			if len(problems) > 0 {
				t.Fatalf("load TrafficPolicies:\n%v", problems)
			}
			policies, problems := render.Render(in, desiredstate.PlatformDefaults())
			if len(problems) > 0 {
				t.Fatalf("render TrafficPolicies:\n%v", problems)
			}
			var generated bytes.Buffer
			if err := render.WriteYAML(&generated, policies); err != nil {
				t.Fatal(err)
			}
			files := []string{manifests}
			if len(policies) > 0 {
				p := filepath.Join(dir, "generated.yaml")
				if err := os.WriteFile(p, generated.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				files = append(files, p)
				createNamespaces(t, o.objs)
				if _, stderr, err := kubectl(t, generated.Bytes(), "apply", "--server-side", "--dry-run=server", "--field-manager=meshplane", "-f", "-"); err != nil {
					t.Errorf("the API server rejected the objects generated for overlay %s's TrafficPolicies: %v\n%s", name, err, stderr)
				}
			}
			t.Logf("overlay %s: %d TrafficPolicies, %d generated Istio objects", name, len(in.Policies), strings.Count(generated.String(), "---\n"))
			msgs, err := istioctl.Analyze(files...)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				if m.Level == "Error" {
					t.Errorf("overlay %s: %s", name, m)
				} else {
					t.Logf("overlay %s: %s", name, m)
				}
			}
			// The same run over a route to a subset no DestinationRule defines must report it, or the
			// check above proves nothing.
			if !bytes.Contains(generated.Bytes(), []byte("subset: v2")) {
				return
			}
			broken := filepath.Join(dir, "broken.yaml")
			if err := os.WriteFile(broken, bytes.ReplaceAll(generated.Bytes(), []byte("subset: v2"), []byte("subset: v3")), 0o644); err != nil {
				t.Fatal(err)
			}
			msgs, err = istioctl.Analyze(manifests, broken)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(msgs, func(m istioctl.Message) bool { return m.Level == "Error" && m.Code == "IST0101" }) {
				t.Errorf("a VirtualService routing to an undefined subset gave %v; want an IST0101 error", msgs)
			}
		})
	}
}

// TestDevShowsEveryComponent: the dev overlay is the demo, so it runs every opt-in component: example
// policies for every shop Service (and the canary's split), the canary, the load generator, sidecars.
func TestDevShowsEveryComponent(t *testing.T) {
	objs := rendered(t, "dev").objs
	var policies, services []string
	split := false
	for _, u := range objs {
		switch {
		case u.GetKind() == "TrafficPolicy":
			target, _, _ := unstructured.NestedString(u.Object, "spec", "targetRef", "name")
			policies = append(policies, u.GetNamespace()+"/"+target)
			if s, _, _ := unstructured.NestedSlice(u.Object, "spec", "split"); len(s) > 0 {
				split = true
			}
		case u.GetKind() == "Service" && u.GetNamespace() == "shop":
			services = append(services, u.GetNamespace()+"/"+u.GetName())
		}
	}
	slices.Sort(policies)
	slices.Sort(services)
	if diff := cmp.Diff(services, policies); diff != "" {
		t.Errorf("TrafficPolicy targets (+got) differ from the shop's Services (-want):\n%s", diff)
	}
	if !split {
		t.Error("no TrafficPolicy splits traffic for the canary")
	}
	find := func(kind, ns, name string) *unstructured.Unstructured {
		for _, u := range objs {
			if u.GetKind() == kind && u.GetNamespace() == ns && u.GetName() == name {
				return u
			}
		}
		return nil
	}
	for _, w := range []string{"catalog-v2", "loadgen"} {
		if find("Deployment", "shop", w) == nil {
			t.Errorf("dev has no Deployment shop/%s", w)
		}
	}
	if ns := find("Namespace", "", "shop"); ns == nil || ns.GetLabels()["istio-injection"] != "enabled" {
		t.Error("dev does not label namespace shop for sidecar injection")
	}
}

// TestAPIServerJudgesTheManifests breaks one object at a time and submits it as the test above does: the
// API server must reject it with a message naming the problem, or warn, so that test could fail.
func TestAPIServerJudgesTheManifests(t *testing.T) {
	tests := []struct {
		name        string
		kind, ns, n string
		break_      func(u *unstructured.Unstructured)
		rejected    string // in kubectl's error output
		warned      string // in a "Warning:" line
	}{{
		name: "unknown field", kind: "Deployment", ns: "shop", n: "gateway",
		break_: func(u *unstructured.Unstructured) {
			c := container(t, u)
			c["portz"] = c["ports"]
		},
		rejected: `.spec.template.spec.containers[name="gateway"].portz: field not declared in schema`,
	}, {
		name: "TrafficPolicy CEL rule", kind: "TrafficPolicy", ns: "shop", n: "orders",
		break_: func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "5s", "spec", "retries", "perTryTimeout")
		},
		rejected: "spec.retries.perTryTimeout",
	}, {
		name: "Istio schema", kind: "PeerAuthentication", ns: "istio-system", n: "default",
		break_: func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "STRICTEST", "spec", "mtls", "mode")
		},
		rejected: "spec.mtls.mode",
	}, {
		name: "Pod Security of the namespace", kind: "Deployment", ns: "shop", n: "payments",
		break_: func(u *unstructured.Unstructured) {
			delete(container(t, u), "securityContext")
		},
		warned: `would violate PodSecurity "restricted:latest"`,
	}}
	objs, find := mutable(t)
	createNamespaces(t, objs)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := find(tt.kind, tt.ns, tt.n).DeepCopy()
			tt.break_(u)
			doc, err := u.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			_, stderr, err := kubectl(t, doc, "apply", "--server-side", "--dry-run=server", "--field-manager=meshplane", "-f", "-")
			switch {
			case tt.rejected != "" && (err == nil || !strings.Contains(stderr, tt.rejected)):
				t.Errorf("got error %v: %s; want a rejection mentioning %q", err, stderr, tt.rejected)
			case tt.warned != "" && (err != nil || !slices.ContainsFunc(warningLine.FindAllString(stderr, -1), func(w string) bool { return strings.Contains(w, tt.warned) })):
				t.Errorf("got error %v: %s; want it accepted with a warning mentioning %q", err, stderr, tt.warned)
			}
		})
	}
}
