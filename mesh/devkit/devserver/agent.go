package devserver

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/proxyless"
)

// AgentAudience is the audience of the service-account token an istio-agent presents: istiod's CA (and
// its xDS server) accept a token only through a TokenReview for this audience.
const AgentAudience = "istio-ca"

// AgentConfig is what an istio-agent needs to join one workload to the mesh.
type AgentConfig struct {
	// Node is the workload the agent stands beside. Its namespace and service account are the identity
	// the agent asks istiod's CA for (the certificate's SPIFFE id); name and IP are the pod variables.
	Node proxyless.Node
	// Istiod is host:port of istiod's TLS port (Istiod.SecureXDSAddr): its CA and authenticated xDS.
	Istiod string
	// Token is a service-account token for Node's service account with audience AgentAudience, minted
	// by the apiserver's TokenRequest: what a kubelet projects into a pod for istio-agent.
	Token []byte
	// RootCert is istiod's root certificate (PEM; ConfigMap istio-ca-root-cert in every namespace),
	// by which the agent trusts istiod's TLS port.
	RootCert []byte
	// CertTTL is the lifetime of the certificates the agent asks for (SECRET_TTL); it renews them at
	// half of it (SECRET_GRACE_PERIOD_RATIO). 0 means the agent's default, 24h.
	CertTTL time.Duration
	// Env is added to the agent's environment, which otherwise holds only its own settings: e.g. a
	// marker its supervisor finds its processes by.
	Env []string
}

// Agent is a running istio-agent (pilot-agent) beside one workload, as Istio runs it for a proxyless
// gRPC pod (the grpc-agent injection template): Envoy off (DISABLE_ENVOY), the workload's key and
// certificate written to CertDir and renewed there (OUTPUT_CERTS).
//
// Its xDS proxy (a Unix socket forwarding the workload's xDS to istiod) is not used: the pinned agent
// serves one xDS stream at a time and closes the previous one when another arrives ("registered
// overlapping stream", istio/istio#53532), while gRPC-Go since 1.66 opens one stream per channel target
// plus one for an xDS server — orders, with two dependencies and a server, lost its config every few
// seconds through it. The workload talks to istiod's TLS port itself instead, authenticated by the
// certificate the agent got (Bootstrap).
type Agent struct {
	*Server
	// Dir is the agent's working directory: its default paths are relative to it, so one directory per
	// workload is all the isolation it needs (var/run/secrets/tokens/istio-token,
	// var/run/secrets/istio/root-cert.pem, etc/istio/proxy/...).
	Dir string
	// CertDir holds key.pem, cert-chain.pem and root-cert.pem (proxyless.KeyFile, ...).
	CertDir string
	// StatusAddr is host:port of the agent's status server: /healthz/ready answers 200 once the
	// certificates exist.
	StatusAddr string
	// Istiod is the TLS address of istiod the agent gets its certificates from.
	Istiod string
}

// Bootstrap returns the xDS bootstrap of the workload the agent stands beside: its node, xDS with
// istiod's TLS port over mTLS with the agent's certificates, the same certificates for the workload's
// own mTLS, re-read every refresh (0: proxyless.DefaultCertRefresh).
func (a *Agent) Bootstrap(node proxyless.Node, refresh time.Duration) proxyless.Bootstrap {
	return proxyless.Bootstrap{Node: node, XDSAddr: a.Istiod, XDSOverTLS: true, CertDir: a.CertDir, CertRefresh: refresh}
}

// Paths below an agent's working directory, as pilot-agent's defaults name them (third-party JWT policy,
// the root a pod mounts from the istio-ca-root-cert ConfigMap) and where it writes the certificates.
const (
	agentTokenPath = "var/run/secrets/tokens/istio-token"
	agentRootPath  = "var/run/secrets/istio/root-cert.pem"
	agentCertDir   = "certs"
)

