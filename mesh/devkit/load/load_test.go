package load_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/load"
)

func TestClosedCountsEveryCallAndStopsAtTheFirstFailure(t *testing.T) {
	var calls atomic.Int64
	res := load.Closed(context.Background(), 4, 50*time.Millisecond, func(ctx context.Context) error {
		calls.Add(1)
		return nil
	})
	if res.Err != nil || res.Requests == 0 || len(res.Latencies) != res.Requests || int64(res.Requests) > calls.Load() {
		t.Fatalf("Closed = %d requests, %d latencies, %v; %d calls made", res.Requests, len(res.Latencies), res.Err, calls.Load())
	}

	boom := errors.New("boom")
	var n atomic.Int64
	res = load.Closed(context.Background(), 2, time.Minute, func(ctx context.Context) error {
		if n.Add(1) == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(res.Err, boom) || res.Elapsed > 10*time.Second {
		t.Errorf("failing run: err %v after %s, want boom at once", res.Err, res.Elapsed)
	}
}

func TestClosedCancelsInFlightCallsInsteadOfExpiringThem(t *testing.T) {
	var expired atomic.Bool
	load.Closed(context.Background(), 2, 20*time.Millisecond, func(ctx context.Context) error {
		<-ctx.Done()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			expired.Store(true)
		}
		return ctx.Err()
	})
	if expired.Load() {
		t.Error("a call in flight at the end of the run saw DeadlineExceeded, want Canceled")
	}
}

func TestResultAddAndRPS(t *testing.T) {
	var r load.Result
	r.Add(load.Result{Requests: 10, Elapsed: time.Second, Latencies: []time.Duration{1, 2}})
	r.Add(load.Result{Requests: 30, Elapsed: time.Second, Latencies: []time.Duration{3}})
	if r.RPS() != 20 || r.Requests != 40 || r.Percentile(100) != 3 || r.Percentile(1) != 1 {
		t.Errorf("merged result %+v: rps %v, p100 %v", r, r.RPS(), r.Percentile(100))
	}
}
