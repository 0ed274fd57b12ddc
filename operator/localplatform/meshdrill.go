package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/inforce"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
)

// MeshScenarios are the drill's scenarios on the local mesh, each proving one Istio field on real
// calls to payments through istiod.
var MeshScenarios = []string{"split", "retries", "timeout", "max-requests", "outlier", "route-timeouts", "route-retries", "fault-abort", "fault-delay",
	"mtls", "allow", "certificates", "canary-promote", "canary-rollback", "canary-hold", "canary-abort"}

// drillRollout sizes the canary scenarios on the platform: steps twice the platform's scrape interval
// long (the least the API allows), the drill's caller making 50 calls a second, so a 20% step sees
// about 100 calls per check, well above minRequests, while loadgen's few orders a second stay below it
// at any step (canary-hold).
var drillRollout = scenario.Rollout{
	Stable: "v1", Candidate: "v2", Interval: 2 * PrometheusScrapeInterval, ScrapeInterval: PrometheusScrapeInterval,
	Settle: time.Second, CallsPerSecond: 50, MinRequests: 20, MinCalls: 100,
}

// canaryScenario runs a named canary scenario: the same ones as the scenario tests, with the platform's
// intervals; ok is false for a name that is not one.
func canaryScenario(ctx context.Context, m *scenario.Mesh, name string) (o scenario.CanaryOutcome, ok bool, err error) {
	switch name {
	case "canary-promote":
		o, err = m.CanaryPromote(ctx, drillRollout, []int32{20, 50, 100})
	case "canary-rollback":
		o, err = m.CanaryRollback(ctx, drillRollout, []int32{20, 60, 100}, 0.2)
	case "canary-hold":
		o, err = m.CanaryHold(ctx, drillRollout, []int32{25, 100}, 2)
	case "canary-abort":
		o, err = m.CanaryAbort(ctx, drillRollout, []int32{10, 50, 100}, 50)
	default:
		return o, false, nil
	}
	return o, true, err
}

// ScenarioCertificates checks the certificates payments serves instead of driving calls.
const ScenarioCertificates = "certificates"

// paymentService is payments' gRPC service, which the route scenarios match Charge in.
const paymentService = "meshplane.payments.v1.PaymentService"

// meshScenario builds a named scenario: the same ones, with the same sizes, as the scenario tests.
func meshScenario(m *scenario.Mesh, name string) scenario.Scenario {
	switch name {
	case "split":
		return m.CanarySplit("v1", "v2", 80, 400)
	case "retries":
		return m.Retries(0.5, 3, 400)
	case "timeout":
		return m.Timeout(1500*time.Millisecond, 300*time.Millisecond, 10)
	case "max-requests":
		return m.MaxRequests(2, 700*time.Millisecond, 10)
	case "route-timeouts":
		return m.RouteTimeouts("GetCharge", 600*time.Millisecond, 200*time.Millisecond, 10)
	case "route-retries":
		return m.RouteRetries(paymentService, "GetCharge", 0.5, 3, 400)
	case "fault-abort":
		return m.FaultAbort("GetCharge", 25, codes.Unavailable, 400)
	case "fault-delay":
		return m.FaultDelay("GetCharge", 400*time.Millisecond, 50, 100)
	case "mtls":
		return m.MTLS(100)
	case "allow":
		return m.Allow("orders", 100)
	default:
		return m.OutlierDetection("payments-v2", 5, 100)
	}
}

