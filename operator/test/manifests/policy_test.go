package manifests

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// mutable returns deep copies of the dev overlay's objects, and a finder over them.
func mutable(t *testing.T) ([]*unstructured.Unstructured, func(kind, ns, name string) *unstructured.Unstructured) {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, u := range rendered(t, "dev").objs {
		objs = append(objs, u.DeepCopy())
	}
	return objs, func(kind, ns, name string) *unstructured.Unstructured {
		t.Helper()
		for _, u := range objs {
			if u.GetKind() == kind && u.GetNamespace() == ns && u.GetName() == name {
				return u
			}
		}
		t.Fatalf("no %s %s/%s in the dev overlay", kind, ns, name)
		return nil
	}
}

// container returns the first container of a workload's pod template, to edit in place
// (unstructured.NestedSlice would return a copy).
func container(t *testing.T, u *unstructured.Unstructured) map[string]any {
	t.Helper()
	m := u.Object
	for _, k := range []string{"spec", "template", "spec"} {
		next, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("%s: no %s", ID(u), k)
		}
		m = next
	}
	cs, ok := m["containers"].([]any)
	if !ok || len(cs) == 0 {
		t.Fatalf("%s: no containers", ID(u))
	}
	return cs[0].(map[string]any)
}

func without(objs []*unstructured.Unstructured, drop *unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u != drop {
			out = append(out, u)
		}
	}
	return out
}

