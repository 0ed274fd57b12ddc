package logs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
)

// Push limits: a batch is pushed once it holds 1 MiB of lines, or once its first line is BatchWait old
// and no push is in flight; a failed push (connection error, 429, 5xx) is retried 3 times with
// 250ms-2s backoff, each attempt bounded by 5s.
const (
	maxBatchBytes = 1 << 20
	maxRetries    = 3
	minBackoff    = 250 * time.Millisecond
	maxBackoff    = 2 * time.Second
	pushTimeout   = 5 * time.Second
)

// shipper takes queued lines into batches and pushes them to Loki's push API as snappy-compressed
// protobuf, the format Promtail and Loki's own clients send. Two goroutines: one fills the next batch
// while the other pushes the last one, so the queue keeps draining while Loki answers, and a batch
// grows for as long as a push takes (up to maxBatchBytes): the slower Loki is, the fewer and larger the
// pushes. (loki-client-go, used before, stopped taking lines for as long as it was pushing: at the
// hot-path bench's rate its queue filled during each push and 10 % of the lines were dropped.)
type shipper struct {
	push   string
	client *http.Client
	// streams holds each level's stream labels, rendered once: {level="info", namespace="shop", ...}.
	streams map[string]string
	wait    time.Duration
	// stop is closed when Close's deadline passes: queued lines are counted, not pushed, and a push in
	// flight is abandoned.
	stop   chan struct{}
	lostAt atomic.Int64 // lines dropped because of the shutdown deadline
	count  func(reason string, n int)
}

func newShipper(lokiURL string, labels map[string]string, wait time.Duration, count func(string, int)) (*shipper, error) {
	if err := validLokiURL(lokiURL); err != nil {
		return nil, err
	}
	streams := map[string]string{}
	for _, level := range levels {
		ls := map[string]string{"level": level}
		for k, v := range labels {
			if v != "" {
				ls[k] = v
			}
		}
		streams[level] = labelString(ls)
	}
	return &shipper{
		push: strings.TrimSuffix(lokiURL, "/") + "/loki/api/v1/push",
		// One connection, kept alive: pushes never overlap.
		client:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}},
		streams: streams,
		wait:    wait,
		stop:    make(chan struct{}),
		count:   count,
	}, nil
}

// labelString renders a Loki stream selector, names sorted, values quoted.
func labelString(ls map[string]string) string {
	names := make([]string, 0, len(ls))
	for k := range ls {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", k, ls[k])
	}
	b.WriteByte('}')
	return b.String()
}

// batch is the lines of one push, by level.
type batch struct {
	entries map[string][]push.Entry
	lines   int
	bytes   int
}

func (b *batch) add(e entry) {
	if b.entries == nil {
		b.entries = map[string][]push.Entry{}
	}
	b.entries[e.level] = append(b.entries[e.level], push.Entry{Timestamp: e.t, Line: e.line})
	b.lines++
	b.bytes += len(e.line)
}

// run batches every queued line until the queue is closed and drained, pushes the last batch and
// returns once the pusher is done. After stop, remaining lines are counted as dropped at shutdown.
func (s *shipper) run(queue <-chan entry) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	ready := make(chan *batch) // unbuffered: a batch is handed over only when the pusher is idle
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		for b := range ready {
			s.send(ctx, b)
		}
	}()

	var (
		next  = &batch{}
		aged  bool // next's first line is BatchWait old
		timer = time.NewTimer(s.wait)
	)
	timer.Stop()
	for queue != nil || next.lines > 0 {
		// Hand next over when it is full, old enough, or the last one; take more lines unless it is full.
		var handOver chan<- *batch
		if next.lines > 0 && (aged || next.bytes >= maxBatchBytes || queue == nil) {
			handOver = ready
		}
		in := queue
		if next.bytes >= maxBatchBytes {
			in = nil
		}
		select {
		case e, ok := <-in:
			if !ok {
				queue = nil
				continue
			}
			select {
			case <-s.stop:
				s.drop(1)
				continue
			default:
			}
			if next.lines == 0 {
				timer.Reset(s.wait)
			}
			next.add(e)
		case handOver <- next:
			next, aged = &batch{}, false
			timer.Stop()
		case <-timer.C:
			aged = true
		case <-s.stop:
			s.drop(next.lines)
			next = &batch{}
			for range queue {
				s.drop(1)
			}
			queue = nil
		}
	}
	close(ready)
	<-pushed
}

func (s *shipper) drop(n int) {
	if n == 0 {
		return
	}
	s.count("shutdown", n)
	s.lostAt.Add(int64(n))
}

// send pushes b, retrying connection errors, 429 and 5xx with backoff; lines it gives up on are counted
// as send_failed, or as shutdown when Close's deadline ended the attempts.
func (s *shipper) send(ctx context.Context, b *batch) {
	body, err := s.encode(b)
	if err != nil {
		s.count("send_failed", b.lines)
		return
	}
	backoff := minBackoff
	for attempt := 0; ; attempt++ {
		retry, err := s.post(ctx, body)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			s.drop(b.lines)
			return
		}
		if !retry || attempt == maxRetries {
			s.count("send_failed", b.lines)
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			s.drop(b.lines)
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (s *shipper) encode(b *batch) ([]byte, error) {
	req := push.PushRequest{Streams: make([]push.Stream, 0, len(b.entries))}
	for _, level := range levels {
		if es := b.entries[level]; len(es) > 0 {
			req.Streams = append(req.Streams, push.Stream{Labels: s.streams[level], Entries: es})
		}
	}
	raw, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode push request: %w", err)
	}
	return snappy.Encode(nil, raw), nil
}

// post makes one push attempt; retry says whether a failure is worth another.
func (s *shipper) post(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.push, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := s.client.Do(req)
	if err != nil {
		return true, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	err = fmt.Errorf("push to Loki: %s: %s", resp.Status, bytes.TrimSpace(msg))
	return resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode/100 == 5, err
}

// stopBy stops handing lines to Loki once ctx ends.
func (s *shipper) stopBy(ctx context.Context, done <-chan struct{}) {
	go func() {
		select {
		case <-ctx.Done():
			close(s.stop)
		case <-done:
		}
	}()
}

// lost is how many lines the shutdown deadline cost.
func (s *shipper) lost() int64 { return s.lostAt.Load() }

func validLokiURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("logs: Loki URL %q is not an http(s) URL", s)
	}
	return nil
}
