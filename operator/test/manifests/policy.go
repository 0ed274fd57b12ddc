package manifests

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	k8snetworkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// Violation is one way an object falls short of the platform's policy.
type Violation struct {
	Object string // ID of the object
	Detail string
}

func (v Violation) String() string { return v.Object + ": " + v.Detail }

// Workload is an object that runs pods, with its pod template.
type Workload struct {
	Object    *unstructured.Unstructured
	Namespace string
	Name      string
	Template  corev1.PodTemplateSpec
}

// podTemplatePaths says where each workload kind keeps its pod template.
var podTemplatePaths = map[string][]string{
	"apps/Deployment":  {"spec", "template"},
	"apps/StatefulSet": {"spec", "template"},
	"apps/DaemonSet":   {"spec", "template"},
	"apps/ReplicaSet":  {"spec", "template"},
	"batch/Job":        {"spec", "template"},
	"batch/CronJob":    {"spec", "jobTemplate", "spec", "template"},
}

// Workloads returns every object that runs pods, in input order. A bare Pod is an error: the platform
// ships controllers, never pods.
func Workloads(objs []*unstructured.Unstructured) ([]Workload, error) {
	var out []Workload
	for _, u := range objs {
		gk := u.GroupVersionKind().GroupKind()
		if gk.Group == "" && gk.Kind == "Pod" {
			return nil, fmt.Errorf("%s: ship a controller (Deployment, StatefulSet, ...), not a bare Pod", ID(u))
		}
		path, ok := podTemplatePaths[gk.Group+"/"+gk.Kind]
		if !ok {
			continue
		}
		m, found, err := unstructured.NestedMap(u.Object, path...)
		if err != nil || !found {
			return nil, fmt.Errorf("%s: no pod template at %s", ID(u), strings.Join(path, "."))
		}
		w := Workload{Object: u, Namespace: u.GetNamespace(), Name: u.GetName()}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(m, &w.Template, true); err != nil {
			return nil, fmt.Errorf("%s: pod template: %w", ID(u), err)
		}
		out = append(out, w)
	}
	return out, nil
}

// Check returns every violation of the platform's policy in objs:
//   - every container has readiness and liveness probes, CPU and memory requests and limits, and a
//     hardened securityContext (non-root, read-only root filesystem, no privilege escalation, seccomp
//     RuntimeDefault, all capabilities dropped and none added, not privileged);
//   - a container's liveness probe checks something other than its readiness probe;
//   - every emptyDir has a sizeLimit; a container that mounts one on disk requests and limits
//     ephemeral-storage, and the pod's limits hold its emptyDirs' sizeLimits;
//   - a Deployment uses strategy Recreate only when it mounts a PersistentVolumeClaim;
//   - every image (init containers too) has a tag other than latest, or a digest;
//   - every Service port declares its protocol the way Istio reads it (appProtocol, else the port name);
//   - every workload's namespace denies by default, and a NetworkPolicy of its own selects its pods.
func Check(objs []*unstructured.Unstructured) ([]Violation, error) {
	workloads, err := Workloads(objs)
	if err != nil {
		return nil, err
	}
	var out []Violation
	for _, w := range workloads {
		for _, d := range checkPod(&w.Template.Spec) {
			out = append(out, Violation{Object: ID(w.Object), Detail: d})
		}
		for _, d := range checkEphemeralStorage(&w.Template.Spec) {
			out = append(out, Violation{Object: ID(w.Object), Detail: d})
		}
		if d := checkStrategy(w); d != "" {
			out = append(out, Violation{Object: ID(w.Object), Detail: d})
		}
	}
	for _, u := range objs {
		if u.GetAPIVersion() != "v1" || u.GetKind() != "Service" {
			continue
		}
		var svc corev1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &svc, true); err != nil {
			return nil, fmt.Errorf("%s: %w", ID(u), err)
		}
		for _, d := range checkService(&svc) {
			out = append(out, Violation{Object: ID(u), Detail: d})
		}
	}
	policies, err := networkPolicies(objs)
	if err != nil {
		return nil, err
	}
	for _, w := range workloads {
		if d := checkIsolated(w, policies[w.Namespace]); d != "" {
			out = append(out, Violation{Object: ID(w.Object), Detail: d})
		}
	}
	return out, nil
}

