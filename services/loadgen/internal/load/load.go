// Package load generates the shop's traffic: weighted scenarios started at a fixed rate, at most N in
// flight, bounded by a duration or a request count, with a summary of what happened.
package load

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Scenario names.
const (
	Browse  = "browse"
	Product = "product"
	Order   = "order"
)

// Weight is one scenario's share of the traffic.
type Weight struct {
	Name   string
	Weight int
}

// Weights is a list of scenario weights, written "browse=10,product=5,order=1".
type Weights []Weight

// UnmarshalText implements encoding.TextUnmarshaler.
func (w *Weights) UnmarshalText(b []byte) error {
	var out Weights
	seen := map[string]bool{}
	for _, part := range strings.Split(string(b), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, n, ok := strings.Cut(part, "=")
		if !ok {
			return fmt.Errorf("scenario %q: want name=weight", part)
		}
		if name != Browse && name != Product && name != Order {
			return fmt.Errorf("scenario %q: unknown (want browse, product or order)", name)
		}
		weight, err := strconv.Atoi(n)
		if err != nil || weight < 0 {
			return fmt.Errorf("scenario %s weight %q: want a non-negative integer", name, n)
		}
		if seen[name] {
			return fmt.Errorf("scenario %s given twice", name)
		}
		seen[name] = true
		if weight > 0 {
			out = append(out, Weight{Name: name, Weight: weight})
		}
	}
	if len(out) == 0 {
		return errors.New("no scenario with a positive weight")
	}
	*w = out
	return nil
}

// String renders the weights as UnmarshalText accepts them.
func (w *Weights) String() string {
	parts := make([]string, 0, len(*w))
	for _, x := range *w {
		parts = append(parts, fmt.Sprintf("%s=%d", x.Name, x.Weight))
	}
	return strings.Join(parts, ",")
}

// Options configures a Generator.
type Options struct {
	BaseURL      string
	Rate         float64
	Duration     time.Duration
	Requests     int
	Concurrency  int
	Scenarios    Weights
	OrderRetries int
	Seed         int64
	Client       *http.Client
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Generator runs scenarios against the gateway.
type Generator struct {
	o        Options
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	picks *mrand.Rand // used by Run's loop only, so a seed fixes the scenario sequence

	mu       sync.Mutex
	rng      *mrand.Rand
	products []string
	stats    map[string]*stats
	skipped  int
}

// New returns a Generator and registers meshplane_loadgen_requests_total{scenario,code} and
// meshplane_loadgen_request_duration_seconds{scenario}.
func New(o Options) (*Generator, error) {
	seed := uint64(o.Seed)
	if seed == 0 {
		seed = mrand.Uint64()
	}
	g := &Generator{
		o:     o,
		rng:   mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		picks: mrand.New(mrand.NewPCG(seed^0x5851f42d4c957f2d, seed)),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshplane_loadgen_requests_total",
			Help: "Scenario runs by scenario and outcome (HTTP status of the last request, or error).",
		}, []string{"scenario", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meshplane_loadgen_request_duration_seconds",
			Help: "Duration of scenario runs as the client saw it, retries included.",
		}, []string{"scenario"}),
		stats: map[string]*stats{},
	}
	for _, c := range []prometheus.Collector{g.requests, g.duration} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("register load metrics: %w", err)
		}
	}
	return g, nil
}

// Run starts scenarios at the configured rate until ctx ends, the duration passes or the request
// bound is reached, waits for the ones in flight and returns the summary.
func (g *Generator) Run(ctx context.Context) Summary {
	start := time.Now()
	if g.o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.o.Duration)
		defer cancel()
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / g.o.Rate))
	defer tick.Stop()
	slots := make(chan struct{}, g.o.Concurrency)
	var wg sync.WaitGroup
	started := 0
	for g.o.Requests == 0 || started < g.o.Requests {
		select {
		case <-ctx.Done():
		case <-tick.C:
			select {
			case slots <- struct{}{}:
				started++
				name := g.pick()
				wg.Go(func() {
					defer func() { <-slots }()
					g.runScenario(name)
				})
			default:
				g.mu.Lock()
				g.skipped++
				g.mu.Unlock()
			}
			continue
		}
		break
	}
	wg.Wait()
	return g.summary(time.Since(start))
}

