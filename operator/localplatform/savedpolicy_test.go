package localplatform

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/test/envtest"
)

const usersPolicy = `apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: payments, namespace: drill-restore, labels: {team: payments}}
spec:
  targetRef: {name: payments}
  timeout: 4s
  retries: {attempts: 0}
`

const scenarioPolicy = `apiVersion: traffic.meshplane.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: payments, namespace: drill-restore}
spec:
  targetRef: {name: payments}
  split:
  - {subset: v1, labels: {version: v1}, weight: 80}
  - {subset: v2, labels: {version: v2}, weight: 20}
`

func userApply(ctx context.Context, t *testing.T, c client.Client, manifest string) error {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl"))
}

func managers(fields []metav1.ManagedFieldsEntry) []string {
	var out []string
	for _, f := range fields {
		out = append(out, f.Manager+" "+string(f.Operation)+" "+f.FieldsV1.GetRawString())
	}
	return out
}

// A user's policy — applied with kubectl, then edited by hand — is what the drill's scenarios replace
// entirely and what it puts back exactly, field owners included, also when the drill is interrupted.
func TestDrillRestoresTheUsersPolicy(t *testing.T) {
	env := envtest.Start(t, envtest.Options{})
	ctx := context.Background()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "drill-restore"}}); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: "drill-restore", Name: "payments"}
	if err := userApply(ctx, t, c, usersPolicy); err != nil {
		t.Fatal(err)
	}
	// The user's own edit after the apply: a field another manager owns.
	var edited v1alpha1.TrafficPolicy
	if err := c.Get(ctx, key, &edited); err != nil {
		t.Fatal(err)
	}
	maxRequests := int32(7)
	edited.Spec.CircuitBreaker = &v1alpha1.CircuitBreaker{MaxRequests: &maxRequests}
	if err := c.Update(ctx, &edited, client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	var before v1alpha1.TrafficPolicy
	if err := c.Get(ctx, key, &before); err != nil {
		t.Fatal(err)
	}

	drillCtx, interrupt := context.WithCancel(ctx)
	var report []string
	err := withSavedPolicy(drillCtx, c, key, func(s string) { report = append(report, s) }, func(ctx context.Context) error {
		if err := replaceSpec(ctx, c, key, []byte(scenarioPolicy)); err != nil {
			return err
		}
		var during v1alpha1.TrafficPolicy
		if err := c.Get(ctx, key, &during); err != nil {
			return err
		}
		// The scenario runs on its own spec alone, not on a mix with the user's fields.
		if during.Spec.CircuitBreaker != nil || during.Spec.Timeout != nil || len(during.Spec.Split) != 2 {
			t.Errorf("during the scenario the spec is %+v, want exactly the scenario's", during.Spec)
		}
		interrupt() // Ctrl-C in the middle of the drill
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("withSavedPolicy returned %v, want the interruption", err)
	}

	var after v1alpha1.TrafficPolicy
	if err := c.Get(ctx, key, &after); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before.Spec, after.Spec); diff != "" {
		t.Errorf("spec after the drill (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before.Labels, after.Labels); diff != "" {
		t.Errorf("labels after the drill (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(managers(before.ManagedFields), managers(after.ManagedFields)); diff != "" {
		t.Errorf("field owners after the drill (-before +after):\n%s", diff)
	}
	if len(report) != 1 || !strings.Contains(report[0], `"timeout":"4s"`) {
		t.Errorf("the drill reported %q, want what it restored", report)
	}
	// The user's next apply goes through as if the drill never ran: no conflict with the drill.
	if err := userApply(ctx, t, c, strings.Replace(usersPolicy, "timeout: 4s", "timeout: 5s", 1)); err != nil {
		t.Errorf("the user's apply after the drill: %v", err)
	}
}

// A policy the drill created is gone afterwards.
func TestDrillDeletesThePolicyItCreated(t *testing.T) {
	env := envtest.Start(t, envtest.Options{})
	ctx := context.Background()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "drill-restore"}}); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: "drill-restore", Name: "payments"}
	err := withSavedPolicy(ctx, c, key, func(string) {}, func(ctx context.Context) error {
		return replaceSpec(ctx, c, key, []byte(scenarioPolicy))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, key, &v1alpha1.TrafficPolicy{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the drill: %v, want the drill's policy deleted", err)
	}
}