// meshDrill runs the mesh scenarios against payments' two instances with the drill's own proxyless
// callers and prints each as a before/after table. The drill joins the mesh as a workload would: an
// istio-agent for its service account (drill) gives its caller a certificate from istiod's CA, a second
// one holds the orders identity (for allow), and a third caller dials the instances without
// certificates. Payments' TrafficPolicy is saved first and restored exactly afterwards (spec, labels,
// annotations, field owners), also when the drill fails or is interrupted, so an edit the user made
// before the drill survives it. The shop's own traffic goes on meanwhile: orders' calls to payments
// follow the same policies and faults.
func meshDrill(ctx context.Context, st *State, names []string, out io.Writer) error {
	if st.XDSAddr == "" {
		return errors.New("the mesh scenarios need istiod, which this platform runs without (--discovery consul): restart it with make up")
	}
	if st.SecureXDSAddr == "" {
		return errors.New("the mesh scenarios need istiod's TLS port, which this platform was started without: restart it with make up")
	}
	c, err := kubeClient(st.Kubeconfig)
	if err != nil {
		return err
	}
	// The agents' working directories: short, since each holds a Unix socket.
	dir, err := os.MkdirTemp("", "meshplane-drill-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	target := proxyless.Target("payments", ShopNamespace, st.Ports["payments"], "")
	caller := func(name, serviceAccount string) (*grpc.ClientConn, proxyless.Node, *devserver.Agent, error) {
		if err := workload.EnsureServiceAccount(ctx, c, ShopNamespace, serviceAccount); err != nil {
			return nil, proxyless.Node{}, nil, err
		}
		svc := workload.Service{Name: name, Namespace: ShopNamespace, ServiceAccount: serviceAccount}
		in := workload.Instance{Name: name, IP: meshIPPrefix + "250"}
		a, err := workload.StartAgent(ctx, c, svc, in, devserver.Options{Dir: filepath.Join(dir, name)}, workload.AgentOptions{Istiod: st.SecureXDSAddr})
		if err != nil {
			return nil, proxyless.Node{}, nil, err
		}
		node := svc.Node(in)
		conn, err := scenario.DialXDS(a.Bootstrap(node, 0), target)
		if err != nil {
			_ = a.Stop()
			return nil, proxyless.Node{}, nil, err
		}
		return conn, node, a, nil
	}
	conn, node, agent, err := caller("drill", "drill")
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(); _ = agent.Stop() }()
	ordersConn, _, ordersAgent, err := caller("drill-as-orders", "orders")
	if err != nil {
		return err
	}
	defer func() { _ = ordersConn.Close(); _ = ordersAgent.Stop() }()
	key := client.ObjectKey{Namespace: ShopNamespace, Name: "payments"}
	m := &scenario.Mesh{
		Namespace: ShopNamespace, Service: "payments", Port: st.Ports["payments"], Method: "Charge",
		Istiod: inforce.Istiod{URL: "http://" + st.Ports.Addr("istiod")}, CallerID: node.ProxyID(), Call: scenario.Charge(conn),
		CallerIdentity: identity("drill"),
		Calls:          map[string]func(context.Context) error{"GetCharge": scenario.GetCharge(conn)},
		Apply:          func(ctx context.Context, manifest []byte) error { return replaceSpec(ctx, c, key, manifest) },
		Client:         c,
		SetHealthy: func(ctx context.Context, instance string, healthy bool) error {
			return workload.SetHealthy(ctx, c, ShopNamespace, instance, healthy)
		},
	}
	var addrs []string
	for _, in := range shopInstances() {
		if in.svc.name == "payments" {
			m.Instances = append(m.Instances, scenario.Instance{
				Name: in.workload(st.Ports).Name, Subset: in.version, Admin: st.Ports.Addr(in.key + "-admin"), Addr: st.Ports.Addr(in.key),
			})
			addrs = append(addrs, st.Ports.Addr(in.key))
		}
	}
	direct, err := scenario.DialDirect(addrs...)
	if err != nil {
		return err
	}
	defer func() { _ = direct.Close() }()
	m.Callers = map[string]scenario.Caller{
		scenario.CallerPlaintext: {Call: scenario.Charge(direct)},
		"orders":                 {Identity: identity("orders"), Call: scenario.Charge(ordersConn)},
	}

	fmt.Fprintf(out, "Mesh scenarios: each replaces payments' TrafficPolicy (saved first, restored after), waits until the\n"+
		"drill's own proxyless client (%s, %s, certificate from its istio-agent) and payments' servers hold\n"+
		"it from istiod, drives bounded calls, and counts what each instance served and whom it saw.\n\n", m.CallerID, m.CallerIdentity)
	restored := false
	err = withSavedPolicy(ctx, c, key, func(msg string) { restored = true; fmt.Fprintln(out, msg) }, func(ctx context.Context) error {
		// Start from a policy without mTLS that every caller gets through, once the drill's caller
		// reaches both instances: the platform's own policy makes payments STRICT, and a scenario
		// started while the caller's connection to one instance still backs off from the switch would
		// see that instance serve nothing.
		if _, err := m.ApplyAndWait(ctx, m.Policy(scenario.NoRetries)); err != nil {
			return fmt.Errorf("payments without mTLS before the scenarios: %w", err)
		}
		if err := m.ReachEvery(ctx); err != nil {
			return fmt.Errorf("payments without mTLS before the scenarios: %w", err)
		}
		var errs []error
		for _, name := range names {
			if name == ScenarioCertificates {
				if err := certificateDrill(ctx, c, m, agent.CertDir, out); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if o, ok, err := canaryScenario(ctx, m, name); ok {
				if werr := scenario.WriteCanaryTable(out, o, drillRollout.Candidate); werr != nil {
					return werr
				}
				fmt.Fprintln(out)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					if ctx.Err() != nil {
						break
					}
					continue
				}
				if err := o.Err(); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			sc := meshScenario(m, name)
			outcomes, err := m.Run(ctx, sc)
			if werr := scenario.WriteTable(out, sc, outcomes, m.Instances); werr != nil {
				return werr
			}
			fmt.Fprintln(out)
			if err != nil {
				errs = append(errs, err)
				if ctx.Err() != nil {
					break
				}
				continue
			}
			for _, o := range outcomes {
				if o.Err != nil {
					errs = append(errs, fmt.Errorf("%s, %s: %w", sc.Name, o.Step, o.Err))
				}
			}
		}
		return errors.Join(errs...)
	})
	if restored {
		// The restored policy is in force again once the operator says so.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
		defer cancel()
		var p v1alpha1.TrafficPolicy
		if gerr := c.Get(rctx, key, &p); gerr == nil {
			err = errors.Join(err, waitReady(rctx, c, key.Name))
		}
	}
	return err
}

// identity is the SPIFFE id of service account sa in the shop's namespace.
func identity(sa string) string { return "spiffe://cluster.local/ns/" + ShopNamespace + "/sa/" + sa }

// certificateDrill makes payments STRICT, so a handshake shows the certificate each instance serves, and
// checks it against istiod's root in Secret istio-system/istio-ca-secret: issued by istiod's CA, naming
// payments' SPIFFE id only. certDir holds the drill's own client certificate.
func certificateDrill(ctx context.Context, c client.Client, m *scenario.Mesh, certDir string, out io.Writer) error {
	if _, err := m.ApplyAndWait(ctx, m.Policy(scenario.NoRetries, scenario.WithMTLS(v1alpha1.MTLSStrict))); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: IstioNamespace, Name: "istio-ca-secret"}, &secret); err != nil {
		return fmt.Errorf("certificates: istiod's root: %w", err)
	}
	var checks []scenario.CertificateCheck
	var errs []error
	for _, in := range m.Instances {
		chain, err := scenario.ServedCertificate(ctx, in.Addr, certDir)
		if err == nil {
			err = scenario.VerifyIssued(chain, secret.Data["ca-cert.pem"], identity("payments"))
		}
		checks = append(checks, scenario.CertificateCheck{Label: in.Name, Chain: chain, Err: err})
		if err != nil {
			errs = append(errs, fmt.Errorf("certificates, %s: %w", in.Name, err))
		}
	}
	if err := scenario.WriteCertificates(out, "certificates — what payments serves under STRICT, checked against istio-system/istio-ca-secret", checks); err != nil {
		return err
	}
	fmt.Fprintln(out)
	return errors.Join(errs...)
}
