// Package proxyless makes a process a member of an Istio mesh without a sidecar ("proxyless gRPC"):
// gRPC's own xDS client talks to istiod and applies routes, weights, timeouts, retries and circuit
// breaking itself. A process joins with a bootstrap file, as istio-agent writes one next to each
// proxyless pod in a cluster: the node identity istiod expects (sidecar~IP~NAME.NS~NS.svc.DOMAIN,
// metadata GENERATOR=grpc, namespace, labels, service account) and the address of istiod's xDS port.
// gRPC reads the file named by GRPC_XDS_BOOTSTRAP once, at process start.
package proxyless

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// BootstrapEnv is the environment variable gRPC reads the bootstrap file's path from.
const BootstrapEnv = "GRPC_XDS_BOOTSTRAP"

// ServerListenerTemplate names the Listener a gRPC xDS server asks istiod for, with its listen
// address for %s; istiod answers it with the inbound policy (mTLS mode, AuthorizationPolicies as RBAC).
const ServerListenerTemplate = "xds.istio.io/grpc/lds/inbound/%s"

// Node is one workload instance as istiod sees it.
type Node struct {
	// Name is the instance's name (its Pod or WorkloadEntry name).
	Name string
	// Namespace is the instance's namespace.
	Namespace string
	// IP is the address the instance serves on and istiod knows it by.
	IP string
	// Labels are the instance's labels (app, version, ...), which select it into subsets.
	Labels map[string]string
	// ServiceAccount is the instance's Kubernetes service account, its mesh identity.
	ServiceAccount string
	// ClusterDomain is the cluster's DNS domain; empty means cluster.local.
	ClusterDomain string
	// ClusterID is istiod's name for the cluster; empty means Kubernetes, istiod's default.
	ClusterID string
}

func (n Node) domain() string {
	if n.ClusterDomain == "" {
		return "cluster.local"
	}
	return n.ClusterDomain
}

// ID is the xDS node id istiod parses: type~IP~name.namespace~namespace.svc.domain.
func (n Node) ID() string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.%s", n.IP, n.Name, n.Namespace, n.Namespace, n.domain())
}

// ProxyID is the id istiod knows the connection by (name.namespace): the proxyID of its debug
// endpoints and of istioctl.
func (n Node) ProxyID() string { return n.Name + "." + n.Namespace }

// Validate reports the first field istiod could not use.
func (n Node) Validate() error {
	switch {
	case n.Name == "":
		return errors.New("proxyless node: name is required")
	case n.Namespace == "":
		return errors.New("proxyless node: namespace is required")
	case net.ParseIP(n.IP) == nil:
		return fmt.Errorf("proxyless node %s: ip %q is not an IP address", n.Name, n.IP)
	case strings.ContainsAny(n.Name+n.Namespace, "~."):
		return fmt.Errorf("proxyless node %s.%s: name and namespace may not contain '~' or '.'", n.Name, n.Namespace)
	}
	return nil
}

// Bootstrap is what a process needs to join the mesh.
type Bootstrap struct {
	Node Node
	// XDSAddr is host:port of istiod's xDS: its plaintext port (15010 in a cluster), or with XDSOverTLS
	// its TLS port (15012).
	XDSAddr string
	// XDSOverTLS connects to XDSAddr with mutual TLS (gRFC A65's "tls" channel credentials): the
	// workload's certificate from CertDir, istiod's certificate checked against the root there. istiod
	// authenticates the stream by the certificate's identity, as it would the token an istio-agent's xDS
	// proxy presents. Needs CertDir.
	XDSOverTLS bool
	// CertDir, if set, holds the workload's mTLS credentials as istio-agent writes them
	// (cert-chain.pem, key.pem, root-cert.pem); gRPC's file_watcher provider reloads them.
	CertDir string
	// CertRefresh is how often gRPC re-reads CertDir, picking up certificates the agent rotated; 0 means
	// DefaultCertRefresh.
	CertRefresh time.Duration
}

// DefaultCertRefresh is how often gRPC re-reads a workload's certificate files unless told otherwise:
// well inside the agent's rotation window (half of a 24h certificate's life), and cheap (three small
// files).
const DefaultCertRefresh = time.Minute