// TestCheckFindsViolations breaks one thing at a time in the (clean) dev overlay and requires Check to
// report exactly that.
func TestCheckFindsViolations(t *testing.T) {
	const gw = "Deployment shop/gateway: container gateway: "
	tests := []struct {
		name   string
		break_ func(t *testing.T, objs []*unstructured.Unstructured, find func(kind, ns, name string) *unstructured.Unstructured) []*unstructured.Unstructured
		want   []string
	}{{
		name: "no readiness probe",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			delete(container(t, find("Deployment", "shop", "gateway")), "readinessProbe")
			return objs
		},
		want: []string{gw + "no readinessProbe"},
	}, {
		name: "no liveness probe",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			delete(container(t, find("StatefulSet", "consul", "consul-server")), "livenessProbe")
			return objs
		},
		want: []string{"StatefulSet consul/consul-server: container consul: no livenessProbe"},
	}, {
		name: "no memory limit",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			unstructured.RemoveNestedField(container(t, find("Deployment", "shop", "gateway")), "resources", "limits", "memory")
			return objs
		},
		want: []string{gw + "no resources.limits.memory"},
	}, {
		name: "root allowed",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			d := find("Deployment", "shop", "gateway")
			unstructured.RemoveNestedField(d.Object, "spec", "template", "spec", "securityContext", "runAsNonRoot")
			unstructured.RemoveNestedField(d.Object, "spec", "template", "spec", "securityContext", "runAsUser")
			_ = unstructured.SetNestedField(container(t, d), int64(0), "securityContext", "runAsUser")
			unstructured.RemoveNestedField(container(t, d), "securityContext", "runAsNonRoot")
			return objs
		},
		want: []string{gw + "runAsNonRoot is not true (container or pod securityContext)", gw + "runAsUser is 0 (root)"},
	}, {
		name: "writable root filesystem, privilege escalation, privileged",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			c := container(t, find("Deployment", "shop", "gateway"))
			_ = unstructured.SetNestedField(c, false, "securityContext", "readOnlyRootFilesystem")
			unstructured.RemoveNestedField(c, "securityContext", "allowPrivilegeEscalation")
			_ = unstructured.SetNestedField(c, true, "securityContext", "privileged")
			return objs
		},
		want: []string{
			gw + "securityContext.readOnlyRootFilesystem is not true",
			gw + "securityContext.allowPrivilegeEscalation is not false",
			gw + "securityContext.privileged is true",
		},
	}, {
		name: "seccomp only at pod level is enough, at neither is not",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			unstructured.RemoveNestedField(container(t, find("Deployment", "shop", "orders")), "securityContext", "seccompProfile")
			d := find("Deployment", "shop", "gateway")
			unstructured.RemoveNestedField(container(t, d), "securityContext", "seccompProfile")
			unstructured.RemoveNestedField(d.Object, "spec", "template", "spec", "securityContext", "seccompProfile")
			return objs
		},
		want: []string{gw + "seccompProfile is not RuntimeDefault (container or pod securityContext)"},
	}, {
		name: "capabilities",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			c := container(t, find("Deployment", "shop", "gateway"))
			_ = unstructured.SetNestedStringSlice(c, []string{"NET_RAW"}, "securityContext", "capabilities", "drop")
			_ = unstructured.SetNestedStringSlice(c, []string{"NET_ADMIN"}, "securityContext", "capabilities", "add")
			return objs
		},
		want: []string{gw + "securityContext.capabilities.drop does not contain ALL", gw + "securityContext.capabilities.add is [NET_ADMIN]"},
	}, {
		name: "latest, untagged, digest",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			container(t, find("Deployment", "shop", "gateway"))["image"] = "meshplane/gateway:latest"
			container(t, find("Deployment", "shop", "orders"))["image"] = "registry.example.com:5000/meshplane/orders"
			container(t, find("Deployment", "shop", "payments"))["image"] = "meshplane/payments@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			return objs
		},
		want: []string{
			gw + "image meshplane/gateway:latest is not pinned (latest)",
			"Deployment shop/orders: container orders: image registry.example.com:5000/meshplane/orders has no tag (pulls latest)",
		},
	}, {
		name: "Service ports Istio cannot read; appProtocol wins over the name",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			set := func(name, portName string, app any) {
				svc := find("Service", "shop", name)
				ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
				p := ports[0].(map[string]any)
				p["name"] = portName
				if app == nil {
					delete(p, "appProtocol")
				} else {
					p["appProtocol"] = app
				}
				_ = unstructured.SetNestedSlice(svc.Object, ports, "spec", "ports")
			}
			set("gateway", "web", nil)
			set("orders", "grpc", "web")
			set("payments", "rpc", "kubernetes.io/h2c")
			set("catalog", "grpc-web-x", nil)
			return objs
		},
		want: []string{
			`Service shop/gateway: port 8080 (name "web", appProtocol none): Istio cannot tell its protocol; name it <protocol>[-suffix] or set appProtocol (tcp, udp, grpc, grpc-web, http, http_proxy, http2, https, tls, mongo, redis, mysql)`,
			`Service shop/orders: port 9020 (name "grpc", appProtocol web): Istio cannot tell its protocol; name it <protocol>[-suffix] or set appProtocol (tcp, udp, grpc, grpc-web, http, http_proxy, http2, https, tls, mongo, redis, mysql)`,
		},
	}, {
		name: "a workload without its own NetworkPolicy",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			return without(objs, find("NetworkPolicy", "monitoring", "loki"))
		},
		want: []string{"Deployment monitoring/loki: no NetworkPolicy selects its pods (labels app=loki)"},
	}, {
		name: "a namespace without default deny",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			return without(objs, find("NetworkPolicy", "consul", "default-deny"))
		},
		want: []string{"StatefulSet consul/consul-server: namespace consul has no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"},
	}, {
		name: "liveness probe the same as readiness",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			c := container(t, find("Deployment", "shop", "gateway"))
			c["livenessProbe"] = c["readinessProbe"]
			return objs
		},
		want: []string{gw + "livenessProbe checks what readinessProbe checks (GET /readyz on port http-admin): a failing dependency would restart the container instead of taking it out of its Service"},
	}, {
		name: "emptyDir without sizeLimit",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			d := find("Deployment", "monitoring", "prometheus")
			volumes, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
			for _, v := range volumes {
				unstructured.RemoveNestedField(v.(map[string]any), "emptyDir", "sizeLimit")
			}
			_ = unstructured.SetNestedSlice(d.Object, volumes, "spec", "template", "spec", "volumes")
			return objs
		},
		want: []string{"Deployment monitoring/prometheus: emptyDir data: no sizeLimit"},
	}, {
		name: "emptyDir without ephemeral-storage requests and limits",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			c := container(t, find("Deployment", "monitoring", "grafana"))
			unstructured.RemoveNestedField(c, "resources", "requests", "ephemeral-storage")
			unstructured.RemoveNestedField(c, "resources", "limits", "ephemeral-storage")
			return objs
		},
		want: []string{
			"Deployment monitoring/grafana: container grafana: mounts an emptyDir but has no resources.requests.ephemeral-storage",
			"Deployment monitoring/grafana: container grafana: mounts an emptyDir but has no resources.limits.ephemeral-storage",
		},
	}, {
		name: "ephemeral-storage limit below the emptyDir's sizeLimit",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			_ = unstructured.SetNestedField(container(t, find("Deployment", "monitoring", "loki")), "1Gi", "resources", "limits", "ephemeral-storage")
			return objs
		},
		want: []string{"Deployment monitoring/loki: ephemeral-storage limits (1Gi in all) are below the emptyDirs' sizeLimits (4Gi in all): the kubelet would evict the pod before an emptyDir is full"},
	}, {
		name: "Recreate without a PersistentVolumeClaim; with one it is fine",
		break_: func(t *testing.T, objs []*unstructured.Unstructured, find func(string, string, string) *unstructured.Unstructured) []*unstructured.Unstructured {
			_ = unstructured.SetNestedField(find("Deployment", "shop", "gateway").Object, "Recreate", "spec", "strategy", "type")
			loki := find("Deployment", "monitoring", "loki")
			_ = unstructured.SetNestedField(loki.Object, "Recreate", "spec", "strategy", "type")
			volumes, _, _ := unstructured.NestedSlice(loki.Object, "spec", "template", "spec", "volumes")
			for _, v := range volumes {
				if v := v.(map[string]any); v["name"] == "data" {
					delete(v, "emptyDir")
					v["persistentVolumeClaim"] = map[string]any{"claimName": "loki"}
				}
			}
			_ = unstructured.SetNestedSlice(loki.Object, volumes, "spec", "template", "spec", "volumes")
			return objs
		},
		want: []string{"Deployment shop/gateway: strategy Recreate without a PersistentVolumeClaim: no storage is shared between old and new pods, so every rollout is an outage for nothing (use RollingUpdate)"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, find := mutable(t)
			got, err := Check(tt.break_(t, objs, find))
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, v := range got {
				lines = append(lines, v.String())
			}
			if diff := cmp.Diff(tt.want, lines); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckRejectsBarePods: the platform ships controllers, so a Pod is a mistake to report, not to
// check.
func TestCheckRejectsBarePods(t *testing.T) {
	pod := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "debug", "namespace": "shop"}}}
	_, err := Check([]*unstructured.Unstructured{pod})
	if err == nil || !strings.Contains(err.Error(), "Pod shop/debug: ship a controller") {
		t.Errorf("got %v, want an error naming Pod shop/debug", err)
	}
}

