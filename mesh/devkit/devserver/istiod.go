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
// is the plaintext xDS (ADS) port, SecureXDSAddr the TLS port of its CA and xDS.
type Istiod struct {
	*Server
	// XDSAddr is host:port of the plaintext xDS gRPC server (istiod's 15010 in a cluster).
	XDSAddr string
	// SecureXDSAddr is host:port of istiod's TLS gRPC server (15012 in a cluster): its CA, which signs
	// workload certificates for callers holding a service-account token (audience istio-ca), and xDS
	// for authenticated clients. istio-agents (StartAgent) use it for both.
	SecureXDSAddr string
	// MonitoringAddr is host:port of istiod's own /metrics (15014 in a cluster).
	MonitoringAddr string

	opts    Options
	program Program
}

// StartIstiod starts pilot-discovery against the apiserver of kubeconfig, with meshConfig (YAML; nil
// uses DefaultMeshConfig), and waits for /ready, which istiod answers once its Kubernetes caches have
// synced. Every listener is on 127.0.0.1: the HTTP debug port (o.Port), plaintext xDS, the TLS port of
// the CA and xDS, and monitoring; the injection webhook (a cluster's admission) is off, and ControlZ
// takes a random loopback port. The namespace IstiodNamespace must exist.
//
// istiod is its own CA here, as in a default install (ENABLE_CA_SERVER, PILOT_CERT_PROVIDER=istiod): it
// creates a self-signed root in Secret istio-system/istio-ca-secret (kept across restarts, since it
// lives in the apiserver), publishes it to every namespace as ConfigMap istio-ca-root-cert, and signs its
// own serving certificate for its Service names (istiod.istio-system.svc, ...) and, through
// ISTIOD_CUSTOM_HOST, for 127.0.0.1, the address every client dials here, so agents and gRPC verify it
// as they would the name in a cluster. It authenticates a certificate request by a TokenReview of the
// caller's service-account token, and an xDS client on the TLS port by its workload certificate.
func StartIstiod(ctx context.Context, o Options, kubeconfig string, meshConfig []byte) (*Istiod, error) {
	bin, err := Binary("pilot-discovery", "istio")
	if err != nil {
		return nil, err
	}
	if kubeconfig == "" {
		return nil, fmt.Errorf("start istiod: kubeconfig is required")
	}
	p, err := ports(&o, 3)
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
	d := &Istiod{XDSAddr: hostPort(p[0]), MonitoringAddr: hostPort(p[1]), SecureXDSAddr: hostPort(p[2]), opts: o}
	args := []string{
		"discovery",
		"--kubeconfig", kubeconfig,
		"--meshConfig", meshFile,
		"--httpAddr", addr,
		"--grpcAddr", d.XDSAddr,
		"--secureGRPCAddr", d.SecureXDSAddr,
		"--httpsAddr", "",
		"--monitoringAddr", d.MonitoringAddr,
		"--ctrlz_port", "0",
		"--domain", "cluster.local",
		"--log_output_level", "default:info",
	}
	env := []string{
		"POD_NAMESPACE=" + IstiodNamespace,
		// Added to the names istiod's serving certificate carries (getDNSNames); an IP becomes an IP SAN.
		"ISTIOD_CUSTOM_HOST=127.0.0.1",
		// istiod's /ready also waits for the injection and validation webhooks it would serve in a
		// cluster; neither runs here.
		"VALIDATION_WEBHOOK_CONFIG_NAME=",
		"INJECTION_WEBHOOK_CONFIG_NAME=",
	}
	d.program = Program{Name: "istiod", Bin: bin, Args: args, Env: env, Addr: addr, Ready: httpReady("http://"+addr+"/ready", nil)}
	if d.Server, err = Run(ctx, o, d.program); err != nil {
		return nil, err
	}
	return d, nil
}

// Restart stops istiod and starts it again on the same ports, data directory and log, waiting for
// /ready, as a rolled-out istiod pod would come back behind its Service. Its CA root survives (it lives
// in the apiserver); every xDS and CA client has to reconnect.
func (d *Istiod) Restart(ctx context.Context) error {
	_ = d.Stop()
	s, err := Run(ctx, d.opts, d.program)
	if err != nil {
		return fmt.Errorf("restart istiod: %w", err)
	}
	d.Server = s
	return nil
}