// JSON renders the bootstrap in gRPC's format (gRFC A27), with Istio's node metadata.
func (b Bootstrap) JSON() ([]byte, error) {
	if err := b.Node.Validate(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(b.XDSAddr); err != nil {
		return nil, fmt.Errorf("proxyless bootstrap: xds address %q: want host:port", b.XDSAddr)
	}
	if b.XDSOverTLS && b.CertDir == "" {
		return nil, errors.New("proxyless bootstrap: xDS over TLS needs the certificates' directory (CertDir)")
	}
	n := b.Node
	clusterID := n.ClusterID
	if clusterID == "" {
		clusterID = "Kubernetes"
	}
	meta := map[string]any{
		// Istio's proxyless generator: API listeners and per-host routes gRPC understands.
		"GENERATOR":    "grpc",
		"NAME":         n.Name,
		"NAMESPACE":    n.Namespace,
		"INSTANCE_IPS": n.IP,
		"CLUSTER_ID":   clusterID,
	}
	if len(n.Labels) > 0 {
		meta["LABELS"] = n.Labels
		if app := n.Labels["app"]; app != "" {
			meta["WORKLOAD_NAME"] = app
		}
	}
	if n.ServiceAccount != "" {
		meta["SERVICE_ACCOUNT"] = n.ServiceAccount
	}
	creds := map[string]any{"type": "insecure"}
	if b.XDSOverTLS {
		creds = map[string]any{"type": "tls", "config": b.certFiles()}
	}
	doc := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      b.XDSAddr,
			"channel_creds":   []any{creds},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       n.ID(),
			"metadata": meta,
		},
		"server_listener_resource_name_template": ServerListenerTemplate,
	}
	if b.CertDir != "" {
		doc["certificate_providers"] = map[string]any{
			// "default" is the instance name istiod's generated TLS contexts refer to.
			"default": map[string]any{"plugin_name": "file_watcher", "config": b.certFiles()},
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}

// certFiles is the file_watcher configuration of the certificates in CertDir, which gRPC re-reads every
// CertRefresh.
func (b Bootstrap) certFiles() map[string]any {
	return map[string]any{
		"certificate_file":    filepath.Join(b.CertDir, CertChainFile),
		"private_key_file":    filepath.Join(b.CertDir, KeyFile),
		"ca_certificate_file": filepath.Join(b.CertDir, RootCertFile),
		"refresh_interval":    jsonDuration(cmp.Or(b.CertRefresh, DefaultCertRefresh)),
	}
}

// jsonDuration writes d as protobuf's JSON form of a Duration ("60s", "0.5s"), which the bootstrap's
// fields take.
func jsonDuration(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// Files of a workload's mTLS credentials in CertDir, named as istio-agent names them.
const (
	CertChainFile = "cert-chain.pem"
	KeyFile       = "key.pem"
	RootCertFile  = "root-cert.pem"
)

// Write writes the bootstrap to path atomically (a reader never sees half a file) and returns path.
func (b Bootstrap) Write(path string) error {
	data, err := b.JSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write xds bootstrap: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bootstrap-*")
	if err != nil {
		return fmt.Errorf("write xds bootstrap: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write xds bootstrap %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write xds bootstrap %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write xds bootstrap %s: %w", path, err)
	}
	return nil
}

// Target is the gRPC target of a Service through istiod: xds:///<svc>.<ns>.svc.<domain>:<port>, the
// service's port (not an instance's), as a client in the cluster would name it.
func Target(service, namespace string, port int, clusterDomain string) string {
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	return "xds:///" + net.JoinHostPort(service+"."+namespace+".svc."+clusterDomain, strconv.Itoa(port))
}

// CheckBootstrap reads the bootstrap file at path and reports, naming BootstrapEnv, what makes it
// unusable: missing, not JSON, or without an xDS server or node id. gRPC itself only finds out on the
// first call through the mesh.
func CheckBootstrap(path string) error {
	if path == "" {
		return fmt.Errorf("%s is not set: xds:/// targets and the xDS server need a bootstrap file", BootstrapEnv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", BootstrapEnv, err)
	}
	var doc struct {
		XDSServers []struct {
			ServerURI string `json:"server_uri"`
		} `json:"xds_servers"`
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s=%s: not a JSON bootstrap: %w", BootstrapEnv, path, err)
	}
	switch {
	case len(doc.XDSServers) == 0 || doc.XDSServers[0].ServerURI == "":
		return fmt.Errorf("%s=%s: no xds_servers[0].server_uri", BootstrapEnv, path)
	case doc.Node.ID == "":
		return fmt.Errorf("%s=%s: no node.id", BootstrapEnv, path)
	}
	return nil
}
