package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/localplatform/controlplane"
)

// ErrNotRunning is Status's error when no platform runs in the directory.
var ErrNotRunning = errors.New("meshplane is not running")

// Status prints what runs, whether each part answers its health check, the TrafficPolicies and their
// Ready state, and the commands to try next. It fails when the platform is not running or a component is
// unhealthy.
func Status(ctx context.Context, cfg Config, out io.Writer) error {
	st, err := ReadState(cfg.Dir)
	if err != nil {
		return err
	}
	if st == nil || !alive(st.SupervisorPID) {
		fmt.Fprintf(out, "Meshplane is not running (state: %s). Start it with: make up\n", cfg.Dir)
		return ErrNotRunning
	}
	fmt.Fprintf(out, "Meshplane: %s since %s (supervisor pid %d, run %s)\n\n", st.Phase, st.Started.Format(time.TimeOnly), st.SupervisorPID, st.RunID)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tHEALTH\tURL\tLOG")
	unhealthy := 0
	for _, c := range st.Components {
		health := "ok"
		if c.Health != "" {
			if err := healthy(ctx, c.Health); err != nil {
				health, unhealthy = "DOWN", unhealthy+1
			}
		} else if c.PID != 0 && !alive(c.PID) {
			health, unhealthy = "DOWN", unhealthy+1
		}
		if c.Restarts > 0 {
			health += fmt.Sprintf(" (restarted %d×)", c.Restarts)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, health, c.URL, rel(cfg.Repo, c.Log))
	}
	tw.Flush()

	fmt.Fprintln(out)
	if err := printPolicies(ctx, st.Kubeconfig, out); err != nil {
		fmt.Fprintf(out, "TrafficPolicies: %v\n", err)
	}
	kubectl := filepath.Join(devserver.BinDir(), "kubectl")
	fmt.Fprintf(out, `
Try:
  export KUBECONFIG=%s
  %s get tp -n %s                 # TrafficPolicies and their Ready state
  curl -s http://%s/v1/products
  curl -s http://%s/v1/catalog/services    # what the sync registered in Consul
  PGPASSFILE=%s psql postgres://%s@%s/orders -c 'SELECT id, status, charge_id FROM orders'
  open http://%s/ui/  http://%s/alerts
`, rel(cfg.Repo, st.Kubeconfig), kubectl, ShopNamespace, st.Ports.Addr("gateway"), st.Ports.Addr("consul"),
		rel(cfg.Repo, cfg.pgpassPath()), devserver.PostgresSuperuser, st.Ports.Addr("postgres"),
		st.Ports.Addr("consul"), st.Ports.Addr("prometheus"))
	if st.XDSAddr != "" {
		fmt.Fprintf(out, `  go run ./operator/cmd/meshplane inforce --istiod http://%s --kubeconfig %s -n %s payments
                                         # what payments' callers hold from istiod vs. its TrafficPolicy
`, st.Ports.Addr("istiod"), rel(cfg.Repo, st.Kubeconfig), ShopNamespace)
	}
	fmt.Fprintln(out, "\nNext: make drill (payments failing: orders' breaker, then the mesh scenarios), make status, make down.")
	if unhealthy > 0 {
		return fmt.Errorf("%d components unhealthy", unhealthy)
	}
	return nil
}

func printPolicies(ctx context.Context, kubeconfig string, out io.Writer) error {
	c, err := kubeClient(kubeconfig)
	if err != nil {
		return err
	}
	var list v1alpha1.TrafficPolicyList
	if err := c.List(ctx, &list); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TRAFFICPOLICY\tSERVICE\tREADY\tREASON")
	for _, p := range list.Items {
		ready, reason := "Unknown", ""
		if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			ready, reason = string(c.Status), c.Reason
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Spec.TargetRef.Name, ready, reason)
	}
	return tw.Flush()
}

func kubeClient(kubeconfig string) (client.Client, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.Timeout = 5 * time.Second
	return client.New(rc, client.Options{Scheme: controlplane.NewScheme()})
}

func rel(base, path string) string {
	if r, err := filepath.Rel(base, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}
