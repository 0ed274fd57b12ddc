package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
	pt "meshplane.dev/operator/test/policytest"
)

const timeout = 30 * time.Second

// A policy's objects appear and it becomes Ready; every field change is followed; removing a section
// deletes the object it generated; deleting the policy deletes everything (the garbage collector
// follows the owner references).
func TestPolicyLifecycle(t *testing.T) {
	ns := namespace(t)
	svc := pt.Service(ns, "orders")
	p := pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(2, "1s", "connect-failure", "503"))
	create(t, svc, p)
	wait.For(t, timeout, func() error { return inSync(p) })

	live := get(t, p)
	if live.Status.ObservedGeneration != live.Generation {
		t.Errorf("observedGeneration %d, generation %d", live.Status.ObservedGeneration, live.Generation)
	}
	// Retrying on 503 makes the safe-retry rule split off POST and PATCH requests: status lists both routes.
	wantEffective := &v1alpha1.EffectivePolicy{Host: "orders." + ns + ".svc.cluster.local", Timeout: "3s", Attempts: 2,
		PerTryTimeout: "1s", RetryOn: []string{"connect-failure", "503"}, WorstCaseAttempts: 3, WorstCaseWait: "3s",
		Routes: []v1alpha1.EffectiveRoute{
			{Name: "default.non-idempotent", Match: "HTTP POST|PATCH without Idempotency-Key", Timeout: "3s", Attempts: 2, PerTryTimeout: "1s",
				RetryOn: []string{"connect-failure"}, WorstCaseAttempts: 3, WorstCaseWait: "3s",
				Note: "safe-retry rule: a non-idempotent request is retried only where it cannot have reached the Service"},
			{Name: "default", Match: "every other call", Timeout: "3s", Attempts: 2, PerTryTimeout: "1s", RetryOn: []string{"connect-failure", "503"},
				WorstCaseAttempts: 3, WorstCaseWait: "3s"},
		}}
	if fmt.Sprint(live.Status.Effective) != fmt.Sprint(wantEffective) {
		t.Errorf("status.effective = %+v, want %+v", live.Status.Effective, wantEffective)
	}
	wantGenerated := []v1alpha1.GeneratedObject{{APIVersion: "networking.istio.io/v1", Kind: "VirtualService", Name: "orders"}}
	if !slices.Equal(live.Status.Generated, wantGenerated) {
		t.Errorf("status.generated = %v, want %v", live.Status.Generated, wantGenerated)
	}

	steps := []struct {
		name   string
		change func(*v1alpha1.TrafficPolicy)
	}{
		{"timeout", func(p *v1alpha1.TrafficPolicy) { p.Spec.Timeout = pt.Duration("5s") }},
		{"retries", func(p *v1alpha1.TrafficPolicy) { pt.Retries(0, "")(p) }},
		{"retries unset", func(p *v1alpha1.TrafficPolicy) { p.Spec.Retries = nil }},
		{"routes", func(p *v1alpha1.TrafficPolicy) {
			p.Spec.Routes = []v1alpha1.Route{{Name: "charge", Match: v1alpha1.RouteMatch{GRPC: &v1alpha1.GRPCMatch{Method: "Charge"}},
				Retries: &v1alpha1.Retries{Attempts: pt.Int32(0)}}}
		}},
		{"fault", func(p *v1alpha1.TrafficPolicy) {
			p.Spec.Routes[0].Fault = &v1alpha1.Fault{Abort: &v1alpha1.FaultAbort{Percentage: pt.Int32(10), Code: "UNAVAILABLE"}}
		}},
		{"routes removed", func(p *v1alpha1.TrafficPolicy) { p.Spec.Routes = nil }},
		{"circuitBreaker", pt.CircuitBreaker(v1alpha1.CircuitBreaker{MaxConnections: pt.Int32(10), ConsecutiveErrors: pt.Int32(0)})},
		{"circuitBreaker changed", pt.CircuitBreaker(v1alpha1.CircuitBreaker{MaxRetries: pt.Int32(3), MaxEjectionPercent: pt.Int32(20)})},
		{"mtls", pt.MTLS(v1alpha1.MTLSPermissive)},
		{"mtls STRICT", pt.MTLS(v1alpha1.MTLSStrict)},
		{"mtls DISABLE", pt.MTLS(v1alpha1.MTLSDisable)},
		{"allow", pt.Allow("gateway", "tools/loadgen")},
		{"allow changed", pt.Allow("gateway")},
		{"split", pt.Split("v1", 80, "v2", 20)},
		{"allow removed", func(p *v1alpha1.TrafficPolicy) { p.Spec.Allow = nil }},
		{"mtls removed", func(p *v1alpha1.TrafficPolicy) { p.Spec.MTLS = nil }},
		{"split and circuitBreaker removed", func(p *v1alpha1.TrafficPolicy) { p.Spec.Split, p.Spec.CircuitBreaker = nil, nil }},
	}
	for _, step := range steps {
		update(t, p, step.change)
		wait.For(t, timeout, func() error {
			if err := inSync(p); err != nil {
				return fmt.Errorf("after %s: %w", step.name, err)
			}
			return nil
		})
	}

	// A new selector on the Service reaches the PeerAuthentication.
	update(t, p, pt.MTLS(v1alpha1.MTLSStrict))
	wait.For(t, timeout, func() error { return inSync(p) })
	wait.For(t, timeout, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		svc.Spec.Selector = map[string]string{"app": "orders", "tier": "backend"}
		return k8s.Update(context.Background(), svc)
	})
	wait.For(t, timeout, func() error {
		pa := &securityv1.PeerAuthentication{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), pa); err != nil {
			return err
		}
		if got := pa.Spec.GetSelector().GetMatchLabels(); got["tier"] != "backend" {
			return fmt.Errorf("PeerAuthentication selector %v, want the Service's new selector", got)
		}
		return nil
	})

	if err := k8s.Delete(context.Background(), get(t, p)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, func() error {
		for _, kind := range []string{"VirtualService", "PeerAuthentication"} {
			if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), desiredstate.New(kind)); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s after deleting the policy: %w, want NotFound", kind, err)
			}
		}
		return nil
	})
}