func checkPod(spec *corev1.PodSpec) []string {
	var out []string
	for _, c := range spec.InitContainers {
		out = append(out, checkImage(c)...)
		out = append(out, checkSecurity(c, spec.SecurityContext)...)
		out = append(out, checkResources(c)...)
	}
	for _, c := range spec.Containers {
		out = append(out, checkImage(c)...)
		out = append(out, checkSecurity(c, spec.SecurityContext)...)
		out = append(out, checkResources(c)...)
		if c.ReadinessProbe == nil {
			out = append(out, fmt.Sprintf("container %s: no readinessProbe", c.Name))
		}
		if c.LivenessProbe == nil {
			out = append(out, fmt.Sprintf("container %s: no livenessProbe", c.Name))
		}
		if c.ReadinessProbe != nil && c.LivenessProbe != nil && equality.Semantic.DeepEqual(c.ReadinessProbe.ProbeHandler, c.LivenessProbe.ProbeHandler) {
			out = append(out, fmt.Sprintf("container %s: livenessProbe checks what readinessProbe checks (%s): a failing dependency would restart the container instead of taking it out of its Service",
				c.Name, describeProbe(c.LivenessProbe.ProbeHandler)))
		}
	}
	return out
}

// describeProbe names what a probe checks, as a person reads it.
func describeProbe(h corev1.ProbeHandler) string {
	switch {
	case h.HTTPGet != nil:
		return fmt.Sprintf("GET %s on port %s", h.HTTPGet.Path, h.HTTPGet.Port.String())
	case h.TCPSocket != nil:
		return "TCP port " + h.TCPSocket.Port.String()
	case h.GRPC != nil:
		return fmt.Sprintf("gRPC port %d", h.GRPC.Port)
	case h.Exec != nil:
		return "exec " + strings.Join(h.Exec.Command, " ")
	}
	return "no handler"
}

// checkEphemeralStorage bounds the node disk a pod may fill. An emptyDir without a sizeLimit grows until
// the node runs short and evicts whatever it picks; with one, the kubelet evicts this pod. The kubelet
// also evicts a pod whose disk use (emptyDirs, logs, writable layers) passes the sum of its containers'
// ephemeral-storage limits, so those limits must hold the sizeLimits, and the requests let the scheduler
// place the pod where that much disk is free. Memory-backed emptyDirs count as memory instead.
func checkEphemeralStorage(spec *corev1.PodSpec) []string {
	var out []string
	onDisk := map[string]bool{}
	var sizeLimits resource.Quantity
	for _, v := range spec.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		if v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.IsZero() {
			out = append(out, fmt.Sprintf("emptyDir %s: no sizeLimit", v.Name))
		} else if v.EmptyDir.Medium != corev1.StorageMediumMemory {
			sizeLimits.Add(*v.EmptyDir.SizeLimit)
		}
		if v.EmptyDir.Medium != corev1.StorageMediumMemory {
			onDisk[v.Name] = true
		}
	}
	var limits resource.Quantity
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if q, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]; ok {
			limits.Add(q)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return onDisk[m.Name] }) {
			continue
		}
		for _, need := range []struct {
			what string
			list corev1.ResourceList
		}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
			if q, ok := need.list[corev1.ResourceEphemeralStorage]; !ok || q.IsZero() {
				out = append(out, fmt.Sprintf("container %s: mounts an emptyDir but has no resources.%s.ephemeral-storage", c.Name, need.what))
			}
		}
	}
	if !limits.IsZero() && limits.Cmp(sizeLimits) < 0 {
		out = append(out, fmt.Sprintf("ephemeral-storage limits (%s in all) are below the emptyDirs' sizeLimits (%s in all): the kubelet would evict the pod before an emptyDir is full",
			limits.String(), sizeLimits.String()))
	}
	return out
}

