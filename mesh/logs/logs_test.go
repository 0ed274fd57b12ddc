package logs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/logs"
	"meshplane.dev/mesh/telemetry"
)

// syncBuffer is a bytes.Buffer safe for the logger's and the test's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLinesReachLokiWithLowCardinalityLabels(t *testing.T) {
	loki := devservertest.Loki(t)
	reg := prometheus.NewRegistry()
	var stdout syncBuffer
	sink, err := logs.New(logs.Options{
		Service: "payments", Namespace: "shop", Stdout: &stdout, LokiURL: loki.URL(),
		BatchWait: 100 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close(context.Background()) })

	trace := telemetry.NewTrace("")
	ctx := telemetry.WithTrace(context.Background(), trace)
	sink.Logger().With(slog.String("component", "test")).WarnContext(ctx, "charge declined", slog.Int("amount_cents", 1250))

	if !strings.Contains(stdout.String(), `"trace_id":"`+trace.TraceID+`"`) {
		t.Errorf("stdout: got %s, want the line with trace_id", stdout.String())
	}
	var stream map[string]string
	var line string
	wait.For(t, 30*time.Second, func() error {
		var err error
		stream, line, err = queryLoki(loki.URL(), `{service="payments"} |= "`+trace.TraceID+`"`)
		return err
	})
	want := map[string]string{"service": "payments", "namespace": "shop", "level": "warn"}
	for k, v := range want {
		if stream[k] != v {
			t.Errorf("stream label %s: got %q want %q (all: %v)", k, stream[k], v, stream)
		}
	}
	for k := range stream {
		// Loki derives service_name and detected_level itself; anything else would be ours.
		if _, ours := want[k]; !ours && k != "service_name" && k != "detected_level" {
			t.Errorf("stream label %s=%q: want only service, namespace, level", k, stream[k])
		}
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(line), &fields); err != nil {
		t.Fatalf("line in Loki is not JSON: %q", line)
	}
	if fields["msg"] != "charge declined" || fields["component"] != "test" || fields["amount_cents"] != float64(1250) {
		t.Errorf("line in Loki: got %v", fields)
	}
	f, _ := metricstest.Gather(reg)
	if got := f.Value("meshplane_log_lines_total", map[string]string{"level": "warn"}); got != 1 {
		t.Errorf("meshplane_log_lines_total{level=warn}: got %v want 1", got)
	}
}

