package consulsync

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff doubles a delay from min to max with full jitter, so many watchers that failed together (Consul
// restarted) do not retry together.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// wait sleeps for the next delay or until ctx ends; it returns false if ctx ended.
func (b *backoff) wait(ctx context.Context) bool {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.cur = 0 }
