package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/desiredstate"
)

// readOwned reads, once per reconcile, the objects the policy generated that exist now (per the cache).
// Generated objects carry the policy's name.
func (r *TrafficPolicyReconciler) readOwned(ctx context.Context, ps *pass) error {
	p := ps.policy
	ps.owned, ps.present = map[string]client.Object{}, map[string]bool{}
	for _, kind := range desiredstate.Kinds {
		obj := desiredstate.New(kind)
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(p), obj); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("get %s %s/%s: %w", kind, p.Namespace, p.Name, err)
		}
		if metav1.IsControlledBy(obj, p) {
			ps.owned[kind], ps.present[kind] = obj, true
		}
	}
	return nil
}

// step is one write: apply obj, or delete it.
type step struct {
	obj    client.Object
	delete bool
}

// apply brings the cluster to the desired state, skipping kinds that have foreign objects.
//
// Make-before-break: Istio applies configuration eventually and per object, so a VirtualService that
// routes to a subset its DestinationRule lacks fails requests (503, no healthy upstream) until both
// arrive. The DestinationRule is written first with every subset the live VirtualService still uses, then
// the VirtualService, then the DestinationRule again without the subsets nobody routes to any more.
// Adding a subset therefore writes the DestinationRule before the VirtualService, and removing one writes
// the VirtualService first.
func (r *TrafficPolicyReconciler) apply(ctx context.Context, ps *pass) error {
	s := ps.desired
	curVS, _ := ps.owned[desiredstate.KindVirtualService].(*networkingv1.VirtualService)
	curDR, _ := ps.owned[desiredstate.KindDestinationRule].(*networkingv1.DestinationRule)
	skipVS, skipDR := len(ps.foreign[desiredstate.KindVirtualService]) > 0, len(ps.foreign[desiredstate.KindDestinationRule]) > 0
	// Without its DestinationRule, a split VirtualService would route to subsets that do not exist.
	holdVS := skipVS || (skipDR && len(subsetsRoutedTo(s.VirtualService)) > 0)

	var steps []step
	switch {
	case s.DestinationRule != nil && !skipDR:
		bridge := withSubsetsInUse(s.DestinationRule, curDR, curVS)
		steps = append(steps, step{obj: bridge})
		if !holdVS {
			steps = append(steps, step{obj: s.VirtualService})
			if bridge != s.DestinationRule {
				steps = append(steps, step{obj: s.DestinationRule})
			}
		}
	default:
		if !holdVS {
			steps = append(steps, step{obj: s.VirtualService})
		}
		if s.DestinationRule == nil && curDR != nil && (!holdVS || len(subsetsRoutedTo(curVS)) == 0) {
			steps = append(steps, step{obj: curDR, delete: true})
		}
	}
	for _, kind := range []string{desiredstate.KindPeerAuthentication, desiredstate.KindAuthorizationPolicy} {
		switch want, cur := s.Object(kind), ps.owned[kind]; {
		case want != nil:
			steps = append(steps, step{obj: want})
		case cur != nil:
			steps = append(steps, step{obj: cur, delete: true})
		}
	}

	for _, st := range steps {
		if st.delete {
			if err := r.remove(ctx, ps, st.obj); err != nil {
				return err
			}
			continue
		}
		if err := r.write(ctx, ps, st.obj); err != nil {
			return err
		}
	}
	return nil
}

// subsetsRoutedTo returns the subsets a VirtualService routes to.
func subsetsRoutedTo(vs *networkingv1.VirtualService) []string {
	if vs == nil {
		return nil
	}
	var subsets []string
	for _, route := range vs.Spec.Http {
		for _, d := range route.Route {
			if s := d.GetDestination().GetSubset(); s != "" && !slices.Contains(subsets, s) {
				subsets = append(subsets, s)
			}
		}
	}
	return subsets
}

