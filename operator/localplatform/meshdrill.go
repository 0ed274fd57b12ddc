package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/internal/inforce"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
)

// MeshScenarios are the drill's scenarios on the local mesh, each proving one Istio field on real
// calls to payments through istiod.
var MeshScenarios = []string{"split", "retries", "timeout", "max-requests", "outlier"}

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
	default:
		return m.OutlierDetection("payments-v2", 5, 100)
	}
}

// meshDrill runs the mesh scenarios against payments' two instances with the drill's own proxyless
// caller, prints each as a before/after table, and restores payments' sample TrafficPolicy after.
// The shop's own traffic goes on meanwhile: orders' calls to payments follow the same policies and
// faults.
func meshDrill(ctx context.Context, cfg Config, st *State, names []string, out io.Writer) (err error) {
	if st.XDSAddr == "" {
		return errors.New("the mesh scenarios need istiod, which this platform runs without (--discovery consul): restart it with make up")
	}
	c, err := kubeClient(st.Kubeconfig)
	if err != nil {
		return err
	}
	caller := proxyless.Bootstrap{
		Node: proxyless.Node{Name: "drill", Namespace: ShopNamespace, IP: meshIPPrefix + "250",
			Labels: map[string]string{"app": "drill"}, ServiceAccount: "drill"},
		XDSAddr: st.XDSAddr,
	}
	conn, err := scenario.DialXDS(caller, proxyless.Target("payments", ShopNamespace, st.Ports["payments"], ""))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	m := &scenario.Mesh{
		Namespace: ShopNamespace, Service: "payments", Port: st.Ports["payments"], Method: "Charge",
		Istiod: inforce.Istiod{URL: "http://" + st.Ports.Addr("istiod")}, CallerID: caller.Node.ProxyID(), Call: scenario.Charge(conn),
		Apply: func(ctx context.Context, manifest []byte) error {
			_, err := applyPolicy(ctx, c, manifest)
			return err
		},
		Client: c,
		SetHealthy: func(ctx context.Context, instance string, healthy bool) error {
			return workload.SetHealthy(ctx, c, ShopNamespace, instance, healthy)
		},
	}
	for _, in := range shopInstances() {
		if in.svc.name == "payments" {
			m.Instances = append(m.Instances, scenario.Instance{
				Name: in.workload(st.Ports).Name, Subset: in.version, Admin: st.Ports.Addr(in.key + "-admin"),
			})
		}
	}
	defer func() {
		// Whatever happened, payments goes back to its sample policy.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		names, aerr := applySamples(rctx, c, cfg.Repo, "payments")
		if aerr == nil {
			aerr = waitReady(rctx, c, names...)
		}
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("restore payments' sample TrafficPolicy: %w", aerr))
			return
		}
		fmt.Fprintln(out, "Restored payments' sample TrafficPolicy.")
	}()

	fmt.Fprintf(out, "Mesh scenarios: each applies a TrafficPolicy for payments, waits until the drill's own proxyless\n"+
		"client (%s) holds it from istiod, drives bounded calls, and counts what each instance served.\n\n", m.CallerID)
	var errs []error
	for _, name := range names {
		sc := meshScenario(m, name)
		outcomes, err := m.Run(ctx, sc)
		if werr := scenario.WriteTable(out, sc, outcomes, m.Instances); werr != nil {
			return werr
		}
		fmt.Fprintln(out)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, o := range outcomes {
			if o.Err != nil {
				errs = append(errs, fmt.Errorf("%s, %s: %w", sc.Name, o.Step, o.Err))
			}
		}
	}
	return errors.Join(errs...)
}
