// Package wait polls a condition until it holds or a deadline passes: the one way Meshplane code and
// tests wait for another process, never a fixed sleep.
package wait

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Until calls cond immediately and then every interval until it returns nil or ctx ends. The error
// names the context's end and wraps cond's last error, so a timeout says what was still wrong.
func Until(ctx context.Context, interval time.Duration, cond func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		if stop, ok := errors.AsType[stopError](err); ok {
			return stop.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %w", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// Stop wraps err so that Until returns it at once instead of polling again: for conditions that can
// tell they will never hold (the process being waited for exited).
func Stop(err error) error { return stopError{err} }

type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// For polls cond every 100ms for up to timeout and fails the test with cond's last error if it never
// returns nil.
func For(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Until(ctx, 100*time.Millisecond, func(context.Context) error { return cond() }); err != nil {
		t.Fatalf("not within %s: %v", timeout, err)
	}
}
