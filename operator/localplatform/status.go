package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/kubernetes"
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
		fmt.Fprintln(out, "Meshplane is not running; start it with: make up")
		return ErrNotRunning
	}
	fmt.Fprintf(out, "Meshplane: %s since %s (supervisor pid %d, run %s)\n\n", st.Phase, st.Started.Format(time.TimeOnly), st.SupervisorPID, st.RunID)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tHEALTH\tURL\tLOG")
	unhealthy := 0
	for _, c := range st.Components {
		health := "ok"
		if path, ok := strings.CutPrefix(c.Health, kubeHealth); ok {
			if err := kubeGetOK(ctx, st.Kubeconfig, path); err != nil {
				health, unhealthy = "DOWN", unhealthy+1
			}
		} else if c.Health != "" {
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
	if st.Ports["nats-monitor"] != 0 {
		fmt.Fprintln(out)
		if err := printStreams(ctx, st.Ports.Addr("nats-monitor"), out); err != nil {
			fmt.Fprintf(out, "Event streams (NATS): %v\n", err)
		}
	}
	kubectl := filepath.Join(devserver.BinDir(), "kubectl")
	fmt.Fprintf(out, `
Open:
  Consul UI          http://%s/ui/
  Prometheus alerts  http://%s/alerts

Try:
  export KUBECONFIG=%s
  %s get tp -n %s                 # TrafficPolicies and their Ready state
  curl -s http://%s/v1/products
  curl -s http://%s/v1/catalog/services    # what the sync registered in Consul
  PGPASSFILE=%s psql postgres://%s@%s/orders -c 'SELECT id, status, charge_id FROM orders'
  PGPASSFILE=%[8]s psql postgres://%[9]s@%[10]s/fulfillment -c 'SELECT order_id, id, status, created_at - order_placed_at AS took FROM shipments'
  curl -s 'http://%[11]s/jsz?streams=true&consumers=true'   # the event streams and consumers, as make status sums them up
`, st.Ports.Addr("consul"), st.Ports.Addr("prometheus"), rel(cfg.Repo, st.Kubeconfig), kubectl, ShopNamespace,
		st.Ports.Addr("gateway"), st.Ports.Addr("consul"),
		rel(cfg.Repo, cfg.pgpassPath()), devserver.PostgresSuperuser, st.Ports.Addr("postgres"), st.Ports.Addr("nats-monitor"))
	if st.XDSAddr != "" {
		fmt.Fprintf(out, `  %s inforce --istiod http://%s --kubeconfig %s -n %s payments
                                         # what payments' callers hold from istiod vs. its TrafficPolicy
`, meshplaneCommand(cfg), st.Ports.Addr("istiod"), rel(cfg.Repo, st.Kubeconfig), ShopNamespace)
	}
	fmt.Fprintln(out, "\nNext: make drill (payments failing: orders' breaker, then the mesh scenarios), make status, make down.")
	if unhealthy > 0 {
		return fmt.Errorf("%d components unhealthy", unhealthy)
	}
	return nil
}

// meshplaneCommand is how the user runs this CLI: the binary `make` builds into .local/bin when it is
// there (instant), go run otherwise (a few seconds of compiling).
func meshplaneCommand(cfg Config) string {
	bin := filepath.Join(cfg.Repo, ".local", "bin", "meshplane")
	if _, err := os.Stat(bin); err == nil {
		return rel(cfg.Repo, bin)
	}
	return "go run ./operator/cmd/meshplane"
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

// kubeHealth marks a Component.Health that is a path on the local API server (its /readyz checks,
// etcd's among them), read with the admin kubeconfig.
const kubeHealth = "kube:"

func kubeGetOK(ctx context.Context, kubeconfig, path string) error {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	rc.Timeout = 2 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	_, err = cs.Discovery().RESTClient().Get().AbsPath(path).DoRaw(ctx)
	return err
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
