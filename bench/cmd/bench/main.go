// Command bench is `make bench`: it measures the service hot path in-process, order placement over a
// real PostgreSQL against the database's own floor, runs operator/test/bench
// for the operator at scale, `meshplane render` and the Consul sync, and prints every figure beside its
// floor and target as one Markdown table, which it also writes to -out.
//
//	scripts/bench.sh   # builds the binaries and runs this with them
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"meshplane.dev/bench/internal/hotpath"
	"meshplane.dev/bench/internal/orderbench"
	"meshplane.dev/bench/internal/report"
	"meshplane.dev/mesh/devkit/devserver"
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
	started, machine := time.Now(), report.ThisMachine()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "also write the table to this Markdown file (directories are created)")
	dir := fs.String("dir", "", "directory for logs, inputs and profiles (default: a new temporary directory, kept)")
	sections := fs.String("sections", "render,hotpath,orders,xds,operator,consul", "comma-separated sections: render, hotpath, orders, xds, operator, consul")
	services := fs.String("services", "", "directory holding the catalog, payments and orders binaries, for the orders section")
	operatorBench := fs.String("operator-bench", "", "path of operator/test/bench, which runs the render, operator and consul sections")
	manager := fs.String("manager", "", "path of the manager binary, for the operator section")
	meshplane := fs.String("meshplane", "", "path of the meshplane binary, for the render section")
	sizes := fs.String("sizes", "1000,2000,5000", "TrafficPolicies for the operator section (comma-separated sizes; how each figure grows is fitted across them)")
	steady := fs.Duration("steady", 30*time.Second, "how long the operator's steady-state writes are counted, per size")
	renderN := fs.Int("render", 10000, "policies for meshplane render")
	consulSizes := fs.String("consul", "2000", "Services for the Consul sync (comma-separated sizes)")
	timeout := fs.Duration("timeout", 5*time.Minute, "longest wait for every policy to be Ready, or every Service to be in Consul, per size")
	profile := fs.Bool("profile", false, "write CPU profiles of the hot path, the manager and the Consul sync into -dir")
	hotDuration := fs.Duration("hot-duration", 8*time.Second, "measured load per stack and round on the hot path and for proxyless gRPC")
	hotRounds := fs.Int("hot-rounds", 2, "rounds alternating bare and mesh (plain and xDS) stacks")
	concurrency := fs.Int("concurrency", 16, "requests in flight on the hot path and for proxyless gRPC")
	quick := fs.Bool("quick", false, "a one-minute check that every section runs (small sizes, short loads; the targets need the full run); flags given explicitly still count")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *quick {
		if err := quickDefaults(fs); err != nil {
			return err
		}
	}
	want := strings.Split(*sections, ",")
	var opSections []string
	for _, s := range want {
		switch s {
		case "hotpath", "orders":
		case "render", "xds", "operator", "consul":
			opSections = append(opSections, s)
		default:
			return fmt.Errorf("-sections: unknown section %q (want render, hotpath, orders, xds, operator, consul)", s)
		}
	}
	if slices.Contains(want, "orders") && *services == "" {
		return errors.New("-services: required for the orders section")
	}
	if len(opSections) > 0 && *operatorBench == "" {
		return errors.New("-operator-bench: required for the render, xds, operator and consul sections")
	}
	var err error
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "meshplane-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "bench: logs, inputs and profiles in %s\n", *dir)

	var rows []report.Row
	if slices.Contains(want, "render") {
		r, err := operatorRows(ctx, *operatorBench, stderr, "-sections=render", "-meshplane="+*meshplane, "-render="+strconv.Itoa(*renderN), "-dir="+*dir)
		rows = append(rows, r...)
		if err != nil {
			return err
		}
	}
	if slices.Contains(want, "hotpath") {
		r, err := hotPath(ctx, hotpath.Options{Dir: *dir, Duration: *hotDuration, Warmup: 2 * time.Second,
			Rounds: *hotRounds, Concurrency: *concurrency, Log: stderr}, *profile)
		rows = append(rows, r...)
		if err != nil {
			return err
		}
	}
	if slices.Contains(want, "orders") {
		r, err := orderbench.Run(ctx, orderbench.Options{Services: *services, Dir: filepath.Join(*dir, "orders"), Duration: *hotDuration,
			Warmup: 2 * time.Second, Rounds: *hotRounds, Concurrency: *concurrency, Log: stderr})
		rows = append(rows, r...)
		if err != nil {
			return err
		}
	}
	var rest []string
	for _, s := range opSections {
		if s != "render" {
			rest = append(rest, s)
		}
	}
	if len(rest) > 0 {
		r, err := operatorRows(ctx, *operatorBench, stderr, "-sections="+strings.Join(rest, ","), "-manager="+*manager,
			"-sizes="+*sizes, "-steady="+steady.String(), "-timeout="+timeout.String(), "-consul="+*consulSizes, "-dir="+*dir,
			"-profile="+strconv.FormatBool(*profile), "-xds-duration="+hotDuration.String(), "-xds-rounds="+strconv.Itoa(*hotRounds),
			"-xds-concurrency="+strconv.Itoa(*concurrency))
		rows = append(rows, r...)
		if err != nil {
			return err
		}
	}

	machine.LoadEnd = report.LoadAverage()
	var table bytes.Buffer
	if *quick {
		table.WriteString("Quick check (`-quick`): small sizes and short loads, to see that every section runs; the targets are for the full run.\n\n")
	}
	if err := report.Markdown(&table, rows, started, machine, time.Since(started)); err != nil {
		return err
	}
	if _, err := stdout.Write(table.Bytes()); err != nil {
		return err
	}
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, table.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: table written to %s\n", *out)
	}
	return nil
}

// quickSizes are -quick's values, for the flags not given explicitly.
var quickSizes = map[string]string{
	"sizes": "100,200", "steady": "5s", "render": "1000", "consul": "100",
	"hot-duration": "2s", "hot-rounds": "1",
}

// quickDefaults sets -quick's values on fs, leaving the flags given on the command line as they are.
func quickDefaults(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range quickSizes {
		if !given[name] {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("-quick: %s=%s: %w", name, v, err)
			}
		}
	}
	return nil
}

// hotPath starts a real Loki for the mesh stack's logs and measures the hot path, with a CPU profile
// of this process (both stacks, every round) in o.Dir/hotpath-cpu.pprof if profile is set.
func hotPath(ctx context.Context, o hotpath.Options, profile bool) ([]report.Row, error) {
	loki, err := devserver.StartLoki(ctx, devserver.Options{Dir: filepath.Join(o.Dir, "loki")})
	if err != nil {
		return nil, err
	}
	defer func() { _ = loki.Stop() }()
	o.LokiURL = loki.URL()
	if profile {
		f, err := os.Create(filepath.Join(o.Dir, "hotpath-cpu.pprof"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	return hotpath.Run(ctx, o)
}

// operatorRows runs operator/test/bench with args, its progress on stderr, and reads its rows. Rows it
// printed before failing are returned with the error.
func operatorRows(ctx context.Context, bin string, stderr io.Writer, args ...string) ([]report.Row, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, stderr
	runErr := cmd.Run()
	rows, err := report.ReadRows(&out)
	if runErr != nil {
		return rows, fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), runErr)
	}
	return rows, err
}