// StartAgent runs pilot-agent in o.Dir for c.Node and waits until it holds the workload's certificate
// from istiod's CA. The wait is bounded by o.ReadyTimeout (0: 30s). An agent that cannot get a
// certificate retries forever; StartAgent instead fails, naming the agent's own last error (the CA
// refusing the token, istiod unreachable, ...), so the workload is never started without its
// certificate. o.Port is the status port (0 picks a free one).
func StartAgent(ctx context.Context, o Options, c AgentConfig) (*Agent, error) {
	bin, err := Binary("pilot-agent", "istio")
	if err != nil {
		return nil, err
	}
	if err := c.Node.Validate(); err != nil {
		return nil, fmt.Errorf("start istio-agent: %w", err)
	}
	switch {
	case c.Node.ServiceAccount == "":
		return nil, fmt.Errorf("start istio-agent for %s: the node has no service account, the identity to certify", c.Node.ProxyID())
	case c.Istiod == "":
		return nil, fmt.Errorf("start istio-agent for %s: istiod's TLS address is required", c.Node.ProxyID())
	case len(c.Token) == 0:
		return nil, fmt.Errorf("start istio-agent for %s: a service-account token (audience %s) is required", c.Node.ProxyID(), AgentAudience)
	case len(c.RootCert) == 0:
		return nil, fmt.Errorf("start istio-agent for %s: istiod's root certificate is required", c.Node.ProxyID())
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if _, err := ports(&o, 0); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("start istio-agent: %w", err)
	}
	o.Dir = dir
	a := &Agent{Dir: dir, CertDir: filepath.Join(dir, agentCertDir), StatusAddr: hostPort(o.Port), Istiod: c.Istiod}
	// The agent opens its xDS proxy's Unix socket even unused, and a socket path is limited to 107
	// bytes: a long data directory fails here rather than in the agent's log.
	if socket := filepath.Join(dir, "etc/istio/proxy/XDS"); len(socket) > 107 {
		return nil, fmt.Errorf("start istio-agent for %s: socket path %s is longer than a Unix socket allows (107 bytes): use a shorter directory", c.Node.ProxyID(), socket)
	}
	// A previous run's certificates would make the agent look ready before it has asked for its own. The
	// directory itself must exist, as the emptyDir a pod mounts there does: the agent writes files only.
	if err := os.RemoveAll(a.CertDir); err != nil {
		return nil, fmt.Errorf("start istio-agent: %w", err)
	}
	if err := os.MkdirAll(a.CertDir, 0o700); err != nil {
		return nil, fmt.Errorf("start istio-agent: %w", err)
	}
	for path, data := range map[string][]byte{agentTokenPath: c.Token, agentRootPath: c.RootCert} {
		p := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("start istio-agent: %w", err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, fmt.Errorf("start istio-agent: %w", err)
		}
	}
	proxyConfig, err := json.Marshal(map[string]any{"discoveryAddress": c.Istiod, "statusPort": o.Port})
	if err != nil {
		return nil, err
	}
	n := c.Node
	env := []string{
		// The pod variables a sidecar injector sets from the downward API.
		"POD_NAME=" + n.Name,
		"POD_NAMESPACE=" + n.Namespace,
		"INSTANCE_IP=" + n.IP,
		"SERVICE_ACCOUNT=" + n.ServiceAccount,
		// The grpc-agent template's settings: no Envoy, certificates as files, istiod's address.
		"DISABLE_ENVOY=true",
		"OUTPUT_CERTS=" + a.CertDir,
		"JWT_POLICY=third-party-jwt",
		"PROXY_CONFIG=" + string(proxyConfig),
		// Not a cloud VM: skip the agent's probing of cloud metadata servers (up to 5s at start).
		"CLOUD_PLATFORM=none",
	}
	if c.CertTTL > 0 {
		env = append(env, "SECRET_TTL="+c.CertTTL.String())
	}
	env = append(env, c.Env...)
	logPath := o.LogFile
	if logPath == "" {
		logPath = filepath.Join(o.Dir, "server.log")
	}
	certReady := httpReady("http://"+a.StatusAddr+"/healthz/ready", nil)
	a.Server, err = Run(ctx, o, Program{
		Name: "istio-agent " + n.ProxyID(), Bin: bin, Args: []string{"proxy", "sidecar"}, Env: env, OnlyEnv: true,
		Addr: a.StatusAddr,
		Ready: func(ctx context.Context) error {
			err := certReady(ctx)
			if err == nil {
				return nil
			}
			if last := lastAgentError(logPath); last != "" {
				err := fmt.Errorf("no certificate for %s yet: the agent says: %s", spiffeID(n), last)
				// istiod's CA answered and refused the token (another audience, a deleted service
				// account): retrying the same token cannot succeed.
				if strings.Contains(last, "code = Unauthenticated") {
					return wait.Stop(fmt.Errorf("istiod's CA refused the token: %w", err))
				}
				return err
			}
			return fmt.Errorf("no certificate for %s yet: %w", spiffeID(n), err)
		},
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// spiffeID is the identity the agent asks a certificate for, in the default trust domain.
func spiffeID(n proxyless.Node) string {
	return "spiffe://cluster.local/ns/" + n.Namespace + "/sa/" + n.ServiceAccount
}

// lastAgentError returns, from the agent's log and without the timestamp, its last "failed to get
// certificate" line, which carries the CA's answer or the connection error; else its last warning or
// error; "" if there is none.
func lastAgentError(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	var last, cert string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// Istio's log lines: <time>\t<level>\t[<scope>\t]<message>.
		fields := strings.SplitN(line, "\t", 3)
		if len(fields) < 3 || (fields[1] != "warn" && fields[1] != "error") {
			continue
		}
		// Its readiness probe's answer to our polling, and a note about CPU limits, say nothing of why.
		if strings.Contains(line, "proxy is NOT ready") || strings.Contains(line, "concurrency is set") {
			continue
		}
		last = fields[1] + " " + strings.ReplaceAll(fields[2], "\t", " ")
		if strings.Contains(line, "failed to get certificate") {
			cert = last
		}
	}
	return cmp.Or(cert, last)
}