// withSubsetsInUse returns want plus the subsets of the live DestinationRule that the live
// VirtualService still routes to, or want itself when it already has them all.
func withSubsetsInUse(want, liveDR *networkingv1.DestinationRule, liveVS *networkingv1.VirtualService) *networkingv1.DestinationRule {
	if liveDR == nil {
		return want
	}
	var bridge *networkingv1.DestinationRule
	for _, name := range subsetsRoutedTo(liveVS) {
		if slices.ContainsFunc(want.Spec.Subsets, func(s *networkingapi.Subset) bool { return s.GetName() == name }) {
			continue
		}
		i := slices.IndexFunc(liveDR.Spec.Subsets, func(s *networkingapi.Subset) bool { return s.GetName() == name })
		if i < 0 {
			continue
		}
		if bridge == nil {
			bridge = want.DeepCopy()
		}
		bridge.Spec.Subsets = append(bridge.Spec.Subsets, proto.Clone(liveDR.Spec.Subsets[i]).(*networkingapi.Subset))
	}
	if bridge == nil {
		return want
	}
	return bridge
}

// write applies obj with server-side apply under FieldManager, owned by p. An object of that name that p
// does not control is left alone and reported. Fields other managers added to a generated object are
// removed: the object is Meshplane's, and it must match the policy exactly.
func (r *TrafficPolicyReconciler) write(ctx context.Context, ps *pass, obj client.Object) error {
	p, kind, key := ps.policy, kindOf(obj), client.ObjectKeyFromObject(obj)
	cached := desiredstate.New(kind)
	err := r.Client.Get(ctx, key, cached)
	switch {
	case apierrors.IsNotFound(err):
		// Reconciles return once the cache has seen their writes (awaitCache), so an object missing
		// from it is new: create it without reading it first. Ownership is not forced, so an object of
		// that name someone created meanwhile conflicts and is judged on the live object below instead
		// of being taken over.
		created, err := r.applyOwned(ctx, p, obj, false)
		if err == nil {
			ps.written.applied(kind, created, "")
			ps.present[kind] = true
			r.wrote(ctx, obj, "create")
			return nil
		}
		if !apierrors.IsConflict(err) {
			return err
		}
		cached = nil
	case err != nil:
		return fmt.Errorf("get %s %s: %w", kind, key, err)
	case matches(cached, obj, p):
		ps.present[kind] = true
		return nil
	}
	// The cache may lag behind someone else's write: decide on the live object.
	live := desiredstate.New(kind)
	exists := true
	if err := r.APIReader.Get(ctx, key, live); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get %s %s: %w", kind, key, err)
		}
		exists = false
	}
	if exists && !metav1.IsControlledBy(live, p) {
		r.Metrics.ApplyErrors.WithLabelValues(kind).Inc()
		return fmt.Errorf("apply %s %s: it exists and was not generated by this TrafficPolicy; rename or remove it", kind, key)
	}
	if exists && matches(live, obj, p) {
		ps.present[kind] = true
		return nil
	}
	result, err := r.applyOwned(ctx, p, obj, true)
	if err != nil {
		return err
	}
	before := ""
	if cached != nil {
		before = cached.GetResourceVersion()
	}
	ps.written.applied(kind, result, before)
	ps.present[kind] = true
	op := "update"
	if !exists {
		op = "create"
	}
	r.wrote(ctx, obj, op)
	return nil
}

