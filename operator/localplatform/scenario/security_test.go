package scenario_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
)

// mtls on real calls: without mtls and under PERMISSIVE a caller without certificates is served; under
// STRICT it is refused before payments' code runs, while the mTLS caller is served and payments saw its
// SPIFFE id.
func TestMTLS(t *testing.T) {
	runScenario(t, mesh.MTLS(100))
}

// allow on real calls: with allow [orders] the orders identity is served and meshtest gets
// PERMISSION_DENIED from payments' RBAC; without allow both are served.
func TestAllow(t *testing.T) {
	runScenario(t, mesh.Allow("orders", 100))
}

// caRoot is istiod's CA root as istiod keeps it: Secret istio-system/istio-ca-secret.
func caRoot(t *testing.T) []byte {
	t.Helper()
	var secret corev1.Secret
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: devserver.IstiodNamespace, Name: "istio-ca-secret"}, &secret); err != nil {
		t.Fatal(err)
	}
	return secret.Data["ca-cert.pem"]
}

// The certificates payments serves are istiod's: under STRICT a handshake with each instance gets a
// chain that verifies against the root in istio-ca-secret, naming payments' SPIFFE id only.
func TestCertificatesFromIstiodCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := mesh.ApplyAndWait(ctx, mesh.Policy(scenario.NoRetries, scenario.WithMTLS("STRICT"))); err != nil {
		t.Fatal(err)
	}
	root := caRoot(t)
	var checks []scenario.CertificateCheck
	for _, in := range mesh.Instances {
		chain, err := scenario.ServedCertificate(ctx, in.Addr, agents["meshtest"].CertDir)
		if err == nil {
			err = scenario.VerifyIssued(chain, root, callerIdentity("payments"))
		}
		checks = append(checks, scenario.CertificateCheck{Label: in.Name, Chain: chain, PID: procs[in.Name].Pid(), Err: err})
		if err != nil {
			t.Errorf("%s: %v", in.Name, err)
		}
	}
	var table bytes.Buffer
	_ = scenario.WriteCertificates(&table, "certificates — served by payments under STRICT, checked against istio-system/istio-ca-secret", checks)
	t.Logf("\n%s", table.String())
}

// The agent renews a workload's certificate before it expires and the server picks the new one up
// without a restart; istiod restarted, agents reconnect — certificates keep being renewed by the new
// istiod, and calls and policy pushes keep working.
func TestCertificateRotationAndIstiodRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A workload of its own, with 20s certificates (renewed at half their life) that gRPC re-reads
	// every second; STRICT, so every handshake shows the certificate it holds.
	const ttl = 20 * time.Second
	svc := workload.Service{Name: "ledger", Namespace: ns, Ports: []workload.Port{{Name: "grpc", Port: 9050}}}
	in, err := newInstance("ledger-v1", map[string]string{"version": "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := workload.Apply(ctx, env.Client, svc, in); err != nil {
		t.Fatal(err)
	}
	ledger := mesh.Policy(scenario.WithMTLS("STRICT"))
	ledger.Name, ledger.Spec.TargetRef.Name = "ledger", "ledger"
	if err := mesh.Apply(ctx, mustYAML(t, ledger)); err != nil {
		t.Fatal(err)
	}
	p, err := startServiceWith(ctx, t.TempDir(), "payments", svc, in, nil, workload.AgentOptions{Istiod: istiod.SecureXDSAddr, CertTTL: ttl}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(in.IP, strconv.Itoa(int(in.Ports["grpc"])))
	root, id, pid := caRoot(t), callerIdentity("ledger"), p.Pid()
	var checks []scenario.CertificateCheck
	defer func() {
		var table bytes.Buffer
		_ = scenario.WriteCertificates(&table, fmt.Sprintf("certificate rotation — ledger, SECRET_TTL=%s, istiod restarted between the 2nd and 3rd", ttl), checks)
		t.Logf("\n%s", table.String())
	}()
	// next waits until the server presents a certificate other than the last one seen.
	next := func(label string) *x509.Certificate {
		t.Helper()
		var leaf *x509.Certificate
		var last []byte
		if len(checks) > 0 {
			last = checks[len(checks)-1].Chain[0].Raw
		}
		wait.For(t, 3*ttl, func() error {
			chain, err := scenario.ServedCertificate(ctx, addr, agents["meshtest"].CertDir)
			if err != nil {
				return err
			}
			if bytes.Equal(chain[0].Raw, last) {
				return fmt.Errorf("still serial %x", chain[0].SerialNumber)
			}
			err = scenario.VerifyIssued(chain, root, id)
			checks = append(checks, scenario.CertificateCheck{Label: label, Chain: chain, PID: p.Pid(), Err: err})
			if err != nil {
				t.Errorf("%s: %v", label, err)
			}
			leaf = chain[0]
			return nil
		})
		return leaf
	}
	first := next("first certificate")
	// istiod's CA dates a certificate back by its clock-skew grace (2 minutes): valid for TTL + 2m.
	if got := first.NotAfter.Sub(first.NotBefore); got > ttl+2*time.Minute+time.Second {
		t.Errorf("first certificate valid for %s, want SECRET_TTL %s (+ 2m backdated)", got, ttl)
	}
	next("renewed by the agent")

	t0 := time.Now()
	if err := istiod.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("istiod restarted in %s", time.Since(t0).Round(100*time.Millisecond))
	renewed := next("renewed after istiod's restart")
	if renewed.NotBefore.Before(t0.Add(-2 * time.Minute)) {
		t.Errorf("certificate after the restart issued at %s, before the restart", renewed.NotBefore)
	}
	if p.Pid() != pid {
		t.Errorf("ledger's pid changed from %d to %d: the certificates were to be picked up without a restart", pid, p.Pid())
	}
	// Calls and pushes keep working: a policy change reaches the caller and the servers through their
	// agents' reconnected xDS proxies, and mTLS calls succeed under it.
	if _, err := mesh.ApplyAndWait(ctx, mesh.Policy(scenario.NoRetries, scenario.WithMTLS("STRICT"), scenario.WithTimeout(1500*time.Millisecond))); err != nil {
		t.Fatalf("policy after istiod's restart: %v", err)
	}
	for i := range 20 {
		if err := mesh.Call(ctx); err != nil {
			t.Fatalf("call %d after istiod's restart: %v", i, err)
		}
	}
}

func mustYAML(t *testing.T, obj any) []byte {
	t.Helper()
	b, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