func (g *Generator) pick() string {
	total := 0
	for _, w := range g.o.Scenarios {
		total += w.Weight
	}
	n := g.picks.IntN(total)
	for _, w := range g.o.Scenarios {
		if n < w.Weight {
			return w.Name
		}
		n -= w.Weight
	}
	return g.o.Scenarios[0].Name
}

// runScenario runs one scenario to completion; in-flight scenarios finish even after Run's context
// ends, each bounded by the client's timeout.
func (g *Generator) runScenario(name string) {
	ctx := context.Background()
	start := time.Now()
	var code string
	switch name {
	case Browse:
		code = g.browse(ctx)
	case Product:
		code = g.product(ctx)
	default:
		code = g.order(ctx)
	}
	elapsed := time.Since(start)
	g.requests.WithLabelValues(name, code).Inc()
	g.duration.WithLabelValues(name).Observe(elapsed.Seconds())
	g.mu.Lock()
	s, ok := g.stats[name]
	if !ok {
		s = &stats{codes: map[string]int{}}
		g.stats[name] = s
	}
	s.add(code, elapsed, g.rng)
	g.mu.Unlock()
}

func (g *Generator) browse(ctx context.Context) string {
	var list struct {
		Products []struct {
			ID string `json:"id"`
		} `json:"products"`
	}
	code := g.do(ctx, http.MethodGet, "/v1/products", nil, nil, &list)
	if code == "200" {
		ids := make([]string, 0, len(list.Products))
		for _, p := range list.Products {
			ids = append(ids, p.ID)
		}
		g.mu.Lock()
		g.products = ids
		g.mu.Unlock()
	}
	return code
}

// productIDs returns the known product ids, browsing once first if none are known yet.
func (g *Generator) productIDs(ctx context.Context) []string {
	g.mu.Lock()
	ids := g.products
	g.mu.Unlock()
	if len(ids) == 0 {
		g.browse(ctx)
		g.mu.Lock()
		ids = g.products
		g.mu.Unlock()
	}
	return ids
}

func (g *Generator) product(ctx context.Context) string {
	ids := g.productIDs(ctx)
	if len(ids) == 0 {
		return "no_products"
	}
	g.mu.Lock()
	id := ids[g.rng.IntN(len(ids))]
	g.mu.Unlock()
	return g.do(ctx, http.MethodGet, "/v1/products/"+id, nil, nil, nil)
}

// order places an order with a fresh Idempotency-Key, retries a 5xx or a connection error with the
// same key (so the retry cannot charge twice), then reads the order back.
func (g *Generator) order(ctx context.Context) string {
	ids := g.productIDs(ctx)
	if len(ids) == 0 {
		return "no_products"
	}
	type item struct {
		ProductID string `json:"productId"`
		Quantity  int    `json:"quantity"`
	}
	g.mu.Lock()
	items := make([]item, 1+g.rng.IntN(3))
	for i := range items {
		items[i] = item{ProductID: ids[g.rng.IntN(len(ids))], Quantity: 1 + g.rng.IntN(3)}
	}
	g.mu.Unlock()
	body, _ := json.Marshal(map[string]any{"items": items, "cardToken": "tok_visa"})
	key := "lg-" + randomHex(12)
	var placed struct {
		ID string `json:"id"`
	}
	var code string
	for attempt := 0; attempt <= g.o.OrderRetries; attempt++ {
		code = g.do(ctx, http.MethodPost, "/v1/orders", body, map[string]string{"Idempotency-Key": key}, &placed)
		if code != "error" && !strings.HasPrefix(code, "5") {
			break
		}
	}
	if code != "201" {
		return code
	}
	return g.do(ctx, http.MethodGet, "/v1/orders/"+placed.ID, nil, nil, nil)
}

