package localplatform

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"meshplane.dev/mesh/devkit/wait"
)

// binaries are the programs `up` builds into Dir/bin, by package.
var binaries = []string{
	"./operator/cmd/manager",
	"./services/catalog", "./services/payments", "./services/orders", "./services/fulfillment", "./services/gateway", "./services/loadgen",
}

// Up starts the platform: it refuses taken ports, builds the binaries, starts a detached supervisor
// (exe with supervisorArgs), follows its progress until everything is ready and prints the summary. A
// second Up while one runs just prints the status. Ctrl-C (ctx) stops what was started.
func Up(ctx context.Context, cfg Config, exe string, supervisorArgs []string, out io.Writer) error {
	if err := ensureDirs(cfg); err != nil {
		return err
	}
	prev, err := ReadState(cfg.Dir)
	if err != nil {
		return err
	}
	if prev != nil && alive(prev.SupervisorPID) {
		fmt.Fprintf(out, "Meshplane is already running (supervisor pid %d); its status:\n\n", prev.SupervisorPID)
		return Status(ctx, cfg, out)
	}
	if prev != nil {
		// A supervisor that died (kill -9, a reboot of the terminal) may have left children behind.
		if n := killRun(prev.RunID, syscall.SIGKILL); n > 0 {
			fmt.Fprintf(out, "Stopped %d processes left over from an earlier run.\n", n)
		}
	}
	if err := cfg.Ports.CheckFree(); err != nil {
		return err
	}
	began := time.Now()
	if err := build(ctx, cfg, out); err != nil {
		return err
	}
	built := time.Since(began)
	for _, p := range []string{cfg.statePath(), cfg.progressPath(), cfg.Kubeconfig()} {
		_ = os.Remove(p)
	}
	for _, d := range []string{filepath.Join(cfg.Dir, "data"), cfg.logDir()} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	if err := ensureDirs(cfg); err != nil {
		return err
	}

	runID := newRunID()
	logf, err := os.Create(cfg.logFile("supervisor"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, append(supervisorArgs, "--run-id", runID)...)
	cmd.Dir = cfg.Repo
	cmd.Env = append(os.Environ(), markerEnv+"="+runID)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: it outlives this command and no terminal signal reaches it except through down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	err = follow(ctx, cfg, pid, exited, out)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(out, "Interrupted: stopping what was started...")
			_ = stop(cfg, runID, pid, out)
			return ctx.Err()
		}
		fmt.Fprintf(out, "\nStart failed: %v\nLogs: %s\n", err, cfg.logDir())
		_ = stop(cfg, runID, pid, io.Discard)
		return err
	}
	fmt.Fprintf(out, "\nMeshplane is up in %s (%s of it building the binaries).\n\n",
		time.Since(began).Round(100*time.Millisecond), built.Round(100*time.Millisecond))
	return Status(ctx, cfg, out)
}

// follow prints the supervisor's progress lines until the run is ready or failed.
func follow(ctx context.Context, cfg Config, pid int, exited <-chan struct{}, out io.Writer) error {
	var offset int64
	printNew := func() {
		f, err := os.Open(cfg.progressPath())
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return
		}
		r := bufio.NewReader(f)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // a partial line is printed once complete
			}
			offset += int64(len(line))
			fmt.Fprint(out, line)
		}
	}
	return wait.Until(ctx, 100*time.Millisecond, func(context.Context) error {
		printNew()
		st, _ := ReadState(cfg.Dir)
		select {
		case <-exited:
			printNew()
			if st != nil && st.Error != "" {
				return wait.Stop(errors.New(st.Error))
			}
			return wait.Stop(fmt.Errorf("supervisor (pid %d) exited: %s", pid, tail(cfg.logFile("supervisor"), 2000)))
		default:
		}
		if st == nil {
			return errors.New("starting")
		}
		switch st.Phase {
		case PhaseReady:
			return nil
		case PhaseFailed:
			printNew()
			return wait.Stop(errors.New(st.Error))
		}
		return errors.New(st.Phase)
	})
}

// build compiles the platform's programs into Dir/bin.
func build(ctx context.Context, cfg Config, out io.Writer) error {
	fmt.Fprintf(out, "[build] go build %s (cached builds take seconds, a cold one a few minutes)\n", strings.Join(binaries, " "))
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", cfg.binDir() + "/"}, binaries...)...)
	cmd.Dir = cfg.Repo
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %w\n%s", err, b)
	}
	fmt.Fprintln(out, "[build] done")
	return nil
}

// Down stops a running platform and makes sure no process of it is left.
func Down(cfg Config, out io.Writer) error {
	st, err := ReadState(cfg.Dir)
	if err != nil {
		return err
	}
	if st == nil {
		fmt.Fprintln(out, "Meshplane is not running here (no state in", cfg.Dir+").")
		return nil
	}
	return stop(cfg, st.RunID, st.SupervisorPID, out)
}

// stop asks the supervisor to stop everything in order, then removes anything of the run that is left.
func stop(cfg Config, runID string, pid int, out io.Writer) error {
	if alive(pid) {
		fmt.Fprintf(out, "Stopping Meshplane (supervisor pid %d)...\n", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := wait.Until(ctx, 100*time.Millisecond, func(context.Context) error {
			if alive(pid) {
				return errors.New("supervisor still running")
			}
			return nil
		}); err != nil {
			fmt.Fprintln(out, "The supervisor did not stop in time; killing it.")
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if n := killRun(runID, syscall.SIGTERM); n > 0 {
		fmt.Fprintf(out, "Stopping %d leftover processes...\n", n)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if wait.Until(ctx, 100*time.Millisecond, func(context.Context) error {
			if n := len(RunProcesses(runID)); n > 0 {
				return fmt.Errorf("%d left", n)
			}
			return nil
		}) != nil {
			killRun(runID, syscall.SIGKILL)
		}
	}
	if left := RunProcesses(runID); len(left) > 0 {
		return fmt.Errorf("processes still running after stop: %v", left)
	}
	fmt.Fprintln(out, "Meshplane stopped; no process left.")
	return nil
}

func newRunID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
