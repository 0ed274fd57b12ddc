package logs

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grafana/loki-client-go/loki"
	lokibackoff "github.com/grafana/loki-client-go/pkg/backoff"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
)

// Client limits: a batch is sent when it reaches 1 MiB or its first line is BatchWait old; a failed push
// (connection error, 429, 5xx) is retried 3 times with 250ms-2s backoff, each attempt bounded by 5s,
// instead of the client's default of 10 retries over 8.5 minutes.
const (
	maxBatchBytes = 1 << 20
	maxRetries    = 3
	minBackoff    = 250 * time.Millisecond
	maxBackoff    = 2 * time.Second
	pushTimeout   = 5 * time.Second
)

// shipper hands queued lines to loki-client-go. It is the only goroutine that ever calls the client's
// Handle, which blocks while the client's single loop is sending or retrying a batch.
type shipper struct {
	client *loki.Client
	host   string
	labels model.LabelSet
	// stop is closed when Close's deadline passes: lines still queued are counted, not handed over.
	stop   chan struct{}
	lostAt atomic.Int64 // lines dropped because of the shutdown deadline
	count  func(reason string, n int)
}

func newShipper(lokiURL string, labels map[string]string, wait time.Duration, count func(string, int)) (*shipper, error) {
	push := strings.TrimSuffix(lokiURL, "/") + "/loki/api/v1/push"
	cfg, err := loki.NewDefaultConfig(push)
	if err != nil {
		return nil, fmt.Errorf("logs: Loki URL %q: %w", lokiURL, err)
	}
	cfg.BatchWait = wait
	cfg.BatchSize = maxBatchBytes
	cfg.Timeout = pushTimeout
	cfg.BackoffConfig = lokibackoff.BackoffConfig{MinBackoff: minBackoff, MaxBackoff: maxBackoff, MaxRetries: maxRetries}
	// The client logs its own failures in logfmt on stdout, which would break the JSON stream; its
	// failures are counted in meshplane_log_lines_dropped_total{reason="send_failed"} instead.
	client, err := loki.NewWithLogger(cfg, nopLogger{})
	if err != nil {
		return nil, fmt.Errorf("logs: Loki client: %w", err)
	}
	ls := model.LabelSet{}
	for k, v := range labels {
		if v != "" {
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
	}
	return &shipper{client: client, host: cfg.URL.Host, labels: ls, stop: make(chan struct{}), count: count}, nil
}

// run hands every queued line to the client until the queue is closed and drained, then flushes the
// client. After stop, remaining lines are counted as dropped at shutdown.
func (s *shipper) run(queue <-chan entry) {
	for e := range queue {
		select {
		case <-s.stop:
			s.count("shutdown", 1)
			s.lostAt.Add(1)
			continue
		default:
		}
		ls := s.labels.Clone()
		ls["level"] = model.LabelValue(e.level)
		// Handle never returns an error; it may block, which only this goroutine feels.
		_ = s.client.Handle(ls, e.t, e.line)
	}
	s.client.Stop()
}

// stopBy stops handing lines to the client once ctx ends.
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

// sendFailed reads the client's own count of entries it gave up on after its retries. The client keeps
// it in the global registry (per Loki host), so it is read here rather than exported twice.
func (s *shipper) sendFailed() float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != "promtail_dropped_entries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hostOf(m) == s.host {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hostOf(m *dto.Metric) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == loki.HostLabel {
			return l.GetValue()
		}
	}
	return ""
}

func validLokiURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("logs: Loki URL %q is not an http(s) URL", s)
	}
	return nil
}

// nopLogger discards the client's go-kit log lines.
type nopLogger struct{}

func (nopLogger) Log(...any) error { return nil }