func queryLoki(base, query string) (map[string]string, string, error) {
	q := url.Values{
		"query": {query},
		"start": {strconv.FormatInt(time.Now().Add(-time.Hour).UnixNano(), 10)},
		"end":   {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)},
		"limit": {"10"},
	}
	resp, err := http.Get(base + "/loki/api/v1/query_range?" + q.Encode())
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Stream map[string]string `json:"stream"`
				Values [][2]string       `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, "", err
	}
	for _, r := range body.Data.Result {
		if len(r.Values) > 0 {
			return r.Stream, r.Values[0][1], nil
		}
	}
	return nil, "", fmt.Errorf("no line for %s yet", query)
}

// slowLoki is a real Loki behind a proxy that holds every push for delay before passing it on, as a
// Loki busy on the same cores does.
func slowLoki(t *testing.T, delay time.Duration) (proxyURL, lokiURL string) {
	t.Helper()
	loki := devservertest.Loki(t)
	target, err := url.Parse(loki.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, loki.URL()
}

func TestLinesKeepFlowingWhileAPushIsSlow(t *testing.T) {
	proxy, loki := slowLoki(t, 400*time.Millisecond)
	reg := prometheus.NewRegistry()
	sink, err := logs.New(logs.Options{
		Service: "gateway", Namespace: "shop", Stdout: io.Discard, LokiURL: proxy,
		QueueSize: 256, BatchWait: 50 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 1,000 lines a second for 1.5 s: each push takes 400 ms, long enough for 400 lines to arrive, more
	// than the queue holds. The lines must keep flowing into the next batch while a push waits.
	const n = 1500
	run := strconv.FormatInt(time.Now().UnixNano(), 10)
	tick := time.NewTicker(time.Millisecond)
	for i := range n {
		<-tick.C
		sink.Logger().Info("http request", slog.String("run", run), slog.Int("i", i))
	}
	tick.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sink.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f, _ := metricstest.Gather(reg)
	if got := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "queue_full"}); got != 0 {
		t.Errorf("meshplane_log_lines_dropped_total{reason=queue_full}: got %v, want 0", got)
	}
	wait.For(t, 30*time.Second, func() error {
		got, err := countLoki(loki, `count_over_time({service="gateway"} |= "`+run+`" [1h])`)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("lines in Loki: got %d want %d", got, n)
		}
		return nil
	})
}

// countLoki evaluates a count query over the last hour and returns its sum.
func countLoki(base, query string) (int, error) {
	q := url.Values{"query": {query}, "time": {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)}}
	resp, err := http.Get(base + "/loki/api/v1/query?" + q.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("decode query (%s): %w", resp.Status, err)
	}
	total := 0
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("count %q: %w", s, err)
		}
		total += v
	}
	return total, nil
}

// hangingLoki accepts connections and never answers: the worst case for a Loki client, which then waits
// for its request timeout.
func hangingLoki(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { close(release); _ = srv.Close() })
	return "http://" + l.Addr().String()
}

func TestLoggingNeverWaitsForAHangingLoki(t *testing.T) {
	reg := prometheus.NewRegistry()
	var stdout syncBuffer
	sink, err := logs.New(logs.Options{
		Service: "orders", Stdout: &stdout, LokiURL: hangingLoki(t),
		QueueSize: 4, BatchWait: 10 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	// Lines of 4 kB: while its push hangs, the shipper fills its next batch up to 1 MiB (256 of them) and
	// then takes no more, so the queue fills however fast this loop runs (the race detector slows it).
	pad := strings.Repeat("x", 4000)
	done := make(chan struct{})
	go func() {
		for i := range n {
			// Errors: lines below warn would be sampled out under pressure (TestInfoLinesSampledUnderPressure).
			sink.Logger().Error("line", slog.Int("i", i), slog.String("pad", pad))
		}
		close(done)
	}()
	// A push waits 5s for its timeout and is retried: a logger that waited on it could not log 2000
	// lines before this deadline.
	wait.For(t, 4*time.Second, func() error {
		select {
		case <-done:
			return nil
		default:
			return fmt.Errorf("logging blocked")
		}
	})
	if got := strings.Count(stdout.String(), "\n"); got != n {
		t.Errorf("stdout lines: got %d want %d", got, n)
	}
	f, _ := metricstest.Gather(reg)
	dropped := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "queue_full"})
	// Lines taken before the first push blocked sit in the client's batch; the rest are dropped.
	if dropped < n/2 {
		t.Errorf("meshplane_log_lines_dropped_total{reason=queue_full}: got %v, want most of %d", dropped, n)
	}
	if got := f.Value("meshplane_log_queue_length", nil); got > 4 {
		t.Errorf("meshplane_log_queue_length: got %v, want at most the queue size 4", got)
	}

	// Close gives up at its deadline; what was still queued is counted as dropped at shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sink.Close(ctx); err == nil {
		t.Errorf("Close with Loki hanging: got nil, want the flush deadline error")
	}
	sink.Logger().Info("after close")
	f, _ = metricstest.Gather(reg)
	if got := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "shutdown"}); got < 1 {
		t.Errorf("meshplane_log_lines_dropped_total{reason=shutdown}: got %v, want at least the line logged after Close", got)
	}
	if !strings.Contains(stdout.String(), "after close") {
		t.Errorf("stdout after Close: line missing")
	}
}

// While Loki lags, lines below warn are shipped one in ten and counted as sampled out, warnings and
// errors never are; stdout keeps every line.
func TestInfoLinesSampledUnderPressure(t *testing.T) {
	reg := prometheus.NewRegistry()
	var stdout syncBuffer
	sink, err := logs.New(logs.Options{
		Service: "gateway", Stdout: &stdout, LokiURL: hangingLoki(t),
		QueueSize: 40, BatchWait: 10 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = sink.Close(ctx)
	})
	// Lines of 4 kB: while its push hangs, the shipper fills its next batch up to 1 MiB (256 of them) and
	// then takes no more, so the queue fills however fast this loop runs (the race detector slows it).
	const n = 2000
	pad := strings.Repeat("x", 4000)
	for i := range n {
		sink.Logger().Info("request", slog.Int("i", i), slog.String("pad", pad))
	}
	f, _ := metricstest.Gather(reg)
	sampled := f.Value("meshplane_log_lines_sampled_out_total", nil)
	dropped := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "queue_full"})
	// Loki hangs, so all but the lines in the two batches and the queue's first 30 places meet a queue over
	// its high-water mark (30 of 40): nine in ten of those are sampled out, the tenth fills places up to 35,
	// and then every one is sampled out: the last five places are the warnings'.
	if sampled < n/2 {
		t.Errorf("meshplane_log_lines_sampled_out_total: got %v, want most of %d", sampled, n)
	}
	if dropped != 0 {
		t.Errorf("meshplane_log_lines_dropped_total{reason=queue_full}: got %v, want 0: info lines are sampled out before the queue fills", dropped)
	}
	for i := range 5 {
		sink.Logger().Warn("slow dependency", slog.Int("i", i))
	}
	f, _ = metricstest.Gather(reg)
	if got := f.Value("meshplane_log_lines_sampled_out_total", nil); got != sampled {
		t.Errorf("meshplane_log_lines_sampled_out_total after 5 warnings: got %v, want %v (warnings are never sampled out)", got, sampled)
	}
	if got := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "queue_full"}); got != 0 {
		t.Errorf("meshplane_log_lines_dropped_total{reason=queue_full} after 5 warnings: got %v, want 0: they had the queue's last places", got)
	}
	if got := strings.Count(stdout.String(), "\n"); got != n+5 {
		t.Errorf("stdout lines: got %d, want all %d", got, n+5)
	}
}

func TestStdoutOnlyWithoutLoki(t *testing.T) {
	var stdout syncBuffer
	sink, err := logs.New(logs.Options{Service: "catalog", Stdout: &stdout, Level: slog.LevelWarn, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	sink.Logger().Info("hidden")
	sink.Logger().WithGroup("req").Error("shown", slog.String("id", "r1"))
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(stdout.String())
	if strings.Contains(got, "hidden") || !strings.Contains(got, `"req":{"id":"r1"}`) {
		t.Errorf("stdout: got %s, want only the error line with its group", got)
	}
}

// BenchmarkLogWithLokiHanging measures a log call while Loki accepts connections and never answers:
// the cost must stay that of formatting a line, not of waiting for Loki.
func BenchmarkLogWithLokiHanging(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
		}
	}()
	sink, err := logs.New(logs.Options{Service: "bench", Stdout: discard{}, LokiURL: "http://" + l.Addr().String(),
		QueueSize: 64, BatchWait: 10 * time.Millisecond, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	logger := sink.Logger()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		logger.Info("request", slog.Int("i", i), slog.String("route", "/v1/orders"))
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
