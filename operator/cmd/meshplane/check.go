package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"

	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/internal/inforce"
	"meshplane.dev/operator/internal/render"
)

// graphFlags are where the call graph comes from besides the policies' allow lists, and the analysis'
// limit: `check` and `render --explain` share them.
type graphFlags struct {
	files            stringsFlag
	nonIdempotent    stringsFlag
	maxAmplification int64
	istiod           string
}

func (g *graphFlags) add(fs *flag.FlagSet) {
	fs.Var(&g.files, "graph", "graph file (YAML: calls from/to/method, services that must not be repeated); repeatable")
	fs.Var(&g.nonIdempotent, "non-idempotent", "SERVICE or SERVICE/METHOD (NAMESPACE/SERVICE[/METHOD]) whose calls must not be repeated; repeatable")
	fs.Int64Var(&g.maxAmplification, "max-amplification", callgraph.DefaultMaxAmplification, "most worst-case attempts one incoming request may cause at one service")
	fs.StringVar(&g.istiod, "istiod", "", "also read the calls istiod serves proxyless gRPC clients, from its debug address (e.g. http://127.0.0.1:15080)")
}

// graph reads the graph files, the non-idempotent flags and, with --istiod, the calls istiod observes.
func (g *graphFlags) graph(ctx context.Context, namespace string, services []render.Service, clusterDomain string) (callgraph.Graph, error) {
	var graphs []callgraph.Graph
	var errs []error
	for _, path := range g.files {
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		parsed, err := callgraph.ParseFile(path, data, namespace)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		graphs = append(graphs, parsed)
	}
	for _, v := range g.nonIdempotent {
		t, err := callgraph.ParseTarget(v, namespace)
		if err != nil {
			errs = append(errs, fmt.Errorf("--non-idempotent %w", err))
			continue
		}
		graphs = append(graphs, callgraph.Graph{NonIdempotent: []callgraph.Target{t}})
	}
	if g.istiod != "" {
		clients, err := inforce.Istiod{URL: g.istiod, Client: &http.Client{Timeout: 10 * time.Second}}.Watchers(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		var observed []callgraph.Observed
		for _, c := range clients {
			for _, host := range c.Hosts {
				observed = append(observed, callgraph.Observed{Name: c.Name, Namespace: c.Namespace, Labels: c.Labels, Host: host})
			}
		}
		kube := make([]*corev1.Service, len(services))
		for i, s := range services {
			kube[i] = s.Service
		}
		graphs = append(graphs, callgraph.FromObserved(observed, kube, clusterDomain))
	}
	return callgraph.Merge(graphs...), errors.Join(errs...)
}

func runCheck(ctx context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane check", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var files stringsFlag
	fs.Var(&files, "f", "file or directory of YAML (TrafficPolicies, and the Services they target if you have them); repeatable; - reads stdin")
	namespace := fs.String("namespace", "default", "namespace of documents and names that set none")
	failOn := fs.String("fail-on", "warning", "exit 1 when a finding is at least this severe: info, warning or error")
	output := fs.String("o", "text", "output format: text or json")
	paths := fs.Bool("paths", false, "text output: also print every path with the worst case at each call")
	var g graphFlags
	g.add(fs)
	defaults := desiredstate.PlatformDefaults()
	defaults.AddFlags(fs)
	fs.Usage = func() {
		say(s.stderr, "Usage: meshplane check -f PATH [-f PATH...] [--graph FILE] [--fail-on warning] [-o json]\n\n"+
			"Checks the TrafficPolicies together along the call graph: retries that multiply down a chain, a\n"+
			"caller's timeout shorter than what it calls can take, two layers retrying the same failure, retries\n"+
			"of or above calls that must not be repeated. The graph is what the policies' allow lists declare,\n"+
			"plus --graph files, --non-idempotent services and, with --istiod, the calls istiod serves. Offline\n"+
			"unless --istiod. Exit status: 0 no finding at or above --fail-on, 1 some, 2 bad usage or input.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	threshold, err := callgraph.ParseSeverity(*failOn)
	if len(files) == 0 || fs.NArg() > 0 || err != nil || (*output != "text" && *output != "json") {
		if err != nil {
			say(s.stderr, "meshplane check: --fail-on: %v", err)
		}
		fs.Usage()
		return &exitError{code: 2}
	}
	if err := defaults.Validate(); err != nil {
		say(s.stderr, "meshplane check: %v", err)
		return &exitError{code: 2}
	}

	in, problems := render.Load(files, s.stdin, *namespace)
	policies, invalid := render.Policies(in)
	if problems = append(problems, invalid...); len(problems) > 0 {
		say(s.stderr, "%s", problems.Error())
		return &exitError{code: 2}
	}
	extra, err := g.graph(ctx, *namespace, in.Services, defaults.ClusterDomain)
	if err != nil {
		say(s.stderr, "%v", err)
		return &exitError{code: 2}
	}
	report, err := render.CallGraph(in, policies, extra, defaults, callgraph.Options{MaxAmplification: g.maxAmplification})
	if err != nil {
		say(s.stderr, "meshplane check: %v", err)
		return &exitError{code: 2}
	}
	if *output == "json" {
		err = callgraph.WriteJSON(s.stdout, report)
	} else {
		err = callgraph.WriteText(s.stdout, report, *paths)
	}
	if err != nil {
		return err
	}
	if report.Count(threshold) > 0 {
		return &exitError{code: 1}
	}
	return nil
}
