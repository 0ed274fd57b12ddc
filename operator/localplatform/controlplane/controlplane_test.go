package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshplane.dev/operator/localplatform/controlplane"
	"meshplane.dev/operator/test/envtest"
	"meshplane.dev/operator/test/istioctl"
)

var env *controlplane.Env

func TestMain(m *testing.M) {
	env = envtest.MustStart(controlplane.Options{})
	code := m.Run()
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

func virtualService(ns string, timeout time.Duration) *networkingv1.VirtualService {
	return &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns},
		Spec: networkingapi.VirtualService{
			Hosts: []string{"orders." + ns + ".svc.cluster.local"},
			Http: []*networkingapi.HTTPRoute{{
				Route:   []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "orders." + ns + ".svc.cluster.local"}}},
				Timeout: durationpb.New(timeout),
			}},
		},
	}
}

func TestAPIServerEnforcesIstioSchema(t *testing.T) {
	ns := envtest.Namespace(t, env)
	ctx := context.Background()

	if err := env.Client.Create(ctx, virtualService(ns, 3*time.Second)); err != nil {
		t.Fatalf("valid VirtualService rejected: %v", err)
	}

	// Istio's CRD says every duration must be >= 1ms (a CEL rule); 500µs must fail on that rule.
	bad := virtualService(ns, 500*time.Microsecond)
	bad.Name = "orders-bad"
	err := env.Client.Create(ctx, bad)
	if !apierrors.IsInvalid(err) {
		t.Fatalf("VirtualService with 500µs timeout: err = %v, want Invalid from the apiserver", err)
	}
	for _, want := range []string{"spec.http[0].timeout", "must be a valid duration greater than 1ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestKubectlMatchesAPIServer(t *testing.T) {
	out, err := env.Kubectl(context.Background(), nil, "get", "crd", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"virtualservices.networking.istio.io", "destinationrules.networking.istio.io", "peerauthentications.security.istio.io", "authorizationpolicies.security.istio.io", "serviceentries.networking.istio.io"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get crd does not list %s:\n%s", want, out)
		}
	}
}

const service = `apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: grpc, port: 9090, targetPort: 9090}]
`

func vsYAML(name string) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ` + name + `, namespace: shop}
spec:
  hosts: [orders.shop.svc.cluster.local]
  http:
  - route:
    - destination: {host: orders.shop.svc.cluster.local}
`
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIstioctlAnalyze(t *testing.T) {
	clean := writeFile(t, "clean.yaml", service+"---\n"+vsYAML("orders"))
	msgs, err := istioctl.Analyze(clean)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Level == "Error" || m.Level == "Warning" {
			t.Errorf("clean file: unexpected finding %s", m)
		}
	}

	conflict := writeFile(t, "conflict.yaml", service+"---\n"+vsYAML("orders")+"---\n"+vsYAML("orders-too"))
	msgs, err = istioctl.Analyze(conflict)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(msgs, func(m istioctl.Message) bool { return m.Code == "IST0109" }) {
		t.Errorf("two VirtualServices for one host: got %v, want IST0109", msgs)
	}
}
