package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/proxyless"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/inforce"
	"meshplane.dev/operator/localplatform/scenario"
	"meshplane.dev/operator/localplatform/workload"
)

// MeshScenarios are the drill's scenarios on the local mesh, each proving one Istio field on real
// calls to payments through istiod.
var MeshScenarios = []string{"split", "retries", "timeout", "max-requests", "outlier", "route-timeouts", "route-retries", "fault-abort", "fault-delay"}

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
	default:
		return m.OutlierDetection("payments-v2", 5, 100)
	}
}

// meshDrill runs the mesh scenarios against payments' two instances with the drill's own proxyless
// caller and prints each as a before/after table. Payments' TrafficPolicy is saved first and restored
// exactly afterwards (spec, labels, annotations, field owners), also when the drill fails or is
// interrupted, so an edit the user made before the drill survives it. The shop's own traffic goes on
// meanwhile: orders' calls to payments follow the same policies and faults.
func meshDrill(ctx context.Context, st *State, names []string, out io.Writer) error {
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
	key := client.ObjectKey{Namespace: ShopNamespace, Name: "payments"}
	m := &scenario.Mesh{
		Namespace: ShopNamespace, Service: "payments", Port: st.Ports["payments"], Method: "Charge",
		Istiod: inforce.Istiod{URL: "http://" + st.Ports.Addr("istiod")}, CallerID: caller.Node.ProxyID(), Call: scenario.Charge(conn),
		Calls:  map[string]func(context.Context) error{"GetCharge": scenario.GetCharge(conn)},
		Apply:  func(ctx context.Context, manifest []byte) error { return replaceSpec(ctx, c, key, manifest) },
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

	fmt.Fprintf(out, "Mesh scenarios: each replaces payments' TrafficPolicy (saved first, restored after), waits until the\n"+
		"drill's own proxyless client (%s) holds it from istiod, drives bounded calls, and counts what each\n"+
		"instance served.\n\n", m.CallerID)
	restored := false
	err = withSavedPolicy(ctx, c, key, func(msg string) { restored = true; fmt.Fprintln(out, msg) }, func(ctx context.Context) error {
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
