package telemetry

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTPMetrics records http_server_request_duration_seconds{http_route, http_request_method,
// http_response_status_code}, the OpenTelemetry HTTP server semantic convention in Prometheus form.
type HTTPMetrics struct {
	duration *prometheus.HistogramVec
}

// NewHTTPMetrics registers the HTTP server metrics in reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_server_request_duration_seconds",
		Help:    "Duration of HTTP server requests.",
		Buckets: DurationBuckets,
	}, []string{"http_route", "http_request_method", "http_response_status_code"})}
	reg.MustRegister(m.duration)
	return m
}

// Middleware observes every request that next serves. It must wrap the ServeMux directly (or through
// middleware that passes the same *http.Request on), because the mux records the matched pattern in
// that request; the route label is the pattern without its method, or "" when nothing matched, so
// unknown paths cannot explode the label's cardinality.
func (m *HTTPMetrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		obs := m.duration.WithLabelValues(Route(r.Pattern), method(r.Method), strconv.Itoa(sw.Status()))
		elapsed := time.Since(start).Seconds()
		if ex := Exemplar(r.Context()); ex != nil {
			obs.(prometheus.ExemplarObserver).ObserveWithExemplar(elapsed, ex)
			return
		}
		obs.Observe(elapsed)
	})
}

// Route turns a ServeMux pattern ("GET /v1/orders/{id}") into an http.route ("/v1/orders/{id}").
func Route(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return strings.TrimSpace(pattern[i+1:])
	}
	return pattern
}

// method keeps the label bounded: unknown methods become _OTHER, as the convention says.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// statusWriter remembers the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status is the code written, 200 if the handler wrote nothing.
func (w *statusWriter) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
