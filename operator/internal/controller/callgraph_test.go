package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	pt "meshplane.dev/operator/test/policytest"
)

// grpcService is a Service whose port is named grpc, so gRPC retry conditions count.
func grpcService(ns, name string) *corev1.Service {
	s := pt.Service(ns, name)
	s.Spec.Ports[0].Name = "grpc"
	return s
}

// callGraph returns nil once the policy's CallGraph condition has status and reason for its current
// generation and its message holds every one of contains.
func callGraph(p *v1alpha1.TrafficPolicy, status metav1.ConditionStatus, reason string, contains ...string) error {
	live := &v1alpha1.TrafficPolicy{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), live); err != nil {
		return err
	}
	c := meta.FindStatusCondition(live.Status.Conditions, v1alpha1.ConditionCallGraph)
	switch {
	case c == nil:
		return fmt.Errorf("no CallGraph condition in %+v", live.Status.Conditions)
	case c.ObservedGeneration != live.Generation:
		return fmt.Errorf("CallGraph condition for generation %d, policy at %d", c.ObservedGeneration, live.Generation)
	case c.Status != status || c.Reason != reason:
		return fmt.Errorf("CallGraph=%s (%s: %s), want %s (%s)", c.Status, c.Reason, c.Message, status, reason)
	}
	for _, s := range contains {
		if !strings.Contains(c.Message, s) {
			return fmt.Errorf("CallGraph message %q lacks %q", c.Message, s)
		}
	}
	return nil
}

// The operator checks the policies together: orders gives an attempt 1s while its call to payments may
// take 2s, which both policies report in their CallGraph condition (with the fix), with an Event and in
// meshplane_callgraph_findings, while both stay Ready. Fixing orders clears it. Unrelated changes do not
// rewrite a policy whose condition has not changed.
func TestCallGraphCondition(t *testing.T) {
	ns := namespace(t)
	orders := pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure"), pt.Allow("gateway"))
	payments := pt.Policy(ns, "payments", pt.Timeout("2s"), pt.Retries(0, ""), pt.Allow("orders"))
	create(t, grpcService(ns, "orders"), grpcService(ns, "payments"), orders, payments)

	fix := "set TrafficPolicy " + ns + "/payments spec.timeout to 1s (from 2s), or set TrafficPolicy " + ns + "/orders spec.retries.perTryTimeout to 2s (from 1s)"
	for _, p := range []*v1alpha1.TrafficPolicy{orders, payments} {
		wait.For(t, timeout, func() error {
			if err := callGraph(p, metav1.ConditionFalse, "TimeoutBelowCallee", ns+"/orders → "+ns+"/payments", fix); err != nil {
				return err
			}
			return inSync(p) // a warning: the policy stays Ready
		})
	}
	wait.For(t, timeout, func() error { return event(ns, "orders", "TimeoutBelowCallee") })
	if n := testutil.ToFloat64(metrics.CallGraphFindings.WithLabelValues("warning", "TimeoutBelowCallee")); n < 1 {
		t.Errorf("meshplane_callgraph_findings{severity=warning,kind=TimeoutBelowCallee} = %v, want at least 1", n)
	}

	update(t, orders, pt.Retries(2, "2s", "connect-failure"))
	for _, p := range []*v1alpha1.TrafficPolicy{orders, payments} {
		wait.For(t, timeout, func() error { return callGraph(p, metav1.ConditionTrue, v1alpha1.ReasonChecked) })
	}

	// A new policy is analysed (its condition appears) without rewriting the others.
	before := get(t, payments).ResourceVersion
	catalog := pt.Policy(ns, "catalog", pt.Timeout("1s"), pt.Allow("orders"))
	create(t, grpcService(ns, "catalog"), catalog)
	wait.For(t, timeout, func() error { return callGraph(catalog, metav1.ConditionTrue, v1alpha1.ReasonChecked) })
	if after := get(t, payments).ResourceVersion; after != before {
		t.Errorf("payments was rewritten (resourceVersion %s → %s) though its CallGraph condition did not change", before, after)
	}
}

// A retry storm down a chain is reported on every policy that multiplies it; a policy for a missing
// Service is left out with a note; a second policy for one Service is not analysed.
func TestCallGraphFindings(t *testing.T) {
	ns := namespace(t)
	front := pt.Policy(ns, "front", pt.Retries(2, "", "unavailable"))
	mid := pt.Policy(ns, "mid", pt.Retries(2, "", "unavailable"), pt.Allow("front"))
	back := pt.Policy(ns, "back", pt.Retries(2, "", "unavailable"), pt.Allow("mid"))
	edge := pt.Policy(ns, "front-callers", pt.Target("front"), pt.Allow("edge"))
	create(t, grpcService(ns, "front"), grpcService(ns, "mid"), grpcService(ns, "back"), front, mid, back)
	// front-callers is newer than front: front governs the Service, so the allow list of front-callers
	// is not in force and front has no callers: the chain starts at front, 3 × 3 = 9 attempts at back.
	create(t, edge)
	wait.For(t, timeout, func() error { return callGraph(edge, metav1.ConditionUnknown, v1alpha1.ReasonNotInForce) })
	wait.For(t, timeout, func() error {
		return callGraph(back, metav1.ConditionTrue, v1alpha1.ReasonChecked, "RedundantRetries")
	})

	// An entry calling front: 27 attempts at back.
	update(t, front, pt.Allow("edge"))
	for _, p := range []*v1alpha1.TrafficPolicy{front, mid, back} {
		wait.For(t, timeout, func() error {
			return callGraph(p, metav1.ConditionFalse, "Amplification", ns+"/back can receive 27 attempts for one request entering at "+ns+"/edge")
		})
	}

	ghost := pt.Policy(ns, "ghost", pt.Retries(1, "", "unavailable"))
	create(t, ghost)
	wait.For(t, timeout, func() error {
		return callGraph(ghost, metav1.ConditionTrue, v1alpha1.ReasonChecked, "targets Service "+ns+"/ghost, which does not exist")
	})
}