// A hand edit of a generated object is undone on the edit's own watch event: a changed field is set
// back and a field the policy does not set is removed.
func TestDriftIsRestored(t *testing.T) {
	ns := namespace(t)
	p := pt.Policy(ns, "orders", pt.Timeout("3s"))
	create(t, pt.Service(ns, "orders"), p)
	wait.For(t, timeout, func() error { return inSync(p) })
	writesBefore := testutil.ToFloat64(metrics.Writes.WithLabelValues("VirtualService", "update"))

	vs := &networkingv1.VirtualService{}
	wait.For(t, timeout, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), vs); err != nil {
			return err
		}
		vs.Spec.Http[0].Timeout = durationpb.New(time.Minute)
		vs.Spec.Http[0].Fault = &networkingapi.HTTPFaultInjection{Abort: &networkingapi.HTTPFaultInjection_Abort{
			ErrorType:  &networkingapi.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503},
			Percentage: &networkingapi.Percent{Value: 100},
		}}
		return k8s.Update(context.Background(), vs, client.FieldOwner("kubectl-edit"))
	})
	edited := vs.ResourceVersion
	wait.For(t, timeout, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), vs); err != nil {
			return err
		}
		if vs.ResourceVersion == edited {
			return fmt.Errorf("VirtualService still at the edited version %s", edited)
		}
		return inSync(p)
	})
	if vs.Spec.Http[0].Fault != nil {
		t.Errorf("hand-added fault injection survived: %v", vs.Spec.Http[0].Fault)
	}
	if got := testutil.ToFloat64(metrics.Writes.WithLabelValues("VirtualService", "update")); got <= writesBefore {
		t.Errorf("meshplane_operator_writes_total{kind=VirtualService,op=update} = %v, want more than %v", got, writesBefore)
	}
}

