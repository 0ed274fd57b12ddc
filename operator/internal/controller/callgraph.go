package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
)

// callGraphKey is the one request the call-graph controller works on: every change leads to one analysis
// of all policies together, and the workqueue folds a burst of changes into one.
var callGraphKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "callgraph"}}

// maxConditionFindings bounds how many findings a CallGraph condition's message spells out.
const maxConditionFindings = 4

// CallGraphReconciler checks the TrafficPolicies together along the call graph (package callgraph): the
// calls their allow lists declare plus Graph. A per-policy reconcile cannot see that retries multiply
// down a chain, so this controller analyses all policies in force at once, on any change of a policy or
// a Service, and sets each policy's CallGraph condition, patching a policy only when its condition
// changes. It never blocks anything: Accepted and Ready are the TrafficPolicyReconciler's, and a finding
// is a warning.
type CallGraphReconciler struct {
	// Client reads from the manager's cache and patches status.
	Client   client.Client
	Recorder events.EventRecorder
	Defaults desiredstate.Defaults
	// Graph holds the calls and non-idempotent targets of a graph file and flags, beside the allow lists.
	Graph   callgraph.Graph
	Options callgraph.Options
	Metrics *Metrics
	// Conditions, when set, is shared with the TrafficPolicyReconciler (its CallGraph field): the analysis
	// records there what each policy's condition should be, and the TrafficPolicyReconciler writes it with
	// its own status patch. That patch replaces the conditions list, so without it a patch made from a cached
	// copy older than this controller's last write would drop the condition, and this controller would
	// write it again: at 1,000 new policies, 1.7 extra status writes per policy instead of 0–1.
	Conditions *CallGraphConditions

	// nextAnalysis is the earliest start of the next analysis: it runs again at most once per
	// analysisSpacing times its own duration, so a burst of policy changes (thousands created at once)
	// costs a few analyses, not one per status patch, and the policies' own reconciles keep the CPU.
	nextAnalysis time.Time
}

// analysisSpacing spaces analyses at this multiple of the last one's duration, and at least
// minAnalysisGap apart.
const (
	analysisSpacing = 4
	minAnalysisGap  = 100 * time.Millisecond
)

// CallGraphConditions holds the CallGraph condition the latest analysis wants on each policy.
type CallGraphConditions struct {
	mu       sync.Mutex
	byPolicy map[types.NamespacedName]metav1.Condition
}

// NewCallGraphConditions returns an empty set: no policy analysed yet.
func NewCallGraphConditions() *CallGraphConditions {
	return &CallGraphConditions{byPolicy: map[types.NamespacedName]metav1.Condition{}}
}

// replace records a whole analysis: policies it left out (deleted) lose their entry.
func (c *CallGraphConditions) replace(byPolicy map[types.NamespacedName]metav1.Condition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byPolicy = byPolicy
}

// lookup returns the condition the latest analysis wants on the policy key, if it saw the policy.
func (c *CallGraphConditions) lookup(key types.NamespacedName) (metav1.Condition, bool) {
	if c == nil {
		return metav1.Condition{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cond, ok := c.byPolicy[key]
	return cond, ok
}

// SetupWithManager adds the controller to mgr.
func (r *CallGraphReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{callGraphKey}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("callgraph").
		// Status changes too: the TrafficPolicyReconciler patches conditions from its cached copy, which
		// may predate this controller's last patch and drop the CallGraph condition; the analysis puts it
		// back.
		Watches(&v1alpha1.TrafficPolicy{}, all).
		// A Service appearing or going changes which policies are in force; its ports say whether it
		// speaks plain HTTP.
		Watches(&corev1.Service{}, all, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				old, okOld := e.ObjectOld.(*corev1.Service)
				cur, okNew := e.ObjectNew.(*corev1.Service)
				return !okOld || !okNew || callgraph.PlainHTTP(old) != callgraph.PlainHTTP(cur)
			},
		})).
		Complete(r)
}

