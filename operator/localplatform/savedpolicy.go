package localplatform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"meshplane.dev/operator/api/v1alpha1"
)

// drillManager is the field manager of the drill's own writes to a TrafficPolicy.
const drillManager = "meshplane-drill"

// restoreTimeout bounds the restore, which runs even after the drill was interrupted.
const restoreTimeout = time.Minute

// savedPolicy is a TrafficPolicy as it was before the drill replaced its spec. Restoring puts back that
// spec, its labels and annotations, and who owned which field (managedFields), so the user's next
// `kubectl apply` or `kubectl edit` behaves as if the drill never ran; a policy that did not exist is
// deleted.
type savedPolicy struct {
	key    client.ObjectKey
	before *v1alpha1.TrafficPolicy // nil: there was none
}

func savePolicy(ctx context.Context, c client.Client, key client.ObjectKey) (*savedPolicy, error) {
	p := &v1alpha1.TrafficPolicy{}
	switch err := c.Get(ctx, key, p); {
	case apierrors.IsNotFound(err):
		return &savedPolicy{key: key}, nil
	case err != nil:
		return nil, fmt.Errorf("save trafficpolicy %s: %w", key, err)
	}
	return &savedPolicy{key: key, before: p}, nil
}

// replaceSpec makes the policy's spec exactly the manifest's, creating the policy if needed. An update,
// not a server-side apply: apply would leave the fields other managers own (a user's kubectl edit) in
// place, and the scenario would run on a mix of both.
func replaceSpec(ctx context.Context, c client.Client, key client.ObjectKey, manifest []byte) error {
	var want v1alpha1.TrafficPolicy
	if err := yaml.UnmarshalStrict(manifest, &want); err != nil {
		return fmt.Errorf("trafficpolicy manifest: %w", err)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live := &v1alpha1.TrafficPolicy{}
		err := c.Get(ctx, key, live)
		if apierrors.IsNotFound(err) {
			live = &v1alpha1.TrafficPolicy{}
			live.Namespace, live.Name, live.Spec = key.Namespace, key.Name, want.Spec
			return c.Create(ctx, live, client.FieldOwner(drillManager))
		}
		if err != nil {
			return err
		}
		live.Spec = want.Spec
		return c.Update(ctx, live, client.FieldOwner(drillManager))
	})
}

// restore puts the policy back as it was saved and says what it did.
func (s *savedPolicy) restore(ctx context.Context, c client.Client) (string, error) {
	if s.before == nil {
		live := &v1alpha1.TrafficPolicy{}
		live.Namespace, live.Name = s.key.Namespace, s.key.Name
		if err := c.Delete(ctx, live); client.IgnoreNotFound(err) != nil {
			return "", fmt.Errorf("delete the drill's trafficpolicy %s: %w", s.key, err)
		}
		return fmt.Sprintf("Deleted the drill's TrafficPolicy %s: there was none before the drill.", s.key), nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live := &v1alpha1.TrafficPolicy{}
		err := c.Get(ctx, s.key, live)
		if apierrors.IsNotFound(err) {
			// Deleted meanwhile: bring it back as it was.
			live = s.before.DeepCopy()
			live.ResourceVersion, live.UID, live.ManagedFields, live.Status = "", "", nil, v1alpha1.TrafficPolicyStatus{}
			return c.Create(ctx, live, client.FieldOwner(drillManager))
		}
		if err != nil {
			return err
		}
		live.Spec, live.Labels, live.Annotations = s.before.Spec, s.before.Labels, s.before.Annotations
		return c.Update(ctx, live, client.FieldOwner(drillManager))
	})
	if err != nil {
		return "", fmt.Errorf("restore trafficpolicy %s: %w", s.key, err)
	}
	// A second update that changes nothing but managedFields: the API server takes managedFields given in
	// an update as they are, while the first update made the drill the owner of every field it changed.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live := &v1alpha1.TrafficPolicy{}
		if err := c.Get(ctx, s.key, live); err != nil {
			return err
		}
		if equality.Semantic.DeepEqual(live.ManagedFields, s.before.ManagedFields) {
			return nil
		}
		live.ManagedFields = s.before.ManagedFields
		return c.Update(ctx, live)
	})
	if err != nil {
		return "", fmt.Errorf("restore the field owners of trafficpolicy %s: %w", s.key, err)
	}
	spec, err := json.Marshal(s.before.Spec)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("Restored TrafficPolicy %s as it was before the drill: %s", s.key, spec), nil
}

// withSavedPolicy runs f with the policy saved and restores it afterwards, also when ctx is cancelled
// (Ctrl-C) or f fails; the restore has its own minute. report receives what was restored.
func withSavedPolicy(ctx context.Context, c client.Client, key client.ObjectKey, report func(string), f func(context.Context) error) error {
	saved, err := savePolicy(ctx, c, key)
	if err != nil {
		return err
	}
	ferr := f(ctx)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	msg, rerr := saved.restore(rctx, c)
	if rerr == nil {
		report(msg)
	}
	return errors.Join(ferr, rerr)
}
