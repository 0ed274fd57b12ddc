package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"meshplane.dev/operator/localplatform"
)

// platformFlags are the flags every platform command shares.
type platformFlags struct {
	repo, dir string
}

func (p *platformFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&p.repo, "repo", "", "repository root (default: found from the working directory)")
	fs.StringVar(&p.dir, "dir", "", "state, logs and data of the local platform (default <repo>/.local)")
}

func (p *platformFlags) config() (localplatform.Config, error) {
	repo := p.repo
	if repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			return localplatform.Config{}, err
		}
		if repo, err = localplatform.FindRepo(wd); err != nil {
			return localplatform.Config{}, err
		}
	}
	repo, err := filepath.Abs(repo)
	if err != nil {
		return localplatform.Config{}, err
	}
	dir := p.dir
	if dir == "" {
		dir = filepath.Join(repo, ".local")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return localplatform.Config{}, err
	}
	return localplatform.Config{Repo: repo, Dir: dir, Ports: localplatform.DefaultPorts()}, nil
}

// parse parses fs and turns -h into a clean exit.
func parse(fs *flag.FlagSet, args []string) (bool, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, &exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return true, nil
}

func runUp(ctx context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane up", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var pf platformFlags
	pf.add(fs)
	ports := localplatform.DefaultPorts()
	fs.Var(ports, "port", "override ports, name=port[,name=port] (repeatable); names: "+ports.String())
	host := fs.String("host", "", "the machine's address the shop's endpoints are published at (default: its first non-loopback IPv4)")
	rate := fs.Float64("load-rate", 2, "loadgen's requests per second through the gateway; 0 starts no load")
	discovery := fs.String("discovery", localplatform.DiscoveryXDS, "how the shop's services reach each other: xds (proxyless gRPC through istiod, so TrafficPolicies act on every call) or consul (Consul's health API; no istiod)")
	timeout := fs.Duration("timeout", 5*time.Minute, "longest the start may take")
	supervise := fs.Bool("supervise", false, "run the supervisor in the foreground (what up starts in the background)")
	runID := fs.String("run-id", "", "run id (set by up for its supervisor)")
	if ok, err := parse(fs, args); !ok {
		return err
	}
	if err := localplatform.ValidateDiscovery(*discovery); err != nil {
		return err
	}
	cfg, err := pf.config()
	if err != nil {
		return err
	}
	cfg.Ports, cfg.LoadRate, cfg.ReadyTimeout, cfg.Host, cfg.Discovery = ports, *rate, *timeout, *host, *discovery
	if cfg.Host == "" {
		if cfg.Host, err = localplatform.HostAddress(); err != nil {
			return err
		}
	}
	if *supervise {
		progress, err := os.OpenFile(filepath.Join(cfg.Dir, "progress.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer progress.Close()
		return localplatform.Supervise(ctx, cfg, *runID, progress)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// The supervisor gets the same settings, resolved.
	sargs := []string{"up", "--supervise", "--repo", cfg.Repo, "--dir", cfg.Dir, "--port", ports.String(),
		"--load-rate", fmt.Sprint(*rate), "--timeout", timeout.String(), "--host", cfg.Host, "--discovery", *discovery}
	return localplatform.Up(ctx, cfg, exe, sargs, s.stdout)
}

func runDown(_ context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane down", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var pf platformFlags
	pf.add(fs)
	if ok, err := parse(fs, args); !ok {
		return err
	}
	cfg, err := pf.config()
	if err != nil {
		return err
	}
	return localplatform.Down(cfg, s.stdout)
}

func runStatus(ctx context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane status", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var pf platformFlags
	pf.add(fs)
	if ok, err := parse(fs, args); !ok {
		return err
	}
	cfg, err := pf.config()
	if err != nil {
		return err
	}
	err = localplatform.Status(ctx, cfg, s.stdout)
	if errors.Is(err, localplatform.ErrNotRunning) {
		// Status said so in one line; the code tells scripts (as for LSB init scripts' status).
		return &exitError{code: exitNotRunning}
	}
	return err
}

// exitNotRunning is status's exit code when no platform runs: 0 is all healthy, 1 a component down.
const exitNotRunning = 3

func runDrill(ctx context.Context, s streams, args []string) error {
	fs := flag.NewFlagSet("meshplane drill", flag.ContinueOnError)
	fs.SetOutput(s.stderr)
	var pf platformFlags
	pf.add(fs)
	o := localplatform.DefaultDrill()
	fs.DurationVar(&o.Baseline, "baseline", o.Baseline, "normal traffic before the fault")
	fs.DurationVar(&o.Fault, "fault", o.Fault, "how long payments fails every charge")
	fs.DurationVar(&o.Recovery, "recovery", o.Recovery, "longest to watch the recovery")
	fs.DurationVar(&o.Every, "every", o.Every, "interval between table rows")
	fs.Float64Var(&o.OrderRate, "order-rate", o.OrderRate, "orders per second the drill places itself")
	scenarios := fs.String("scenarios", strings.Join(o.Scenarios, ","), "comma-separated scenarios to run, in order: "+
		localplatform.ScenarioBreaker+" (payments failing, orders' breaker), "+localplatform.ScenarioDatabase+
		" (an orders replica killed and PostgreSQL restarted under load; duplicates counted) and the mesh scenarios on payments through istiod ("+
		strings.Join(localplatform.MeshScenarios, ", ")+")")
	if ok, err := parse(fs, args); !ok {
		return err
	}
	o.Scenarios = strings.Split(*scenarios, ",")
	cfg, err := pf.config()
	if err != nil {
		return err
	}
	return localplatform.Drill(ctx, cfg, o, s.stdout)
}
