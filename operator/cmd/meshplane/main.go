// Command meshplane is the platform's command line: `meshplane render` turns TrafficPolicies into the
// Istio objects the operator would apply, offline; `check` checks them together along the call graph; `up`, `status`, `drill` and `down` run the whole
// platform on one machine.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if exit, ok := errors.AsType[*exitError](err); ok {
			os.Exit(exit.code)
		}
		say(os.Stderr, "meshplane: %v", err)
		os.Exit(1)
	}
}

// exitError ends the program with code after the command has already explained itself on stderr.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// streams are a command's standard streams and environment; commands never touch os.* directly.
type streams struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// command is one subcommand. New subcommands (up, status, drill, mesh) add an entry to commands.
type command struct {
	summary string
	run     func(ctx context.Context, s streams, args []string) error
}

var commands = map[string]command{
	"render":  {summary: "render TrafficPolicies into Istio objects, offline", run: runRender},
	"check":   {summary: "check TrafficPolicies together along the call graph (retry amplification, timeouts, idempotency), offline", run: runCheck},
	"up":      {summary: "start the whole platform locally (apiserver, operator, Consul, shop, Prometheus, Loki)", run: runUp},
	"status":  {summary: "show the local platform's components, health and TrafficPolicies (exit 0 healthy, 1 unhealthy, 3 not running)", run: runStatus},
	"drill":   {summary: "run a payments failure drill against the local platform", run: runDrill},
	"down":    {summary: "stop the local platform; no process is left behind", run: runDown},
	"inforce": {summary: "show what a service's mesh clients received from istiod next to its TrafficPolicy", run: runInForce},
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	s := streams{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return &exitError{code: 2}
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		say(stderr, "meshplane: unknown command %q", args[0])
		usage(stderr)
		return &exitError{code: 2}
	}
	return cmd.run(ctx, s, args[1:])
}

func usage(w io.Writer) {
	say(w, "Usage: meshplane COMMAND [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		say(w, "  %-10s %s", name, commands[name].summary)
	}
	say(w, "\nRun 'meshplane COMMAND -h' for a command's flags.")
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (f *stringsFlag) String() string { return strings.Join(*f, ",") }

func (f *stringsFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}

// say writes one line for the user; a terminal that cannot be written to leaves nothing to report to.
func say(w io.Writer, format string, args ...any) {
	_, _ = fmt.Fprintf(w, format+"\n", args...)
}