// A VirtualService Meshplane does not own for the host: HostConflict naming it, the foreign object
// untouched and nothing written for that kind; when it goes, the policy converges by itself.
func TestForeignVirtualServiceIsReportedNotFought(t *testing.T) {
	ns := namespace(t)
	p := pt.Policy(ns, "orders", pt.Timeout("3s"), pt.MTLS(v1alpha1.MTLSStrict))
	create(t, pt.Service(ns, "orders"), p)
	wait.For(t, timeout, func() error { return inSync(p) })
	conflictsBefore := testutil.ToFloat64(metrics.Conflicts.WithLabelValues("HostConflict"))

	// The team's own VirtualService, using the short host name Istio completes in its namespace.
	foreign := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "orders-legacy", Namespace: ns}}
	foreign.Spec.Hosts = []string{"orders"}
	foreign.Spec.Http = []*networkingapi.HTTPRoute{{
		Route:   []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "orders"}}},
		Timeout: durationpb.New(10 * time.Second),
	}}
	create(t, foreign)
	foreignVersion := foreign.ResourceVersion
	wait.For(t, timeout, func() error {
		return condition(p, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonHostConflict)
	})
	c := meta.FindStatusCondition(get(t, p).Status.Conditions, v1alpha1.ConditionAccepted)
	if !strings.Contains(c.Message, "VirtualService "+ns+"/orders-legacy") {
		t.Errorf("HostConflict message %q does not name the foreign VirtualService", c.Message)
	}
	if err := condition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNotAccepted); err != nil {
		t.Error(err)
	}
	// Status still lists what exists: the policy's own VirtualService, left in place, and its
	// DestinationRule (STRICT tells callers ISTIO_MUTUAL) and PeerAuthentication.
	var kinds []string
	for _, g := range get(t, p).Status.Generated {
		kinds = append(kinds, g.Kind)
	}
	if want := []string{"DestinationRule", "VirtualService", "PeerAuthentication"}; !slices.Equal(kinds, want) {
		t.Errorf("status.generated kinds %v, want %v", kinds, want)
	}

	// Nothing is written for the kind in conflict while it lasts, even when the policy changes.
	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Timeout = pt.Duration("4s") })
	wait.For(t, timeout, func() error {
		return condition(p, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonHostConflict)
	})
	ours := &networkingv1.VirtualService{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), ours); err != nil {
		t.Fatal(err)
	}
	if got := ours.Spec.Http[0].Timeout.AsDuration(); got != 3*time.Second {
		t.Errorf("own VirtualService written during the conflict: timeout %v, want it left at 3s", got)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(foreign), foreign); err != nil {
		t.Fatal(err)
	}
	if foreign.ResourceVersion != foreignVersion || len(foreign.OwnerReferences) > 0 {
		t.Errorf("foreign VirtualService was modified: resourceVersion %s -> %s, owners %v", foreignVersion, foreign.ResourceVersion, foreign.OwnerReferences)
	}
	if got := testutil.ToFloat64(metrics.Conflicts.WithLabelValues("HostConflict")); got < conflictsBefore+1 {
		t.Errorf("meshplane_operator_conflicts_total{reason=HostConflict} = %v, want at least %v", got, conflictsBefore+1)
	}
	wait.For(t, timeout, func() error { return event(ns, p.Name, "HostConflict") })

	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, func() error { return inSync(p) })
	if err := condition(p, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted); err != nil {
		t.Error(err)
	}
}

