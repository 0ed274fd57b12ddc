package load_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/metricstest"

	"meshplane.dev/services/loadgen/internal/load"
)

// shop is a minimal gateway: two products, and POST /v1/orders failing the first attempt of each
// Idempotency-Key with 503, so the generator's retry is visible.
type shop struct {
	mu    sync.Mutex
	posts map[string]int
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/products":
		_, _ = w.Write([]byte(`{"products":[{"id":"cup"},{"id":"pot"}]}`))
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/products/"), r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/orders/"):
		_, _ = w.Write([]byte(`{}`))
	case r.Method == "POST" && r.URL.Path == "/v1/orders":
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.Header.Get("Idempotency-Key") == "" {
			w.WriteHeader(400)
			return
		}
		s.mu.Lock()
		s.posts[r.Header.Get("Idempotency-Key")]++
		n := s.posts[r.Header.Get("Idempotency-Key")]
		s.mu.Unlock()
		if n == 1 {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"id":"ord_1"}`))
	default:
		w.WriteHeader(404)
	}
}

func TestRunIsBoundedWeightedAndRetriesOrdersWithTheSameKey(t *testing.T) {
	s := &shop{posts: map[string]int{}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	var weights load.Weights
	if err := weights.UnmarshalText([]byte("browse=3,product=0,order=1")); err != nil {
		t.Fatal(err)
	}
	g, err := load.New(load.Options{
		BaseURL: srv.URL, Rate: 2000, Requests: 200, Concurrency: 4, Scenarios: weights, OrderRetries: 1, Seed: 7,
		Client: srv.Client(), Logger: slog.New(slog.DiscardHandler), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sum := g.Run(ctx)

	if sum.Total() != 200 {
		t.Errorf("runs: got %d want 200", sum.Total())
	}
	runs := map[string]int{}
	for _, sc := range sum.Scenarios {
		runs[sc.Name] = sc.Count
		if sc.OK() != sc.Count {
			t.Errorf("%s: %d of %d ok (codes %v), want all after the retry", sc.Name, sc.OK(), sc.Count, sc.Codes)
		}
	}
	if runs[load.Product] != 0 || runs[load.Browse] <= runs[load.Order] || runs[load.Order] == 0 {
		t.Errorf("runs by scenario: got %v, want browse well above order and no product", runs)
	}
	for key, n := range s.posts {
		if n != 2 {
			t.Errorf("POSTs with key %s: got %d, want the first plus one retry with the same key", key, n)
		}
	}
	if len(s.posts) != runs[load.Order] {
		t.Errorf("distinct keys: got %d, want one per order run (%d)", len(s.posts), runs[load.Order])
	}
	f, _ := metricstest.Gather(reg)
	if got := f.Value("meshplane_loadgen_requests_total", map[string]string{"scenario": "order", "code": "200"}); int(got) != runs[load.Order] {
		t.Errorf("meshplane_loadgen_requests_total{scenario=order,code=200}: got %v want %d", got, runs[load.Order])
	}
	var table bytes.Buffer
	if err := sum.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "200 runs") || !strings.Contains(table.String(), "browse") {
		t.Errorf("summary table: got\n%s", table.String())
	}
}

func TestWeightsRejectBadInput(t *testing.T) {
	for _, in := range []string{"", "browse", "browse=x", "checkout=1", "browse=1,browse=2", "browse=0"} {
		var w load.Weights
		if err := w.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("Weights %q: got nil error", in)
		}
	}
}