// do sends one request and returns its status code, or "error" when there was no response.
func (g *Generator) do(ctx context.Context, method, path string, body []byte, header map[string]string, out any) string {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(g.o.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return "error"
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := g.o.Client.Do(req)
	if err != nil {
		g.o.Logger.Debug("request failed", slog.String("path", path), slog.String("error", err.Error()))
		return "error"
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode/100 == 2 {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return strconv.Itoa(resp.StatusCode)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// maxSamples bounds the latencies kept per scenario (reservoir sampling beyond it).
const maxSamples = 10000

type stats struct {
	count   int
	codes   map[string]int
	samples []time.Duration
}

func (s *stats) add(code string, d time.Duration, rng *mrand.Rand) {
	s.count++
	s.codes[code]++
	if len(s.samples) < maxSamples {
		s.samples = append(s.samples, d)
	} else if i := rng.IntN(s.count); i < maxSamples {
		s.samples[i] = d
	}
}

// ScenarioSummary is what one scenario did.
type ScenarioSummary struct {
	Name          string
	Count         int
	Codes         map[string]int
	P50, P95, P99 time.Duration
}

// OK is the number of runs that ended with a 2xx.
func (s ScenarioSummary) OK() int {
	n := 0
	for c, k := range s.Codes {
		if strings.HasPrefix(c, "2") {
			n += k
		}
	}
	return n
}

// Summary is what a Run did.
type Summary struct {
	Elapsed   time.Duration
	Skipped   int
	Scenarios []ScenarioSummary
}

// Total is the number of scenario runs.
func (s Summary) Total() int {
	n := 0
	for _, sc := range s.Scenarios {
		n += sc.Count
	}
	return n
}

// Errors is the number of runs that did not end with a 2xx.
func (s Summary) Errors() int {
	n := 0
	for _, sc := range s.Scenarios {
		n += sc.Count - sc.OK()
	}
	return n
}

func (g *Generator) summary(elapsed time.Duration) Summary {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := Summary{Elapsed: elapsed, Skipped: g.skipped}
	for _, w := range g.o.Scenarios {
		st, ok := g.stats[w.Name]
		if !ok {
			continue
		}
		sorted := slices.Clone(st.samples)
		slices.Sort(sorted)
		out.Scenarios = append(out.Scenarios, ScenarioSummary{
			Name: w.Name, Count: st.count, Codes: st.codes,
			P50: quantile(sorted, 0.50), P95: quantile(sorted, 0.95), P99: quantile(sorted, 0.99),
		})
	}
	return out
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// WriteTable prints the summary as a table.
func (s Summary) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "loadgen: %d runs in %.1fs (%.1f/s), %d not 2xx, %d ticks skipped with all %s\n",
		s.Total(), s.Elapsed.Seconds(), float64(s.Total())/max(s.Elapsed.Seconds(), 1e-9), s.Errors(), s.Skipped, "requests in flight")
	fmt.Fprintf(&b, "%-8s %7s %7s %9s %9s %9s  %s\n", "SCENARIO", "RUNS", "OK", "P50", "P95", "P99", "CODES")
	for _, sc := range s.Scenarios {
		codes := make([]string, 0, len(sc.Codes))
		for c, n := range sc.Codes {
			codes = append(codes, fmt.Sprintf("%s=%d", c, n))
		}
		slices.Sort(codes)
		fmt.Fprintf(&b, "%-8s %7d %7d %9s %9s %9s  %s\n", sc.Name, sc.Count, sc.OK(),
			sc.P50.Round(time.Microsecond*100), sc.P95.Round(time.Microsecond*100), sc.P99.Round(time.Microsecond*100), strings.Join(codes, " "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