// Events are what `kubectl describe` shows beside the status, so they say what status cannot. A policy's
// first Ready records none: its Ready condition already says Applied, when, and for which generation, and
// creating thousands of policies should not cost a write each for it. A Warning (here a host conflict) is
// followed by a Normal Applied once the policy recovers, so the list never ends on a problem that is gone;
// and a change applied to a Ready policy records when it took effect, which status does not keep (Ready
// stays True, its lastTransitionTime unchanged).
func TestEventsSayWhatStatusCannot(t *testing.T) {
	ns := namespace(t)
	p := pt.Policy(ns, "orders", pt.Timeout("3s"))
	create(t, pt.Service(ns, "orders"), p)
	wait.For(t, timeout, func() error { return inSync(p) })

	foreign := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "orders-legacy", Namespace: ns}}
	foreign.Spec.Hosts = []string{"orders"}
	foreign.Spec.Http = []*networkingapi.HTTPRoute{{
		Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "orders"}}},
	}}
	create(t, foreign)
	wait.For(t, timeout, func() error { return event(ns, p.Name, "HostConflict") })
	// The first Ready came well before the conflict: an Event for it would be recorded by now.
	if notes := eventNotes(t, ns, p.Name, v1alpha1.ReasonApplied); len(notes) > 0 {
		t.Errorf("Applied events after the first Ready: %q; want none, the Ready condition says it", notes)
	}

	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, func() error { return appliedEvent(t, ns, p.Name, "generation 1:") })

	update(t, p, func(p *v1alpha1.TrafficPolicy) { p.Spec.Timeout = pt.Duration("4s") })
	wait.For(t, timeout, func() error { return inSync(p) })
	wait.For(t, timeout, func() error { return appliedEvent(t, ns, p.Name, "generation 2:") })
}

// appliedEvent returns nil once an Applied event of the policy has a note starting with prefix.
func appliedEvent(t *testing.T, ns, name, prefix string) error {
	notes := eventNotes(t, ns, name, v1alpha1.ReasonApplied)
	if slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, prefix) }) {
		return nil
	}
	return fmt.Errorf("no Applied event of TrafficPolicy %s/%s starting %q; Applied events: %q", ns, name, prefix, notes)
}

// eventNotes returns the notes of the policy's events with reason.
func eventNotes(t *testing.T, ns, name, reason string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "TrafficPolicy" && e.Regarding.Name == name && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

// A foreign DestinationRule for the host of a split policy: no DestinationRule is written, and neither
// is the VirtualService, which would route to subsets that do not exist.
func TestForeignDestinationRuleHoldsTheSplit(t *testing.T) {
	ns := namespace(t)
	foreign := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "orders-team", Namespace: ns}}
	foreign.Spec.Host = "orders." + ns + ".svc.cluster.local"
	create(t, pt.Service(ns, "orders"), foreign)
	p := pt.Policy(ns, "orders", pt.Split("v1", 90, "v2", 10))
	create(t, p)
	wait.For(t, timeout, func() error {
		return condition(p, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonHostConflict)
	})
	for _, kind := range []string{"DestinationRule", "VirtualService"} {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), desiredstate.New(kind)); !apierrors.IsNotFound(err) {
			t.Errorf("%s %s: %v, want none written", kind, p.Name, err)
		}
	}
	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	wait.For(t, timeout, func() error { return inSync(p) })
}

