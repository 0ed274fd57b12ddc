package proxyless_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/mesh/proxyless"
)

var node = proxyless.Node{
	Name: "payments-v1", Namespace: "shop", IP: "127.0.10.1",
	Labels: map[string]string{"app": "payments", "version": "v1"}, ServiceAccount: "payments",
}

// The bootstrap carries what istiod needs to recognise the workload and pick its proxyless generator,
// in the shape gRPC parses (gRFC A27) and istio-agent writes (pkg/istio-agent/grpcxds).
func TestBootstrapJSON(t *testing.T) {
	data, err := proxyless.Bootstrap{Node: node, XDSAddr: "127.0.0.1:15010", CertDir: "/certs"}.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      "127.0.0.1:15010",
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{
			"id": "sidecar~127.0.10.1~payments-v1.shop~shop.svc.cluster.local",
			"metadata": map[string]any{
				"GENERATOR": "grpc", "NAME": "payments-v1", "NAMESPACE": "shop", "INSTANCE_IPS": "127.0.10.1",
				"CLUSTER_ID": "Kubernetes", "LABELS": map[string]any{"app": "payments", "version": "v1"},
				"WORKLOAD_NAME": "payments", "SERVICE_ACCOUNT": "payments",
			},
		},
		"server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
		"certificate_providers": map[string]any{"default": map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file": "/certs/cert-chain.pem", "private_key_file": "/certs/key.pem",
				"ca_certificate_file": "/certs/root-cert.pem", "refresh_interval": "60s",
			},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bootstrap (-want +got):\n%s", diff)
	}
	if got, want := node.ProxyID(), "payments-v1.shop"; got != want {
		t.Errorf("ProxyID() = %q, want %q", got, want)
	}
}

func TestBootstrapRejects(t *testing.T) {
	tests := []struct {
		name    string
		b       proxyless.Bootstrap
		wantErr string
	}{
		{"no name", proxyless.Bootstrap{Node: proxyless.Node{Namespace: "shop", IP: "127.0.0.1"}, XDSAddr: "127.0.0.1:1"}, "name is required"},
		{"no namespace", proxyless.Bootstrap{Node: proxyless.Node{Name: "a", IP: "127.0.0.1"}, XDSAddr: "127.0.0.1:1"}, "namespace is required"},
		{"bad ip", proxyless.Bootstrap{Node: proxyless.Node{Name: "a", Namespace: "shop", IP: "localhost"}, XDSAddr: "127.0.0.1:1"}, `ip "localhost"`},
		{"dot in name", proxyless.Bootstrap{Node: proxyless.Node{Name: "a.b", Namespace: "shop", IP: "127.0.0.1"}, XDSAddr: "127.0.0.1:1"}, "may not contain"},
		{"bad xds address", proxyless.Bootstrap{Node: node, XDSAddr: "istiod"}, `xds address "istiod"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.b.JSON()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// With its certificates, a workload talks xDS with istiod's TLS port over mTLS (gRFC A65's "tls"
// channel credentials), from the same files, re-read at the interval asked for, so a rotated certificate
// is picked up within it.
func TestBootstrapOverTLS(t *testing.T) {
	data, err := proxyless.Bootstrap{Node: node, XDSAddr: "127.0.0.1:15012", XDSOverTLS: true,
		CertDir: "/run/agent/certs", CertRefresh: 1500 * time.Millisecond}.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		CertificateProviders map[string]struct {
			Config map[string]string `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"certificate_file": "/run/agent/certs/cert-chain.pem", "private_key_file": "/run/agent/certs/key.pem",
		"ca_certificate_file": "/run/agent/certs/root-cert.pem", "refresh_interval": "1.5s",
	}
	creds := got.XDSServers[0].ChannelCreds
	if len(creds) != 1 || creds[0].Type != "tls" {
		t.Fatalf("channel_creds = %+v, want one of type tls", creds)
	}
	if diff := cmp.Diff(files, creds[0].Config); diff != "" {
		t.Errorf("tls channel creds config (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(files, got.CertificateProviders["default"].Config); diff != "" {
		t.Errorf("file_watcher config (-want +got):\n%s", diff)
	}
	if _, err := (proxyless.Bootstrap{Node: node, XDSAddr: "127.0.0.1:15012", XDSOverTLS: true}).JSON(); err == nil {
		t.Error("xDS over TLS without certificates: want an error")
	}
}

// A written bootstrap passes the check a service runs at start; the check names the variable for
// everything that would make gRPC fail only at the first call.
func TestCheckBootstrap(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "sub", "bootstrap.json")
	if err := (proxyless.Bootstrap{Node: node, XDSAddr: "127.0.0.1:15010"}).Write(good); err != nil {
		t.Fatal(err)
	}
	if err := proxyless.CheckBootstrap(good); err != nil {
		t.Errorf("written bootstrap: %v", err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"unset", "", "GRPC_XDS_BOOTSTRAP is not set"},
		{"missing", filepath.Join(dir, "nope.json"), "no such file"},
		{"not json", write("bad.json", "{"), "not a JSON bootstrap"},
		{"no server", write("noserver.json", `{"node":{"id":"x"}}`), "server_uri"},
		{"no node", write("nonode.json", `{"xds_servers":[{"server_uri":"127.0.0.1:1"}]}`), "node.id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := proxyless.CheckBootstrap(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), proxyless.BootstrapEnv) {
				t.Errorf("got %v, want an error naming %s and containing %q", err, proxyless.BootstrapEnv, tt.wantErr)
			}
		})
	}
}

func TestTarget(t *testing.T) {
	if got, want := proxyless.Target("payments", "shop", 9030, ""), "xds:///payments.shop.svc.cluster.local:9030"; got != want {
		t.Errorf("Target = %q, want %q", got, want)
	}
}
