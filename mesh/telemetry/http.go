package telemetry

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTPMetrics records http_server_request_duration_seconds{http_route, http_request_method,
// http_response_status_code}, the OpenTelemetry HTTP server semantic convention in Prometheus form.
type HTTPMetrics struct {
	duration *prometheus.HistogramVec
	buckets  []float64
	// lastExemplar holds, per series (its Observer) and bucket, when the bucket last got an exemplar
	// (unix nanoseconds): a []atomic.Int64 per series, one per bucket and +Inf.
	lastExemplar sync.Map
}

// ExemplarInterval is how often at most a bucket of a series gets a new exemplar. A bucket exposes only
// its latest exemplar, and Prometheus scrapes far less often than once a second, so building one for
// every request (a labels map, the exemplar, its timestamp: a quarter of the metrics' allocations) was
// work no scrape could see. The first request in a bucket always gets one, so a rare slow request keeps
// its trace id.
const ExemplarInterval = time.Second

// NewHTTPMetrics registers the HTTP server metrics in reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	m := &HTTPMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_server_request_duration_seconds",
		Help:    "Duration of HTTP server requests.",
		Buckets: DurationBuckets,
	}, []string{"http_route", "http_request_method", "http_response_status_code"}),
		buckets: append([]float64(nil), DurationBuckets...)}
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
		obs := m.duration.WithLabelValues(Route(r.Pattern), method(r.Method), statusCode(sw.Status()))
		now := time.Now()
		elapsed := now.Sub(start).Seconds()
		if id := TraceID(r.Context()); id != "" && m.exemplarDue(obs, elapsed, now) {
			obs.(prometheus.ExemplarObserver).ObserveWithExemplar(elapsed, prometheus.Labels{"trace_id": id})
			return
		}
		obs.Observe(elapsed)
	})
}

// exemplarDue says whether the bucket of series obs that v falls in is due a new exemplar, and if so
// marks it as given one at now.
func (m *HTTPMetrics) exemplarDue(obs prometheus.Observer, v float64, now time.Time) bool {
	slots, ok := m.lastExemplar.Load(obs)
	if !ok {
		slots, _ = m.lastExemplar.LoadOrStore(obs, make([]atomic.Int64, len(m.buckets)+1))
	}
	// The bucket a value is counted in is the first whose upper bound is >= v; past the last, +Inf.
	last := &slots.([]atomic.Int64)[sort.SearchFloat64s(m.buckets, v)]
	prev, t := last.Load(), now.UnixNano()
	if prev != 0 && t-prev < int64(ExemplarInterval) {
		return false
	}
	return last.CompareAndSwap(prev, t)
}

// statusCodes holds the label values of the status codes net/http knows, so that labelling a request
// does not format its code.
var statusCodes = func() map[int]string {
	codes := map[int]string{}
	for c := 100; c < 600; c++ {
		if http.StatusText(c) != "" {
			codes[c] = strconv.Itoa(c)
		}
	}
	return codes
}()

func statusCode(c int) string {
	if s, ok := statusCodes[c]; ok {
		return s
	}
	return strconv.Itoa(c)
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