// checkStrategy: Recreate stops every pod before starting new ones, an outage on each rollout. It is
// needed only when two pods cannot run side by side on the same storage, that is when the pods mount a
// PersistentVolumeClaim; an emptyDir is each pod's own.
func checkStrategy(w Workload) string {
	if w.Object.GroupVersionKind().Kind != "Deployment" {
		return ""
	}
	strategy, _, _ := unstructured.NestedString(w.Object.Object, "spec", "strategy", "type")
	if strategy != string(appsv1.RecreateDeploymentStrategyType) {
		return ""
	}
	if slices.ContainsFunc(w.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil }) {
		return ""
	}
	return "strategy Recreate without a PersistentVolumeClaim: no storage is shared between old and new pods, so every rollout is an outage for nothing (use RollingUpdate)"
}

// CheckProduction returns the violations of what production adds to Check: every Secret a container
// reads (env, envFrom, volumes) is required, so a missing credential keeps the pod from starting
// instead of letting the program fall back to its default (Grafana's is admin/admin).
func CheckProduction(objs []*unstructured.Unstructured) ([]Violation, error) {
	workloads, err := Workloads(objs)
	if err != nil {
		return nil, err
	}
	var out []Violation
	bad := func(w Workload, format string, args ...any) {
		out = append(out, Violation{Object: ID(w.Object), Detail: fmt.Sprintf(format, args...)})
	}
	optional := func(b *bool) bool { return b != nil && *b }
	for _, w := range workloads {
		spec := w.Template.Spec
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			for _, e := range c.Env {
				if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && optional(ref.SecretKeyRef.Optional) {
					bad(w, "container %s: env %s: Secret %s (key %s) is optional: without it the pod starts with the program's default", c.Name, e.Name, ref.SecretKeyRef.Name, ref.SecretKeyRef.Key)
				}
			}
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil && optional(e.SecretRef.Optional) {
					bad(w, "container %s: envFrom Secret %s is optional: without it the pod starts with the program's defaults", c.Name, e.SecretRef.Name)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil && optional(v.Secret.Optional) {
				bad(w, "volume %s: Secret %s is optional: without it the pod starts with an empty directory", v.Name, v.Secret.SecretName)
			}
		}
	}
	return out, nil
}

// checkImage requires a pinned image: a digest, or a tag other than latest (an untagged image is latest).
func checkImage(c corev1.Container) []string {
	ref := c.Image
	if strings.Contains(ref, "@sha256:") {
		return nil
	}
	last := ref[strings.LastIndex(ref, "/")+1:] // a registry's :port is before the last slash
	i := strings.LastIndex(last, ":")
	switch {
	case ref == "":
		return []string{fmt.Sprintf("container %s: no image", c.Name)}
	case i < 0:
		return []string{fmt.Sprintf("container %s: image %s has no tag (pulls latest)", c.Name, ref)}
	case last[i+1:] == "latest":
		return []string{fmt.Sprintf("container %s: image %s is not pinned (latest)", c.Name, ref)}
	}
	return nil
}

func checkSecurity(c corev1.Container, pod *corev1.PodSecurityContext) []string {
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	var out []string
	bad := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("container %s: ", c.Name)+fmt.Sprintf(format, args...))
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = pod.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		bad("runAsNonRoot is not true (container or pod securityContext)")
	}
	user := sc.RunAsUser
	if user == nil {
		user = pod.RunAsUser
	}
	if user != nil && *user == 0 {
		bad("runAsUser is 0 (root)")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("securityContext.readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("securityContext.allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		bad("securityContext.privileged is true")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		bad("seccompProfile is not RuntimeDefault (container or pod securityContext)")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		bad("securityContext.capabilities.drop does not contain ALL")
	}
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
		bad("securityContext.capabilities.add is %v", sc.Capabilities.Add)
	}
	return out
}

func checkResources(c corev1.Container) []string {
	var out []string
	for _, need := range []struct {
		what string
		list corev1.ResourceList
	}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := need.list[r]; !ok || q.IsZero() {
				out = append(out, fmt.Sprintf("container %s: no resources.%s.%s", c.Name, need.what, r))
			}
		}
	}
	return out
}

