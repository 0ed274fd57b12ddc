package httpmw_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/fault"
	"meshplane.dev/mesh/httpmw"
	"meshplane.dev/mesh/logs"
	"meshplane.dev/mesh/telemetry"
)

// BenchmarkStack serves one JSON answer in-process, bare and behind the edge stack a Meshplane service
// runs (trace, access log shipped to a real Loki, metrics, recovery, body limit, fault hook): the
// middleware's own cost per request, without a network. Compare with benchstat:
//
//	go test ./mesh/httpmw -run '^$' -bench Stack -count 6 | tee new.txt; benchstat old.txt new.txt
func BenchmarkStack(b *testing.B) {
	const route = "GET /v1/products/{id}"
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpmw.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	})
	bare := http.NewServeMux()
	bare.Handle(route, answer)

	loki := devservertest.Loki(b)
	reg := prometheus.NewRegistry()
	sink, err := logs.New(logs.Options{Service: "bench", Namespace: "bench", Stdout: io.Discard, LokiURL: loki.URL(),
		QueueSize: 1024, BatchWait: time.Second, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sink.Close(b.Context()) })
	logger := sink.Logger().With(slog.String("service", "bench"))
	mux := http.NewServeMux()
	mux.Handle(route, fault.New(nil).HTTP(route, answer))
	mesh := httpmw.Chain(mux, httpmw.Trace, httpmw.AccessLog(logger), telemetry.NewHTTPMetrics(reg).Middleware,
		httpmw.Recover(logger), httpmw.LimitBody(httpmw.MaxBodyBytes))

	for _, s := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"mesh", mesh}} {
		b.Run("stack="+s.name, func(b *testing.B) {
			b.ReportAllocs()
			req := httptest.NewRequest(http.MethodGet, "/v1/products/moka-pot", nil)
			for b.Loop() {
				w := httptest.NewRecorder()
				s.h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
