package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/telemetry"
)

func TestHTTPMetricsCountsByRouteMethodAndStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := telemetry.NewHTTPMetrics(reg)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("{}"))
	})
	mux.HandleFunc("POST /v1/orders", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	// Trace outermost, as the services chain it, so exemplars carry the trace id.
	h := traceMiddleware(m.Middleware(mux))

	send := func(method, path string) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, path, strings.NewReader("")))
	}
	send("GET", "/v1/orders/1")
	send("GET", "/v1/orders/2")
	send("GET", "/v1/orders/missing")
	send("POST", "/v1/orders")
	send("GET", "/no/such/route")
	send("BREW", "/v1/orders")

	fams, err := metricstest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	got := fams.Series("http_server_request_duration_seconds")
	want := map[string]float64{
		`{http_request_method="GET",http_response_status_code="200",http_route="/v1/orders/{id}"}`: 2,
		`{http_request_method="GET",http_response_status_code="404",http_route="/v1/orders/{id}"}`: 1,
		`{http_request_method="POST",http_response_status_code="201",http_route="/v1/orders"}`:     1,
		// Unmatched paths share one empty route, so scanners cannot explode the cardinality.
		`{http_request_method="GET",http_response_status_code="404",http_route=""}`:    1,
		`{http_request_method="_OTHER",http_response_status_code="405",http_route=""}`: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request counts by series (-want +got):\n%s", diff)
	}
	ex := fams.Exemplars("http_server_request_duration_seconds", map[string]string{"http_route": "/v1/orders"})
	if len(ex) != 1 || len(ex[0]["trace_id"]) != 32 {
		t.Errorf("exemplars of POST /v1/orders: got %v, want one with a 32-hex trace_id", ex)
	}
}

// TestSlowRequestKeepsItsExemplar: exemplars are given at most once a second per bucket, so a burst of
// fast requests must not take the exemplar from a slow one that follows it in another bucket: the slow
// request's trace id is the one a latency panel's p99 links to.
func TestSlowRequestKeepsItsExemplar(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := telemetry.NewHTTPMetrics(reg)
	var slowTrace string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/orders/{id}", func(_ http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "slow" {
			slowTrace = telemetry.TraceID(r.Context())
			time.Sleep(30 * time.Millisecond) // lands in the 0.05 s bucket, the fast ones in 0.005
		}
	})
	h := traceMiddleware(m.Middleware(mux))
	for range 200 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/orders/1", nil))
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/orders/slow", nil))

	fams, err := metricstest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ex := range fams.Exemplars("http_server_request_duration_seconds", map[string]string{"http_route": "/v1/orders/{id}"}) {
		ids = append(ids, ex["trace_id"])
	}
	if !slices.Contains(ids, slowTrace) {
		t.Errorf("exemplar trace ids %v: want the slow request's %s among them", ids, slowTrace)
	}
}

func traceMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(telemetry.WithTrace(r.Context(), telemetry.NewTrace(""))))
	})
}

func TestNewTraceContinuesAValidParent(t *testing.T) {
	tests := []struct {
		name, parent string
		keep         bool
	}{
		{"valid", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"upper case is normalised", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", true},
		{"empty", "", false},
		{"all-zero trace id is invalid", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"short", "00-4bf92f35-00f067aa0ba902b7-01", false},
		{"not hex", "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := telemetry.NewTrace(tt.parent)
			kept := tr.TraceID == "4bf92f3577b34da6a3ce929d0e0e4736"
			if kept != tt.keep {
				t.Errorf("NewTrace(%q).TraceID = %s, continued parent: got %v want %v", tt.parent, tr.TraceID, kept, tt.keep)
			}
			if len(tr.TraceID) != 32 || len(tr.SpanID) != 16 {
				t.Errorf("got trace %q span %q, want 32 and 16 hex digits", tr.TraceID, tr.SpanID)
			}
			if again := telemetry.NewTrace(tr.Traceparent()); again.TraceID != tr.TraceID || again.SpanID == tr.SpanID {
				t.Errorf("round trip of %s: got %+v, want same trace id, new span id", tr.Traceparent(), again)
			}
		})
	}
}

func TestRegistryHasBuildInfo(t *testing.T) {
	fams, err := metricstest.Gather(telemetry.NewRegistry("v1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fams.Value("meshplane_build_info", map[string]string{"version": "v1.2.3"}); got != 1 {
		t.Errorf("meshplane_build_info{version=v1.2.3}: got %v want 1", got)
	}
	if got := fams.Value("go_goroutines", nil); got < 1 {
		t.Errorf("go_goroutines: got %v, want the Go collector registered", got)
	}
}