// applyOwned server-side-applies obj owned by p, forcing ownership of conflicting fields if force, and
// returns the object as written.
func (r *TrafficPolicyReconciler) applyOwned(ctx context.Context, p *v1alpha1.TrafficPolicy, obj client.Object, force bool) (client.Object, error) {
	kind, key := kindOf(obj), client.ObjectKeyFromObject(obj)
	u, err := desiredstate.Unstructured(obj)
	if err != nil {
		return nil, err
	}
	if err := controllerutil.SetControllerReference(p, u, r.Scheme); err != nil {
		return nil, fmt.Errorf("apply %s %s: %w", kind, key, err)
	}
	opts := []client.ApplyOption{client.FieldOwner(FieldManager)}
	if force {
		opts = append(opts, client.ForceOwnership)
	}
	applied := u.DeepCopy()
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(applied), opts...); err != nil {
		if force || !apierrors.IsConflict(err) {
			r.Metrics.ApplyErrors.WithLabelValues(kind).Inc()
		}
		return nil, fmt.Errorf("apply %s %s: %w", kind, key, err)
	}
	if onlyManager(applied, FieldManager) {
		// No other manager owns a field, so the object holds exactly what was applied: nothing to remove,
		// and no need to decode it to compare (decoding every response was 8% of the manager's CPU at
		// 5,000 policies in `make bench`).
		return applied, nil
	}
	result, err := typed(applied, kind)
	if err != nil {
		return nil, err
	}
	if proto.Equal(desiredstate.Spec(result), desiredstate.Spec(obj)) {
		return result, nil
	}
	// Another manager owns fields the policy does not set (e.g. a hand-added fault injection): apply
	// cannot remove what it never owned, so replace the object.
	u.SetResourceVersion(result.GetResourceVersion())
	u.SetAnnotations(result.GetAnnotations())
	u.SetFinalizers(result.GetFinalizers())
	if err := r.Client.Update(ctx, u, client.FieldOwner(FieldManager)); err != nil {
		r.Metrics.ApplyErrors.WithLabelValues(kind).Inc()
		return nil, fmt.Errorf("replace %s %s: %w", kind, key, err)
	}
	return u, nil
}

// onlyManager reports whether manager is the only field manager of obj.
func onlyManager(obj client.Object, manager string) bool {
	fields := obj.GetManagedFields()
	for _, f := range fields {
		if f.Manager != manager {
			return false
		}
	}
	return len(fields) > 0
}

func kindOf(obj client.Object) string { return obj.GetObjectKind().GroupVersionKind().Kind }

// wrote counts and logs a write that changed the cluster.
func (r *TrafficPolicyReconciler) wrote(ctx context.Context, obj client.Object, op string) {
	kind := kindOf(obj)
	r.Metrics.Writes.WithLabelValues(kind, op).Inc()
	logf.FromContext(ctx).Info("Applied "+kind, "object", klog.KObj(obj), "op", op)
}

// matches reports whether a live object is p's and already says what obj says.
func matches(live, obj client.Object, p *v1alpha1.TrafficPolicy) bool {
	if !metav1.IsControlledBy(live, p) {
		return false
	}
	for k, v := range obj.GetLabels() {
		if live.GetLabels()[k] != v {
			return false
		}
	}
	return proto.Equal(desiredstate.Spec(live), desiredstate.Spec(obj))
}

// typed converts an apply response to its Go type.
func typed(u *unstructured.Unstructured, kind string) (client.Object, error) {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	obj := desiredstate.New(kind)
	if err := json.Unmarshal(b, obj); err != nil {
		return nil, fmt.Errorf("decode %s %s/%s: %w", kind, u.GetNamespace(), u.GetName(), err)
	}
	return obj, nil
}

// remove deletes a generated object, only if it is still the one observed.
func (r *TrafficPolicyReconciler) remove(ctx context.Context, ps *pass, obj client.Object) error {
	kind := kindOf(obj)
	uid := obj.GetUID()
	err := r.Client.Delete(ctx, obj, client.Preconditions{UID: &uid})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		ps.present[kind] = false
		return nil
	case err != nil:
		r.Metrics.ApplyErrors.WithLabelValues(kind).Inc()
		return fmt.Errorf("delete %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), err)
	}
	ps.present[kind] = false
	ps.written.removed(kind, obj)
	r.Metrics.Writes.WithLabelValues(kind, "delete").Inc()
	logf.FromContext(ctx).Info("Deleted "+kind, "object", klog.KObj(obj))
	return nil
}

// removeAll deletes every object the policy generated, in the reverse of apply order.
func (r *TrafficPolicyReconciler) removeAll(ctx context.Context, ps *pass) error {
	for _, kind := range slices.Backward(desiredstate.Kinds) {
		if obj := ps.owned[kind]; obj != nil {
			if err := r.remove(ctx, ps, obj); err != nil {
				return err
			}
		}
	}
	return nil
}