// Two policies for one Service: the older governs, the newer reports TargetConflict naming it and
// writes nothing; when the older is deleted the newer takes over.
func TestTargetConflict(t *testing.T) {
	ns := namespace(t)
	older := pt.Policy(ns, "orders-a", pt.Target("orders"), pt.Timeout("1s"))
	create(t, pt.Service(ns, "orders"), older)
	wait.For(t, timeout, func() error { return inSync(older) })
	conflictsBefore := testutil.ToFloat64(metrics.Conflicts.WithLabelValues("TargetConflict"))

	newer := pt.Policy(ns, "orders-b", pt.Target("orders"), pt.Timeout("2s"))
	create(t, newer)
	wait.For(t, timeout, func() error {
		return condition(newer, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonTargetConflict)
	})
	c := meta.FindStatusCondition(get(t, newer).Status.Conditions, v1alpha1.ConditionAccepted)
	if want := "older TrafficPolicy " + ns + "/orders-a"; !strings.Contains(c.Message, want) {
		t.Errorf("TargetConflict message %q does not name %q", c.Message, want)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(newer), &networkingv1.VirtualService{}); !apierrors.IsNotFound(err) {
		t.Errorf("the newer policy wrote a VirtualService: %v", err)
	}
	if err := inSync(older); err != nil {
		t.Errorf("the older policy lost its objects: %v", err)
	}
	if got := testutil.ToFloat64(metrics.Conflicts.WithLabelValues("TargetConflict")); got < conflictsBefore+1 {
		t.Errorf("meshplane_operator_conflicts_total{reason=TargetConflict} = %v, want at least %v", got, conflictsBefore+1)
	}

	if err := k8s.Delete(context.Background(), get(t, older)); err != nil {
		t.Fatal(err)
	}
	// The older policy's VirtualService goes with it (garbage collection), then the newer one's appears.
	wait.For(t, timeout, func() error { return inSync(newer) })
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(older), &networkingv1.VirtualService{}); !apierrors.IsNotFound(err) {
		t.Errorf("the deleted policy's VirtualService: %v, want NotFound", err)
	}
	if err := condition(newer, v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted); err != nil {
		t.Error(err)
	}
}

// An object with the policy's name that Meshplane did not generate is not taken over.
func TestNameTakenIsAnApplyFailure(t *testing.T) {
	ns := namespace(t)
	other := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns}}
	other.Spec.Hosts = []string{"other." + ns + ".svc.cluster.local"}
	other.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "other"}}}}}
	create(t, pt.Service(ns, "orders"), other)
	errorsBefore := testutil.ToFloat64(metrics.ApplyErrors.WithLabelValues("VirtualService"))
	p := pt.Policy(ns, "orders")
	create(t, p)
	wait.For(t, timeout, func() error {
		return condition(p, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonApplyFailed)
	})
	if got := testutil.ToFloat64(metrics.ApplyErrors.WithLabelValues("VirtualService")); got <= errorsBefore {
		t.Errorf("meshplane_operator_apply_errors_total{kind=VirtualService} = %v, want more than %v", got, errorsBefore)
	}
	wait.For(t, timeout, func() error { return event(ns, p.Name, "ApplyFailed") })
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(other), other); err != nil || len(other.OwnerReferences) > 0 {
		t.Errorf("the other VirtualService was taken over: %v, owners %v", err, other.OwnerReferences)
	}
}

// A policy for a Service that does not exist says so, and converges when the Service appears.
func TestServiceNotFound(t *testing.T) {
	ns := namespace(t)
	p := pt.Policy(ns, "orders", pt.Allow("gateway"))
	create(t, p)
	wait.For(t, timeout, func() error {
		return condition(p, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonServiceNotFound)
	})
	create(t, pt.Service(ns, "orders"))
	wait.For(t, timeout, func() error { return inSync(p) })
}

// A Service without a selector cannot scope mTLS or an allow list (an empty selector would cover the
// whole namespace): the policy says so and writes nothing.
func TestServiceWithoutSelector(t *testing.T) {
	ns := namespace(t)
	svc := pt.Service(ns, "external")
	svc.Spec.Selector = nil
	p := pt.Policy(ns, "external", pt.MTLS(v1alpha1.MTLSStrict))
	create(t, svc, p)
	wait.For(t, timeout, func() error {
		return condition(p, v1alpha1.ConditionAccepted, metav1.ConditionFalse, v1alpha1.ReasonInvalid)
	})
	c := meta.FindStatusCondition(get(t, p).Status.Conditions, v1alpha1.ConditionAccepted)
	if !strings.Contains(c.Message, "spec.targetRef.name") || !strings.Contains(c.Message, "has no selector") {
		t.Errorf("Invalid message %q, want it to name spec.targetRef.name and the missing selector", c.Message)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), &securityv1.PeerAuthentication{}); !apierrors.IsNotFound(err) {
		t.Errorf("PeerAuthentication: %v, want none", err)
	}
}

