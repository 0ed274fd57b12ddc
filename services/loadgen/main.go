// Command loadgen drives the shop through the gateway with weighted scenarios — browse often, order
// rarely — at a fixed rate, bounded by a duration or a request count, and prints a summary at the end.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"meshplane.dev/mesh/config"
	"meshplane.dev/mesh/service"

	"meshplane.dev/services/loadgen/internal/load"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := DefaultConfig()
	if ok, err := config.Parse(&cfg, "loadgen", args, getenv, stdout, stderr); !ok {
		return err
	}

	// Logs go to stderr so stdout carries only the summary.
	rt, err := service.Start("loadgen", cfg.service(), stderr)
	if err != nil {
		return err
	}
	defer rt.Close()
	gen, err := load.New(load.Options{
		BaseURL: cfg.TargetURL, Rate: cfg.Rate, Duration: cfg.Duration, Requests: cfg.Requests,
		Concurrency: cfg.Concurrency, Scenarios: cfg.Scenarios, OrderRetries: cfg.OrderRetries, Seed: cfg.Seed,
		Client: &http.Client{Timeout: cfg.RequestTimeout}, Logger: rt.Logger, Registerer: rt.Registry,
	})
	if err != nil {
		return err
	}

	runCtx, finished := context.WithCancel(ctx)
	summary := make(chan load.Summary, 1)
	go func() {
		summary <- gen.Run(runCtx)
		finished() // a bounded run ends the process like a signal would
	}()
	if err := rt.Serve(runCtx); err != nil {
		return err
	}
	finished()
	s := <-summary
	if err := s.WriteTable(stdout); err != nil {
		return err
	}
	rt.Logger.Info("load finished", "requests", s.Total(), "errors", s.Errors(), "seconds", s.Elapsed.Seconds())
	return nil
}
