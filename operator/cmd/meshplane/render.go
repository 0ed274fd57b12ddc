package main

import (
	"context"
	"errors"
	"flag"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/desiredstate"
	"meshplane.dev/operator/internal/render"
)

func runRender(ctx context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane render", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var files stringsFlag
	fs.Var(&files, "f", "file or directory of YAML (TrafficPolicies and the Services they target); repeatable; - reads stdin")
	explain := fs.Bool("explain", false, "print the effective policy of each TrafficPolicy as a table, and the call-graph findings of them together, instead of the objects")
	namespace := fs.String("namespace", "default", "namespace of documents that set none")
	var g graphFlags
	g.add(fs)
	defaults := desiredstate.PlatformDefaults()
	defaults.AddFlags(fs)
	fs.Usage = func() {
		say(s.stderr, "Usage: meshplane render -f PATH [-f PATH...] [--explain]\n\n"+
			"Writes the Istio objects the operator would generate, as YAML on stdout. Invalid input writes\n"+
			"every problem to stderr, nothing to stdout, and exits 1. --explain writes the effective policies\n"+
			"and the call-graph findings of `meshplane check` (the graph flags apply to it only).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2}
	}
	if len(files) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return &exitError{code: 2}
	}
	if err := defaults.Validate(); err != nil {
		say(s.stderr, "meshplane render: %v", err)
		return &exitError{code: 2}
	}

	// Every problem at once: decoding problems, then those of the documents that did decode.
	in, problems := render.Load(files, s.stdin, *namespace)
	rendered, invalid := render.Render(in, defaults)
	if problems = append(problems, invalid...); len(problems) > 0 {
		say(s.stderr, "%s", problems.Error())
		return &exitError{code: 1}
	}
	if *explain {
		extra, err := g.graph(ctx, *namespace, in.Services, defaults.ClusterDomain)
		if err != nil {
			say(s.stderr, "%v", err)
			return &exitError{code: 1}
		}
		policies := make([]*v1alpha1.TrafficPolicy, len(rendered))
		for i, r := range rendered {
			policies[i] = r.Policy
		}
		report, err := render.CallGraph(in, policies, extra, defaults, callgraph.Options{MaxAmplification: g.maxAmplification})
		if err != nil {
			return err
		}
		return render.WriteExplain(s.stdout, rendered, report)
	}
	return render.WriteYAML(s.stdout, rendered)
}
