// Package envtest is the operator's test environment: the local platform's control plane
// (operator/localplatform/controlplane: a real kube-apiserver and etcd with Meshplane's and Istio's CRDs)
// started once per test package, and a fresh namespace per test.
package envtest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshplane.dev/operator/localplatform/controlplane"
)

// Options selects what runs beside the apiserver.
type Options = controlplane.Options

// Env is a running control plane.
type Env = controlplane.Env

// MustStart starts a control plane for TestMain: it exits the test binary with the error if the
// environment cannot start (a missing binary names the command that builds it).
func MustStart(o Options) *Env {
	e, err := controlplane.Start(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	return e
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a fresh namespace named after the test and deletes it when the test ends.
func Namespace(t testing.TB, e *Env) string {
	t.Helper()
	base := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: base + "-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), ns) })
	return ns.Name
}

// Start starts a control plane for one test and stops it when the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	e, err := controlplane.Start(o)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return e
}
