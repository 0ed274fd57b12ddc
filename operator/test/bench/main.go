// Command bench (operator/test/bench) measures the operator at scale, `meshplane render` and the Consul catalog sync against
// floors measured in the same run, and prints each figure as a JSON line for bench/cmd/bench, which
// `make bench` runs and which prints the table. Progress goes to stderr.
//
//	go run ./operator/test/bench -manager PATH -meshplane PATH -sizes 100,200 -render 1000 -consul 100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/operator/localplatform/controlplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	manager := fs.String("manager", "", "path of the manager binary (go build ./operator/cmd/manager); required for -sections operator")
	meshplane := fs.String("meshplane", "", "path of the meshplane binary (go build ./operator/cmd/meshplane); required for -sections render")
	sections := fs.String("sections", "operator,render,consul,xds", "comma-separated sections to run: operator, render, consul, xds")
	sizes := fs.String("sizes", "1000,2000,5000", "comma-separated numbers of TrafficPolicies for the operator section")
	steady := fs.Duration("steady", 30*time.Second, "how long writes are counted once every policy is Ready")
	timeout := fs.Duration("timeout", 5*time.Minute, "longest wait for every policy to be Ready, or every Service to be in Consul")
	renderN := fs.Int("render", 10000, "number of policies for meshplane render")
	consulSizes := fs.String("consul", "2000", "comma-separated numbers of Services for the Consul sync")
	endpoints := fs.Int("endpoints", 2, "ready endpoints per Service for the Consul sync")
	lag := fs.Int("lag-samples", 100, "EndpointSlice changes timed to the Consul catalog")
	workers := fs.Int("workers", 8, "concurrency of the bare clients (inputs and the operator floor)")
	dir := fs.String("dir", "", "directory for logs, inputs and profiles (default: a new temporary directory, kept)")
	xdsDuration := fs.Duration("xds-duration", 8*time.Second, "measured load per stack and round for the xds section")
	xdsRounds := fs.Int("xds-rounds", 2, "rounds alternating plain and xds channels")
	xdsConcurrency := fs.Int("xds-concurrency", 16, "calls in flight for the xds section")
	profile := fs.Bool("profile", false, "write CPU profiles (pprof) of the manager and of the Consul sync into -dir")
	managerFlags := fs.String("manager-flags", "", "extra space-separated flags for the manager, e.g. --max-concurrent-reconciles=16")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	want := strings.Split(*sections, ",")
	for _, s := range want {
		if !slices.Contains([]string{"operator", "render", "consul", "xds"}, s) {
			return fmt.Errorf("-sections: unknown section %q (want operator, render, consul, xds)", s)
		}
	}
	ns, err := parseSizes("-sizes", *sizes)
	if err != nil {
		return err
	}
	consulNs, err := parseSizes("-consul", *consulSizes)
	if err != nil {
		return err
	}
	switch {
	case slices.Contains(want, "operator") && *manager == "":
		return errors.New("-manager: required for the operator section")
	case slices.Contains(want, "render") && *meshplane == "":
		return errors.New("-meshplane: required for the render section")
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "meshplane-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench: logs and inputs in %s\n", *dir)
	// controller-runtime's own logger (caches, the in-process Consul sync) writes to a file.
	crlog, err := os.Create(filepath.Join(*dir, "controller-runtime.log"))
	if err != nil {
		return err
	}
	defer crlog.Close()
	ctrl.SetLogger(zap.New(zap.WriteTo(crlog)))
	emit := NewEmitter(stdout).Emit

	if slices.Contains(want, "render") {
		if err := Render(ctx, RenderOptions{Meshplane: *meshplane, N: *renderN, Dir: *dir, Log: stderr}, emit); err != nil {
			return fmt.Errorf("render: %w", err)
		}
	}
	if !slices.Contains(want, "operator") && !slices.Contains(want, "consul") && !slices.Contains(want, "xds") {
		return nil
	}
	env, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	if slices.Contains(want, "operator") {
		if err := Scale(ctx, ScaleOptions{
			Config: env.Config, Kubeconfig: env.Kubeconfig, Manager: *manager, Sizes: ns, Steady: *steady,
			Workers: *workers, Timeout: *timeout, Dir: *dir, Profile: *profile, ManagerArgs: strings.Fields(*managerFlags), Log: stderr,
		}, emit); err != nil {
			return err
		}
	}
	if slices.Contains(want, "xds") {
		if err := XDS(ctx, XDSOptions{
			Client: env.Client, Kubeconfig: env.Kubeconfig, Duration: *xdsDuration, Warmup: 2 * time.Second, Rounds: *xdsRounds,
			Concurrency: *xdsConcurrency, Dir: *dir, Log: stderr,
		}, emit); err != nil {
			return fmt.Errorf("xds: %w", err)
		}
	}
	if slices.Contains(want, "consul") {
		var runs []consulRun
		for _, n := range consulNs {
			// A Consul of its own per size: what one size registered would weigh on the next.
			run, err := consulOnce(ctx, ConsulOptions{
				Config: env.Config, N: n, Endpoints: *endpoints, LagSamples: *lag,
				Workers: *workers, Timeout: *timeout, Dir: *dir, Profile: *profile, Log: stderr,
			}, emit)
			if err != nil {
				return fmt.Errorf("consul sync of %d Services: %w", n, err)
			}
			runs = append(runs, run)
		}
		for _, r := range consulGrowthRows(runs) {
			if err := emit(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// consulOnce runs the Consul section for one size against a new Consul.
func consulOnce(ctx context.Context, o ConsulOptions, emit func(Row) error) (consulRun, error) {
	consul, err := devserver.StartConsul(ctx, devserver.Options{Dir: filepath.Join(o.Dir, fmt.Sprintf("consul-%d", o.N))})
	if err != nil {
		return consulRun{}, err
	}
	defer func() { _ = consul.Stop() }()
	o.Consul = consul.Addr
	return Consul(ctx, o, emit)
}

func parseSizes(flagName, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: invalid size %q: want positive integers such as 1000,5000", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}
