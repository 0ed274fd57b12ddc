package workload_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/localplatform/controlplane"
	"meshplane.dev/operator/localplatform/workload"
	"meshplane.dev/operator/test/envtest"
)

const ns = "shop"

var (
	env    *controlplane.Env
	istiod *devserver.Istiod
)

// TestMain runs a real apiserver and istiod (with its CA on the TLS port) once for the package.
func TestMain(m *testing.M) {
	env = envtest.MustStart(controlplane.Options{})
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workload test:", err)
		code = 1
	}
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	ctx := context.Background()
	for _, n := range []string{devserver.IstiodNamespace, ns} {
		if err := workload.EnsureNamespace(ctx, env.Client, n); err != nil {
			return 0, err
		}
	}
	dir, err := os.MkdirTemp("", "wl-")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	istiod, err = devserver.StartIstiod(ctx, devserver.Options{Dir: filepath.Join(dir, "istiod"), ReadyTimeout: 3 * time.Minute}, env.Kubeconfig, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = istiod.Stop() }()
	return m.Run(), nil
}

var payments = workload.Service{Name: "payments", Namespace: ns, Ports: []workload.Port{{Name: "grpc", Port: 9030}}}

func paymentsInstance() workload.Instance {
	return workload.Instance{Name: "payments-v1", IP: "127.0.0.1", Ports: map[string]uint32{"grpc": 9030}}
}

// agentDir is a short directory for one agent: its xDS socket path must fit a Unix socket's 107 bytes.
func agentDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ag-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// The agent holds a certificate istiod's CA issued for the workload's service account: its chain
// verifies against the root in Secret istio-system/istio-ca-secret, and its only identity is the SPIFFE
// id of the service account.
func TestAgentGetsWorkloadCertificateFromIstiodCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := workload.Apply(ctx, env.Client, payments, paymentsInstance()); err != nil {
		t.Fatal(err)
	}
	a, err := workload.StartAgent(ctx, env.Client, payments, paymentsInstance(), devserver.Options{Dir: agentDir(t)},
		workload.AgentOptions{Istiod: istiod.SecureXDSAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Stop() }()

	chain := readCerts(t, filepath.Join(a.CertDir, proxyless.CertChainFile))
	var secret corev1.Secret
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: devserver.IstiodNamespace, Name: "istio-ca-secret"}, &secret); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret.Data["ca-cert.pem"]) {
		t.Fatal("istio-ca-secret: no ca-cert.pem")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("workload certificate does not verify against istio-ca-secret's root: %v", err)
	}
	var sans []string
	for _, u := range chain[0].URIs {
		sans = append(sans, u.String())
	}
	if got, want := strings.Join(sans, ","), "spiffe://cluster.local/ns/shop/sa/payments"; got != want {
		t.Errorf("certificate URI SANs = %s, want %s", got, want)
	}
	root, err := os.ReadFile(filepath.Join(a.CertDir, proxyless.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(root), strings.TrimSpace(string(secret.Data["ca-cert.pem"]))) {
		t.Error("root-cert.pem the agent wrote is not istio-ca-secret's root")
	}
}

// A workload whose agent cannot get a certificate does not start: StartAgent fails, naming what the
// apiserver or the agent said.
func TestAgentWithoutCertificateFailsNamingWhy(t *testing.T) {
	ctx := context.Background()
	if err := workload.Apply(ctx, env.Client, payments, paymentsInstance()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		svc     workload.Service
		opts    workload.AgentOptions
		wantErr []string
	}{
		{"token for another audience", payments, workload.AgentOptions{Istiod: istiod.SecureXDSAddr, Audience: "api"},
			[]string{"istio-agent payments-v1.shop", "no certificate for spiffe://cluster.local/ns/shop/sa/payments", "the agent says"}},
		{"unknown service account", workload.Service{Name: "payments", Namespace: ns, ServiceAccount: "nobody"},
			workload.AgentOptions{Istiod: istiod.SecureXDSAddr}, []string{`serviceaccounts "nobody" not found`}},
		{"istiod down", payments, workload.AgentOptions{Istiod: "127.0.0.1:1"},
			[]string{"no certificate for spiffe://cluster.local/ns/shop/sa/payments", "the agent says", "127.0.0.1:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := workload.StartAgent(ctx, env.Client, tt.svc, paymentsInstance(), devserver.Options{Dir: agentDir(t), ReadyTimeout: 15 * time.Second}, tt.opts)
			if err == nil {
				_ = a.Stop()
				t.Fatal("agent started, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			t.Logf("error: %v", firstLines(err.Error(), 3))
		})
	}
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no certificate", path)
	}
	return out
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
