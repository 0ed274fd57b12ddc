package devserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// IstiodNamespace is the namespace istiod runs in (POD_NAMESPACE) and the mesh's root namespace. It must
// exist in the apiserver before istiod starts: istiod keeps its CA root and leader leases there.
const IstiodNamespace = "istio-system"

// DefaultMeshConfig is the MeshConfig StartIstiod uses when given none: Istio's defaults with the trust
// domain and root namespace spelled out, so identities read cluster.local/ns/<ns>/sa/<sa>.
const DefaultMeshConfig = `rootNamespace: istio-system
trustDomain: cluster.local
enableAutoMtls: true
`

// Istiod is a running istiod (pilot-discovery): Addr serves /ready and the /debug endpoints, XDSAddr
// is the plaintext xDS (ADS) port proxyless gRPC clients and servers connect to.
type Istiod struct {
	*Server
	// XDSAddr is host:port of the plaintext xDS gRPC server (istiod's 15010 in a cluster).
	XDSAddr string
	// MonitoringAddr is host:port of istiod's own /metrics (15014 in a cluster).
	MonitoringAddr string
}

// StartIstiod starts pilot-discovery against the apiserver of kubeconfig, with meshConfig (YAML; nil
// uses DefaultMeshConfig), and waits for /ready, which istiod answers once its Kubernetes caches have
// synced. Every listener is on 127.0.0.1: the HTTP debug port (o.Port), plaintext xDS and monitoring;
// the TLS xDS port and the injection webhook, which need istiod's own certificates and a cluster's
// DNS, are off, and ControlZ takes a random loopback port. The namespace IstiodNamespace must exist.
func StartIstiod(ctx context.Context, o Options, kubeconfig string, meshConfig []byte) (*Istiod, error) {
	bin, err := Binary("pilot-discovery", "istio")
	if err != nil {
		return nil, err
	}
	if kubeconfig == "" {
		return nil, fmt.Errorf("start istiod: kubeconfig is required")
	}
	p, err := ports(&o, 2)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start istiod: %w", err)
	}
	if meshConfig == nil {
		meshConfig = []byte(DefaultMeshConfig)
	}
	meshFile, err := filepath.Abs(filepath.Join(o.Dir, "mesh.yaml"))
	if err != nil {
		return nil, fmt.Errorf("start istiod: %w", err)
	}
	if err := os.WriteFile(meshFile, meshConfig, 0o644); err != nil {
		return nil, fmt.Errorf("start istiod: %w", err)
	}
	if kubeconfig, err = filepath.Abs(kubeconfig); err != nil {
		return nil, fmt.Errorf("start istiod: %w", err)
	}
	addr := hostPort(o.Port)
	d := &Istiod{XDSAddr: hostPort(p[0]), MonitoringAddr: hostPort(p[1])}
	args := []string{
		"discovery",
		"--kubeconfig", kubeconfig,
		"--meshConfig", meshFile,
		"--httpAddr", addr,
		"--grpcAddr", d.XDSAddr,
		"--secureGRPCAddr", "",
		"--httpsAddr", "",
		"--monitoringAddr", d.MonitoringAddr,
		"--ctrlz_port", "0",
		"--domain", "cluster.local",
		"--log_output_level", "default:info",
	}
	env := []string{
		"POD_NAMESPACE=" + IstiodNamespace,
		// istiod's /ready also waits for a webhook and a CA it would serve in a cluster; neither runs here.
		"VALIDATION_WEBHOOK_CONFIG_NAME=",
		"INJECTION_WEBHOOK_CONFIG_NAME=",
	}
	s, err := Run(ctx, o, Program{Name: "istiod", Bin: bin, Args: args, Env: env, Addr: addr, Ready: httpReady("http://"+addr+"/ready", nil)})
	if err != nil {
		return nil, err
	}
	d.Server = s
	return d, nil
}