// The API server rejects an invalid policy itself (CEL), naming the field.
func TestInvalidPolicyIsRejected(t *testing.T) {
	ns := namespace(t)
	err := k8s.Create(context.Background(), pt.Policy(ns, "orders", pt.Timeout("1s"), pt.Retries(1, "2s")))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.retries.perTryTimeout") {
		t.Fatalf("create with perTryTimeout > timeout: %v, want Invalid naming spec.retries.perTryTimeout", err)
	}
}

// `kubectl get tp` shows what a person checks first.
func TestKubectlGetShowsPrintColumns(t *testing.T) {
	ns := namespace(t)
	p := pt.Policy(ns, "orders", pt.Timeout("3s"), pt.Retries(0, ""), pt.MTLS(v1alpha1.MTLSStrict))
	create(t, pt.Service(ns, "orders"), p)
	wait.For(t, timeout, func() error { return inSync(p) })
	out, err := env.Kubectl(context.Background(), nil, "get", "tp", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get tp:\n%s\nwant a header and one row", out)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	if want := []string{"NAME", "SERVICE", "TIMEOUT", "RETRIES", "MTLS", "CANARY", "WEIGHT", "READY", "AGE"}; !slices.Equal(header, want) {
		t.Errorf("header %q, want %q", header, want)
	}
	if len(row) != 7 || !slices.Equal(row[:6], []string{"orders", "orders", "3s", "0", "STRICT", "True"}) {
		t.Errorf("row %q, want orders orders 3s 0 STRICT True <age>", row)
	}
}

// The policies gauge is read from the cache at scrape time; the reconcile-to-Ready histogram gets one
// sample per generation, however often a Ready policy is reconciled again.
func TestPolicyMetrics(t *testing.T) {
	ns := namespace(t)
	samplesBefore := readySamples(t)
	svc := pt.Service(ns, "orders")
	p := pt.Policy(ns, "orders")
	create(t, svc, p)
	wait.For(t, timeout, func() error { return inSync(p) })
	// Reconcile it again without a new generation: a Service change does that.
	wait.For(t, timeout, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		svc.Labels = map[string]string{"touched": "yes"}
		return k8s.Update(context.Background(), svc)
	})
	update(t, p, pt.Timeout("2s"))
	wait.For(t, timeout, func() error { return inSync(p) })
	if got := readySamples(t) - samplesBefore; got != 2 {
		t.Errorf("reconcile-to-ready samples for two generations = %d, want 2", got)
	}
	wait.For(t, timeout, func() error {
		n, err := gauge("Ready", "True", "Applied")
		if err != nil || n < 1 {
			return fmt.Errorf("meshplane_trafficpolicies{condition=Ready,status=True,reason=Applied} = %v, want >= 1 (gather: %w)", n, err)
		}
		return nil
	})
}

func readySamples(t *testing.T) uint64 {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "meshplane_operator_reconcile_to_ready_seconds" {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func gauge(condition, status, reason string) (float64, error) {
	families, err := registry.Gather()
	if err != nil {
		return 0, err
	}
	for _, f := range families {
		if f.GetName() != "meshplane_trafficpolicies" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["condition"] == condition && labels["status"] == status && labels["reason"] == reason {
				return m.GetGauge().GetValue(), nil
			}
		}
	}
	return 0, nil
}

// event returns nil once an Event with reason regards the policy.
func event(ns, name, reason string) error {
	var list eventsv1.EventList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "TrafficPolicy" && e.Regarding.Name == name && e.Reason == reason {
			return nil
		}
		seen = append(seen, e.Reason)
	}
	return fmt.Errorf("no %s event for TrafficPolicy %s/%s; events: %v", reason, ns, name, seen)
}
