package main

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/inforce"
)

func runInForce(ctx context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane inforce", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	istiod := fs.String("istiod", "http://127.0.0.1:8080", "istiod's HTTP debug address (its --httpAddr; in a cluster: kubectl -n istio-system port-forward deploy/istiod 8080)")
	kubeconfig := fs.String("kubeconfig", s.getenv("KUBECONFIG"), "kubeconfig of the cluster istiod watches (default $KUBECONFIG)")
	namespace := fs.String("n", "default", "namespace of the Service")
	port := fs.Int("port", 0, "Service port to report (default: its first port)")
	proxy := fs.String("proxy", "", "report only this client, by istiod's proxy id (name.namespace)")
	prometheus := fs.String("prometheus", "", "Prometheus URL that scrapes the Service's servers (labels service, namespace): count the calls each gRPC route takes and mark routes no call took (local platform: http://127.0.0.1:9090)")
	metrics := fs.String("metrics", "", "comma-separated /metrics URLs of the Service's servers, read directly instead of --prometheus")
	fs.Usage = func() {
		say(s.stderr, "Usage: meshplane inforce [-n NAMESPACE] [--istiod URL] [--proxy ID] SERVICE\n\n"+
			"Shows, for each mesh client that calls SERVICE, what istiod actually sent it (routes, retry policy,\n"+
			"timeouts, clusters, circuit breaking, outlier detection) next to what the governing TrafficPolicy\n"+
			"declares, and whether gRPC's xDS client enforces it. Read from istiod's /debug/syncz and\n"+
			"/debug/config_dump. With --prometheus or --metrics, also counts the calls each gRPC route took from\n"+
			"the servers' own grpc_server_handled_total and marks routes no call took (a misspelt method).\n"+
			"Exits 1 when a client holds a value other than declared.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: *kubeconfig}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	kube, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	opts := inforce.Options{
		Istiod: inforce.Istiod{URL: *istiod, Client: &http.Client{Timeout: 10 * time.Second}},
		Kube:   kube, Namespace: *namespace, Service: fs.Arg(0), Port: *port, Proxy: *proxy,
	}
	switch {
	case *prometheus != "" && *metrics != "":
		say(s.stderr, "meshplane inforce: give --prometheus or --metrics, not both\n")
		return &exitError{code: 2}
	case *prometheus != "":
		opts.Calls = inforce.Prometheus{URL: *prometheus}
	case *metrics != "":
		opts.Calls = inforce.Scrape{URLs: strings.Split(*metrics, ",")}
	}
	report, err := inforce.Build(ctx, opts)
	if err != nil {
		return err
	}
	if err := report.Write(s.stdout); err != nil {
		return err
	}
	if report.Differs() {
		return &exitError{code: 1}
	}
	return nil
}
