// Package manifests renders the kustomize manifests in manifests/ with the kubectl that matches the
// test API server, and checks what they render: the hardening policy every workload must meet (Check)
// and the pod-to-pod connections their NetworkPolicies allow (Edges). Its tests submit every rendered
// object to a real kube-apiserver and run Istio's analyzers over it.
package manifests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/operator/localplatform/controlplane"
)

// Overlays are the kustomize overlays under manifests/overlays that users apply.
var Overlays = []string{"dev", "prod"}

// RepoRoot returns the repository's root directory (the operator module's parent).
func RepoRoot() (string, error) {
	op, err := controlplane.ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Dir(op), nil
}

// Build runs `kubectl kustomize dir` (dir relative to the repository root) and returns the YAML.
func Build(ctx context.Context, dir string) ([]byte, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	kubectl, err := devserver.Binary("kubectl", "kube")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", filepath.Join(root, dir))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s: %w: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Decode splits multi-document YAML into objects, skipping empty documents. Numbers decode as the API
// machinery's unstructured objects hold them (int64 where whole).
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for n := 1; ; n++ {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw.Raw); err != nil {
			return nil, fmt.Errorf("decode document %d: %w", n, err)
		}
		if u.GetName() == "" {
			return nil, fmt.Errorf("document %d (%s) has no name", n, u.GetKind())
		}
		objs = append(objs, u)
	}
}

// ID names an object as people read it: "Deployment shop/gateway", "ClusterRole meshplane-operator".
func ID(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return u.GetKind() + " " + ns + "/" + u.GetName()
	}
	return u.GetKind() + " " + u.GetName()
}
