package desiredstate

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Unstructured returns obj as the document to write: its JSON without status or a null creationTimestamp,
// and with the zero values Istio's proto JSON encoding drops put back where they carry meaning. Without
// that, `retries: {attempts: 0}` would be written as `retries: {}` (the fluxcd/flagger#1569 trap: the
// same behaviour in Istio, but unreadable), a DISABLE tls mode as `tls: {}` and an ALLOW action not at
// all. Both `meshplane render` and the operator's server-side apply write this form.
func Unstructured(obj client.Object) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %T %s: %w", obj, obj.GetName(), err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode %T %s: %w", obj, obj.GetName(), err)
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok && meta["creationTimestamp"] == nil {
		delete(meta, "creationTimestamp")
	}
	u := &unstructured.Unstructured{Object: m}
	spec, _ := m["spec"].(map[string]any)
	switch u.GetKind() {
	case "VirtualService":
		routes, _ := spec["http"].([]any)
		for _, r := range routes {
			if retries, ok := r.(map[string]any)["retries"].(map[string]any); ok {
				setDefault(retries, "attempts", int64(0))
			}
		}
	case "DestinationRule":
		if policy, ok := spec["trafficPolicy"].(map[string]any); ok {
			if tls, ok := policy["tls"].(map[string]any); ok {
				setDefault(tls, "mode", "DISABLE")
			}
		}
	case "AuthorizationPolicy":
		if spec != nil {
			setDefault(spec, "action", "ALLOW")
		}
	}
	return u, nil
}

func setDefault(m map[string]any, key string, v any) {
	if _, ok := m[key]; !ok {
		m[key] = v
	}
}
