package wait_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/wait"
)

func TestUntilReturnsOnceConditionHolds(t *testing.T) {
	calls := 0
	err := wait.Until(context.Background(), time.Millisecond, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestUntilReportsLastErrorAtDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := wait.Until(ctx, time.Millisecond, func(context.Context) error { return errors.New("orders not ready") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "orders not ready") {
		t.Fatalf("Until = %v, want deadline exceeded naming the last error", err)
	}
}

func TestUntilStopsOnStop(t *testing.T) {
	calls := 0
	gone := errors.New("process exited")
	err := wait.Until(context.Background(), time.Millisecond, func(context.Context) error {
		calls++
		return wait.Stop(gone)
	})
	if !errors.Is(err, gone) || calls != 1 {
		t.Fatalf("Until = %v after %d calls, want the stop error after 1", err, calls)
	}
}