// Reconcile analyses every policy in force and brings each policy's CallGraph condition in line.
func (r *CallGraphReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	// One key, one worker: nextAnalysis needs no lock. Changes meanwhile fold into the requeued key.
	if wait := time.Until(r.nextAnalysis); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	start := time.Now()
	defer func() {
		r.nextAnalysis = time.Now().Add(max(minAnalysisGap, analysisSpacing*time.Since(start)))
	}()
	var policies v1alpha1.TrafficPolicyList
	if err := r.Client.List(ctx, &policies); err != nil {
		return ctrl.Result{}, fmt.Errorf("list trafficpolicies: %w", err)
	}
	var services corev1.ServiceList
	if err := r.Client.List(ctx, &services); err != nil {
		return ctrl.Result{}, fmt.Errorf("list services: %w", err)
	}
	governing := governingPolicies(policies.Items)
	in := callgraph.Input{ServicesKnown: true, Defaults: r.Defaults, Options: r.Options}
	for _, p := range governing {
		in.Policies = append(in.Policies, p)
	}
	for i := range services.Items {
		s := &services.Items[i]
		svc := callgraph.Service{Namespace: s.Namespace, Name: s.Name}
		in.Services = append(in.Services, svc)
		if callgraph.PlainHTTP(s) {
			in.PlainHTTP = append(in.PlainHTTP, svc)
		}
	}
	in.Graph = callgraph.Merge(callgraph.FromAllow(in.Policies), r.Graph)
	report, err := callgraph.Analyze(in)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.Metrics.callGraph(report)

	byPolicy := map[string][]callgraph.Finding{}
	for _, f := range report.Findings {
		for _, p := range f.Policies {
			byPolicy[p] = append(byPolicy[p], f)
		}
	}
	wants := make(map[types.NamespacedName]metav1.Condition, len(policies.Items))
	for i := range policies.Items {
		p := &policies.Items[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		key := p.Namespace + "/" + p.Name
		wants[client.ObjectKeyFromObject(p)] = callGraphCondition(p, governing[p.Namespace+"/"+p.Spec.TargetRef.Name] == p, byPolicy[key])
	}
	if r.Conditions != nil {
		r.Conditions.replace(wants)
	}
	var errs []error
	for i := range policies.Items {
		p := &policies.Items[i]
		want, ok := wants[client.ObjectKeyFromObject(p)]
		if !ok {
			continue
		}
		// A policy whose current generation the TrafficPolicyReconciler has yet to reconcile gets the
		// condition with that reconcile's status patch; its status change brings the analysis back here
		// should the patch have missed it.
		if r.Conditions != nil && p.Status.ObservedGeneration != p.Generation {
			continue
		}
		if err := r.setCondition(ctx, p, want); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return ctrl.Result{}, fmt.Errorf("set CallGraph conditions: %w", errs[0])
	}
	return ctrl.Result{}, nil
}

// governingPolicies returns, by namespace/Service, the policy that governs each Service: the oldest,
// as the TrafficPolicyReconciler decides.
func governingPolicies(items []v1alpha1.TrafficPolicy) map[string]*v1alpha1.TrafficPolicy {
	out := map[string]*v1alpha1.TrafficPolicy{}
	for i := range items {
		p := &items[i]
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		target := p.Namespace + "/" + p.Spec.TargetRef.Name
		if w := out[target]; w == nil || older(p, w) {
			out[target] = p
		}
	}
	return out
}

// callGraphCondition is the CallGraph condition a policy should carry: False with the most severe
// finding's kind as reason when a finding of warning severity or more involves it, else True; Unknown
// for a policy that does not govern its Service.
func callGraphCondition(p *v1alpha1.TrafficPolicy, governs bool, findings []callgraph.Finding) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionCallGraph, ObservedGeneration: p.Generation}
	if !governs {
		c.Status, c.Reason = metav1.ConditionUnknown, v1alpha1.ReasonNotInForce
		c.Message = "another TrafficPolicy governs the Service (see Accepted), so the call-graph analysis leaves this one out"
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonChecked
	c.Message = "no call-graph finding involves this policy"
	if len(findings) == 0 {
		return c
	}
	// Findings come most severe first.
	if findings[0].Severity >= callgraph.Warning {
		c.Status, c.Reason = metav1.ConditionFalse, string(findings[0].Kind)
	} else {
		c.Message = "no call-graph finding of warning severity involves this policy; for information"
	}
	var parts []string
	for i, f := range findings {
		if i == maxConditionFindings {
			parts = append(parts, fmt.Sprintf("and %d more (meshplane check lists them all)", len(findings)-i))
			break
		}
		part := fmt.Sprintf("%s %s (%s): %s", f.Severity, f.Kind, joinPath(f.Path), f.Message)
		if f.Fix != "" {
			part += ". Fix: " + f.Fix
		}
		parts = append(parts, part)
	}
	if c.Status == metav1.ConditionFalse {
		c.Message = strings.Join(parts, "; ")
	} else {
		c.Message += ": " + strings.Join(parts, "; ")
	}
	return c
}

