package controller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/internal/desiredstate"
)

// A canary rollout is the one thing the reconciler decides from its own previous status. Everything else
// it decides from what it observes, so it can rebuild the same objects at any time; a rollout moves on a
// clock and on metrics that are gone once measured, so where it stands (phase, weight, the next check's
// time, counters) can only be remembered, and status.canary is that memory. The reconciler still never
// writes a second object for it: the rollout's weight goes into the one VirtualService the policy owns,
// and a restarted operator resumes from status, running an overdue check once rather than starting
// over or skipping it. Status writes do not trigger reconciles (GenerationChangedPredicate), so the
// rollout's clock is RequeueAfter: each decision says when to look again.

// CanaryMetrics measures the two subsets of a canary over a window ending at a time; *canary.Prometheus
// is the operator's.
type CanaryMetrics interface {
	Measure(ctx context.Context, t canary.Target, window time.Duration, at time.Time) (canary.Measurement, error)
}

// decideCanary decides where the policy's rollout goes now, from its status, the clock and (when a check
// is due) the metrics. Nil for a policy without a (valid) canary. Nothing is kept until the decided weight
// is in force: recordCanary keeps it then.
func (r *TrafficPolicyReconciler) decideCanary(ctx context.Context, ps *pass) *canary.Decision {
	p := ps.policy
	if p.Spec.Canary == nil || len(p.Validate()) > 0 {
		return nil
	}
	now := r.Now()
	in := canary.Input{Spec: &p.Spec, Status: p.Status.Canary, Now: now}
	if r.CanaryMetrics != nil {
		target := canary.Target{Namespace: p.Namespace, Service: p.Spec.TargetRef.Name,
			Stable: subsetLabels(p, p.Spec.Canary.Stable), Candidate: subsetLabels(p, p.Spec.Canary.Candidate)}
		if l := p.Spec.Canary.Analysis.Latency; l != nil {
			target.Quantile, _ = l.Quantile.Float()
		}
		in.Measure = func(window time.Duration) (canary.Measurement, error) {
			return r.CanaryMetrics.Measure(ctx, target, window, now)
		}
	}
	d := canary.Next(in)
	return &d
}

// rollout is where Build puts the candidate: the decided weight, or none without a canary.
func (ps *pass) rollout() desiredstate.Rollout {
	if ps.canary == nil {
		return desiredstate.Rollout{}
	}
	return desiredstate.Rollout{CandidateWeight: ps.canary.Status.Weight}
}

func subsetLabels(p *v1alpha1.TrafficPolicy, subset string) map[string]string {
	for _, s := range p.Spec.Split {
		if s.Subset == subset {
			labels := make(map[string]string, len(s.Labels))
			for k, v := range s.Labels {
				labels[k] = string(v)
			}
			return labels
		}
	}
	return nil
}

// recordCanary writes the rollout into status once the decided weight is in force, announces what
// changed, and returns when to decide again. A decision whose weight could not be applied (a foreign
// VirtualService, a failed write, a policy not accepted) is dropped: the rollout stays where status says,
// and the Canary condition says why it waits.
func (r *TrafficPolicyReconciler) recordCanary(ctx context.Context, ps *pass, out outcome) time.Duration {
	p := ps.policy
	if p.Spec.Canary == nil {
		p.Status.Canary = nil
		meta.RemoveStatusCondition(&p.Status.Conditions, v1alpha1.ConditionCanary)
		return 0
	}
	d := ps.canary
	if d == nil || out.readyReason != v1alpha1.ReasonApplied {
		reason, message := "NotApplied", "the rollout waits: "+out.readyMessage
		switch {
		case out.acceptedReason == v1alpha1.ReasonHostConflict:
			reason, message = v1alpha1.ReasonHostConflict, "the rollout does not move while another VirtualService or DestinationRule configures the host: "+out.acceptedMessage
		case out.acceptedReason != v1alpha1.ReasonAccepted && out.acceptedReason != "":
			reason, message = v1alpha1.ReasonNotAccepted, "the rollout waits while the policy is not accepted: "+out.acceptedMessage
		}
		if p.Status.Canary == nil {
			p.Status.Canary = &v1alpha1.CanaryStatus{Phase: v1alpha1.CanaryInitialized, Revision: canaryRevision(p)}
		}
		p.Status.Canary.Message = message
		setCanaryCondition(p, metav1.ConditionFalse, reason, message)
		return 0
	}
	p.Status.Canary = &d.Status
	setCanaryCondition(p, d.Condition, d.Reason, d.Status.Message)
	if d.Check != nil {
		r.Metrics.canary.checked(p, d.Check.Result)
	}
	if e := d.Event; e != nil {
		kind := corev1.EventTypeNormal
		if e.Warning {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(p, nil, kind, e.Reason, "Canary", "%s", truncate(e.Message, maxEventNote))
		logf.FromContext(ctx).Info("Canary "+e.Reason, "policy", klog.KObj(p), "weight", d.Status.Weight, "message", e.Message)
	}
	return d.Requeue
}

// canaryRevision is the revision of a valid canary, or "" for one that cannot be built.
func canaryRevision(p *v1alpha1.TrafficPolicy) string {
	if len(p.Validate()) > 0 {
		return ""
	}
	return canary.Revision(&p.Spec)
}

func setCanaryCondition(p *v1alpha1.TrafficPolicy, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionCanary, Status: status,
		Reason: reason, Message: truncate(message, 32*1024), ObservedGeneration: p.Generation})
}
