package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Push limits: a batch is sent when it reaches maxBatchBytes or its first line is BatchWait old; a
// failed push is retried (connection errors, 429, 5xx) up to maxRetries times with backoff.
const (
	maxBatchBytes = 1 << 20
	maxRetries    = 3
	minBackoff    = 250 * time.Millisecond
	maxBackoff    = 2 * time.Second
	pushTimeout   = 5 * time.Second
)

// pusher batches queued lines into Loki push requests (JSON form of POST /loki/api/v1/push). It is
// the only goroutine that waits for Loki.
type pusher struct {
	url     string
	labels  map[string]string
	wait    time.Duration
	client  *http.Client
	dropped *prometheus.CounterVec

	// base is cancelled when Close's deadline passes, aborting the push in flight and any retry.
	base   context.Context
	cancel context.CancelFunc
	once   sync.Once
	lostAt atomic.Int64 // lines dropped because of the shutdown deadline
}

func newPusher(url string, labels map[string]string, wait time.Duration, dropped *prometheus.CounterVec) *pusher {
	base, cancel := context.WithCancel(context.Background())
	return &pusher{url: url, labels: labels, wait: wait, dropped: dropped, base: base, cancel: cancel,
		client: &http.Client{Timeout: pushTimeout}}
}

// stopBy makes every push give up once ctx ends.
func (p *pusher) stopBy(ctx context.Context) {
	p.once.Do(func() {
		go func() {
			select {
			case <-ctx.Done():
				p.cancel()
			case <-p.base.Done():
			}
		}()
	})
}

// lost is how many lines the shutdown deadline cost.
func (p *pusher) lost() int64 { return p.lostAt.Load() }

// run batches lines from queue until it is closed and drained, then pushes the rest.
func (p *pusher) run(queue <-chan entry) {
	defer p.cancel()
	var (
		batch []entry
		size  int
		due   <-chan time.Time
	)
	flush := func() {
		if len(batch) > 0 {
			p.push(batch)
		}
		batch, size, due = nil, 0, nil
	}
	for {
		select {
		case e, ok := <-queue:
			if !ok {
				flush()
				return
			}
			if len(batch) == 0 {
				due = time.After(p.wait)
			}
			batch = append(batch, e)
			size += len(e.line)
			if size >= maxBatchBytes {
				flush()
			}
		case <-due:
			flush()
		}
	}
}

type stream struct {
	Stream map[string]string `json:"stream"`
	Values [][2]string       `json:"values"`
}

// push sends one batch, one stream per level, retrying what is worth retrying.
func (p *pusher) push(batch []entry) {
	byLevel := map[string]*stream{}
	var streams []*stream
	for _, e := range batch {
		s, ok := byLevel[e.level]
		if !ok {
			labels := map[string]string{"level": e.level}
			for k, v := range p.labels {
				labels[k] = v
			}
			s = &stream{Stream: labels}
			byLevel[e.level] = s
			streams = append(streams, s)
		}
		s.Values = append(s.Values, [2]string{strconv.FormatInt(e.t.UnixNano(), 10), e.line})
	}
	body, err := json.Marshal(map[string]any{"streams": streams})
	if err != nil { // cannot happen with strings only; count rather than lose silently
		p.dropped.WithLabelValues("send_failed").Add(float64(len(batch)))
		return
	}
	backoff := minBackoff
	for attempt := 0; ; attempt++ {
		retry, err := p.send(body)
		if err == nil {
			return
		}
		if p.base.Err() != nil {
			p.dropped.WithLabelValues("shutdown").Add(float64(len(batch)))
			p.lostAt.Add(int64(len(batch)))
			return
		}
		if !retry || attempt == maxRetries {
			p.dropped.WithLabelValues("send_failed").Add(float64(len(batch)))
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-p.base.Done():
			t.Stop()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// send makes one push request; retry says whether a failure may succeed later.
func (p *pusher) send(body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(p.base, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	return resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500,
		fmt.Errorf("push to %s: %s: %s", p.url, resp.Status, bytes.TrimSpace(msg))
}