func joinPath(path []callgraph.Service) string {
	names := make([]string, len(path))
	for i, s := range path {
		names[i] = s.String()
	}
	return strings.Join(names, " → ")
}

// setCondition patches p's CallGraph condition when it differs from want, with an optimistic lock so a
// patch built from a stale copy never overwrites the TrafficPolicyReconciler's conditions (a conflict
// retries the whole analysis).
func (r *CallGraphReconciler) setCondition(ctx context.Context, p *v1alpha1.TrafficPolicy, want metav1.Condition) error {
	// A copy: SetStatusCondition below updates the condition in place, and the event compares with
	// what it was (a pointer made a True condition turning False look unchanged, and no event came).
	var cur *metav1.Condition
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionCallGraph); c != nil {
		prev := *c
		cur = &prev
	}
	if cur != nil && cur.Status == want.Status && cur.Reason == want.Reason && cur.Message == want.Message &&
		cur.ObservedGeneration == want.ObservedGeneration {
		return nil
	}
	before := p.DeepCopy()
	meta.SetStatusCondition(&p.Status.Conditions, want)
	if err := r.Client.Status().Patch(ctx, p, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patch status of trafficpolicy %s/%s: %w", p.Namespace, p.Name, err)
	}
	reportCallGraph(ctx, r.Recorder, p, cur, want)
	return nil
}

// reportCallGraph records a Warning event when a policy's CallGraph condition turns False or names another
// finding, whichever controller's patch wrote it.
func reportCallGraph(ctx context.Context, recorder events.EventRecorder, p *v1alpha1.TrafficPolicy, cur *metav1.Condition, want metav1.Condition) {
	log := logf.FromContext(ctx)
	if want.Status == metav1.ConditionFalse && (cur == nil || cur.Status != metav1.ConditionFalse || cur.Message != want.Message) {
		recorder.Eventf(p, nil, corev1.EventTypeWarning, want.Reason, "CallGraph", "%s", truncate(want.Message, maxEventNote))
		log.Info("Call-graph finding", "policy", klog.KObj(p), "reason", want.Reason, "message", want.Message)
	} else if want.Status == metav1.ConditionTrue && cur != nil && cur.Status == metav1.ConditionFalse {
		log.Info("Call-graph findings resolved", "policy", klog.KObj(p))
	}
}

// maxEventNote is below the 1 kB an events.k8s.io Event's note may hold; the condition keeps the whole
// message.
const maxEventNote = 1000

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// callGraph sets the findings gauge from the latest analysis: every kind at its severity, 0 when absent.
func (m *Metrics) callGraph(r *callgraph.Report) {
	counts := map[callgraph.Kind]int{}
	for _, f := range r.Findings {
		counts[f.Kind]++
	}
	for _, k := range callgraph.Kinds {
		m.CallGraphFindings.WithLabelValues(k.Severity.String(), string(k.Kind)).Set(float64(counts[k.Kind]))
	}
}
