// Package load drives a closed-loop load: a fixed number of callers, each making its next call as soon as
// the last one returned, for a fixed time, recording every latency. Meshplane's benchmarks use it to
// compare a stack against its floor under the same load.
package load

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Result is what one or more runs measured.
type Result struct {
	// Requests is the number of calls that completed.
	Requests int
	// Elapsed is the wall time of the runs.
	Elapsed time.Duration
	// Latencies holds every completed call's latency.
	Latencies []time.Duration
	// Err is the failure that ended a run early, if any.
	Err error
}

// Add merges another run into r.
func (r *Result) Add(o Result) {
	r.Requests += o.Requests
	r.Elapsed += o.Elapsed
	r.Latencies = append(r.Latencies, o.Latencies...)
}

// RPS is completed calls per second.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Percentile returns the p-th percentile latency (nearest rank), 0 without calls.
func (r *Result) Percentile(p int) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.Latencies)
	slices.Sort(s)
	return s[max((p*len(s)+99)/100-1, 0)]
}

// Closed runs call on n callers for d; the first failure ends the run and is returned in Err.
func Closed(ctx context.Context, n int, d time.Duration, call func(context.Context) error) Result {
	// The end of a run cancels the calls in flight rather than passing their deadline: a deadline would
	// reach a downstream call, where a circuit breaker rightly counts DeadlineExceeded as a failure, and
	// every run would end with a burst of them.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := time.AfterFunc(d, cancel)
	defer stop.Stop()
	var mu sync.Mutex
	var res Result
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			var err error
			for ctx.Err() == nil {
				t := time.Now()
				if err = call(ctx); err != nil {
					if ctx.Err() != nil {
						err = nil // cut off by the end of the run
					}
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			res.Requests += len(lat)
			res.Latencies = append(res.Latencies, lat...)
			if err != nil && res.Err == nil {
				res.Err = fmt.Errorf("call %d: %w", res.Requests+1, err)
				cancel()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}
