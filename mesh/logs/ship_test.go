package logs

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
)

// BenchmarkShipToLoki is how fast one shipper delivers access-log lines to a real Loki on this machine.
// The benchmark (never a request) waits whenever the queue is full, so no line is dropped and ns/op is
// the cost of delivering one line, Loki's share of the machine included; Close's flush is measured too.
// 1e9 / ns/op is the most lines per second one process can ship here. Compare with benchstat:
//
//	go test ./mesh/logs -run '^$' -bench ShipToLoki -count 6 | tee new.txt; benchstat old.txt new.txt
func BenchmarkShipToLoki(b *testing.B) {
	loki := devservertest.Loki(b)
	reg := prometheus.NewRegistry()
	sink, err := New(Options{Service: "bench", Namespace: "bench", Stdout: discardWriter{}, LokiURL: loki.URL(),
		QueueSize: 1024, BatchWait: 100 * time.Millisecond, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	logger := sink.Logger().With(slog.String("service", "bench"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for len(sink.out.queue) == cap(sink.out.queue) {
			time.Sleep(50 * time.Microsecond)
		}
		logger.LogAttrs(ctx, slog.LevelInfo, "http request",
			slog.String("method", "GET"), slog.String("route", "/v1/products/{id}"), slog.String("path", "/v1/products/moka-pot"),
			slog.Int("status", 200), slog.Float64("duration_ms", 0.734))
	}
	flush, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sink.Close(flush); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	f, _ := metricstest.Gather(reg)
	for _, reason := range []string{"queue_full", "send_failed", "shutdown"} {
		if n := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": reason}); n > 0 {
			b.Fatalf("meshplane_log_lines_dropped_total{reason=%q}: got %v, want 0", reason, n)
		}
	}
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