// istioProtocols are the protocols Istio reads from a Service port (istio.io/istio
// pkg/config/protocol.Parse), lower case.
var istioProtocols = []string{"tcp", "udp", "grpc", "grpc-web", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis", "mysql"}

// istioProtocol returns the protocol Istio selects for a Service port, as istio.io/istio
// pkg/config/kube.ConvertProtocol does: UDP ports are UDP; appProtocol, when set, replaces the port name
// (so a bad appProtocol is not rescued by a good name); the name counts up to its first '-'
// ("grpc-web" whole). It returns "" where Istio would fall back to protocol sniffing or TCP.
func istioProtocol(p corev1.ServicePort) string {
	if p.Protocol == corev1.ProtocolUDP {
		return "udp"
	}
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
		switch name {
		case "kubernetes.io/h2c":
			return "http2"
		case "kubernetes.io/ws":
			return "http"
		case "kubernetes.io/wss":
			return "https"
		}
	}
	name = strings.ToLower(name)
	if strings.HasPrefix(name, "grpc-web") {
		return "grpc-web"
	}
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	if slices.Contains(istioProtocols, name) {
		return name
	}
	return ""
}

func checkService(svc *corev1.Service) []string {
	var out []string
	for _, p := range svc.Spec.Ports {
		if istioProtocol(p) != "" {
			continue
		}
		app := "none"
		if p.AppProtocol != nil {
			app = *p.AppProtocol
		}
		out = append(out, fmt.Sprintf("port %d (name %q, appProtocol %s): Istio cannot tell its protocol; name it <protocol>[-suffix] or set appProtocol (%s)",
			p.Port, p.Name, app, strings.Join(istioProtocols, ", ")))
	}
	return out
}

// networkPolicies returns the NetworkPolicies by namespace.
func networkPolicies(objs []*unstructured.Unstructured) (map[string][]k8snetworkingv1.NetworkPolicy, error) {
	out := map[string][]k8snetworkingv1.NetworkPolicy{}
	for _, u := range objs {
		if u.GetAPIVersion() != "networking.k8s.io/v1" || u.GetKind() != "NetworkPolicy" {
			continue
		}
		var np k8snetworkingv1.NetworkPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &np, true); err != nil {
			return nil, fmt.Errorf("%s: %w", ID(u), err)
		}
		out[np.Namespace] = append(out[np.Namespace], np)
	}
	return out, nil
}

// checkIsolated requires a default deny for both directions in the workload's namespace, so nothing is
// allowed that no policy names, and a policy that selects the workload's pods by label (a policy for
// every pod of the namespace alone says nothing about this workload's own traffic).
func checkIsolated(w Workload, policies []k8snetworkingv1.NetworkPolicy) string {
	denies, own := false, false
	for _, np := range policies {
		types := policyTypes(np)
		if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 {
			if slices.Contains(types, k8snetworkingv1.PolicyTypeIngress) && slices.Contains(types, k8snetworkingv1.PolicyTypeEgress) &&
				len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 {
				denies = true
			}
			continue
		}
		if selects(np.Spec.PodSelector, w.Template.Labels) {
			own = true
		}
	}
	switch {
	case !denies:
		return fmt.Sprintf("namespace %s has no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)", w.Namespace)
	case !own:
		return fmt.Sprintf("no NetworkPolicy selects its pods (labels %s)", labels.Set(w.Template.Labels))
	}
	return ""
}

// policyTypes defaults as the API server does: Ingress always, Egress when there are egress rules.
func policyTypes(np k8snetworkingv1.NetworkPolicy) []k8snetworkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		return np.Spec.PolicyTypes
	}
	types := []k8snetworkingv1.PolicyType{k8snetworkingv1.PolicyTypeIngress}
	if len(np.Spec.Egress) > 0 {
		types = append(types, k8snetworkingv1.PolicyTypeEgress)
	}
	return types
}

// selects reports whether the selector matches the labels; an invalid selector matches nothing.
func selects(sel metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	return err == nil && s.Matches(labels.Set(set))
}