// TestCheckProductionFindsViolations: dev keeps Grafana's admin password optional (its one relaxation),
// which production's check reports, as it reports optional Secrets in envFrom and volumes.
func TestCheckProductionFindsViolations(t *testing.T) {
	objs, find := mutable(t)
	orders := container(t, find("Deployment", "shop", "orders"))
	orders["envFrom"] = []any{map[string]any{"secretRef": map[string]any{"name": "orders-extra", "optional": true}}}
	payments := find("Deployment", "shop", "payments")
	volumes, _, _ := unstructured.NestedSlice(payments.Object, "spec", "template", "spec", "volumes")
	volumes = append(volumes,
		map[string]any{"name": "tls", "secret": map[string]any{"secretName": "payments-tls", "optional": true}},
		map[string]any{"name": "ca", "secret": map[string]any{"secretName": "payments-ca"}})
	_ = unstructured.SetNestedSlice(payments.Object, volumes, "spec", "template", "spec", "volumes")

	got, err := CheckProduction(objs)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, v := range got {
		lines = append(lines, v.String())
	}
	want := []string{
		"Deployment monitoring/grafana: container grafana: env GF_SECURITY_ADMIN_PASSWORD: Secret grafana-admin (key password) is optional: without it the pod starts with the program's default",
		"Deployment shop/orders: container orders: envFrom Secret orders-extra is optional: without it the pod starts with the program's defaults",
		"Deployment shop/payments: volume tls: Secret payments-tls is optional: without it the pod starts with an empty directory",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("violations (-want +got):\n%s", diff)
	}
}
