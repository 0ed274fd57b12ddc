package shoptest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
)

// shop is the four services running against one Consul, one Loki and one PostgreSQL.
type shop struct {
	consul, loki                       *devserver.Server
	postgres                           *devserver.Postgres
	catalog, payments, orders, gateway *proc
	gatewayURL                         string
}

// databaseEnv is the settings of a service keeping its state in database db of pg.
func databaseEnv(pg *devserver.Postgres, db string) map[string]string {
	return map[string]string{"DATABASE_URL": pg.URL(db), "DATABASE_PASSWORD": pg.Password, "DATABASE_PROBE_INTERVAL": "200ms"}
}

func with(env map[string]string, more ...map[string]string) map[string]string {
	out := maps.Clone(env)
	for _, m := range more {
		maps.Copy(out, m)
	}
	return out
}

func startShop(t *testing.T) *shop {
	t.Helper()
	s := &shop{consul: devservertest.Consul(t), loki: devservertest.Loki(t), postgres: devservertest.Postgres(t, "orders", "payments")}
	ports, err := devserver.FreePorts(9) // the last one's broker address, where nothing listens: events_test.go runs the events
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	common := func(admin string, extra map[string]string) map[string]string {
		env := map[string]string{
			"ADMIN_ADDR": admin, "NAMESPACE": "shop", "LOG_LEVEL": "info",
			"CONSUL_HTTP_ADDR": s.consul.Addr, "CONSUL_REGISTER": "true", "CONSUL_CHECK_INTERVAL": "500ms",
			"LOKI_URL": s.loki.URL(), "LOG_BATCH_WAIT": "200ms", "LOG_QUEUE_SIZE": "64",
			// Breakers that trip and recover within the test's patience.
			"BREAKER_CONSECUTIVE_FAILURES": "3", "BREAKER_FAILURE_RATIO": "0", "BREAKER_OPEN_TIMEOUT": "2s",
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}
	s.catalog = start(t, "catalog", common(addr(1), map[string]string{"GRPC_ADDR": addr(0)}))
	s.payments = start(t, "payments", common(addr(3), with(map[string]string{"GRPC_ADDR": addr(2)}, databaseEnv(s.postgres, "payments"))))
	s.orders = start(t, "orders", common(addr(5), with(map[string]string{
		"GRPC_ADDR": addr(4), "CATALOG_TARGET": "consul:///catalog", "PAYMENTS_TARGET": "consul:///payments",
		"NATS_URL": "nats://" + addr(8),
	}, databaseEnv(s.postgres, "orders"))))
	s.gateway = start(t, "gateway", common(addr(7), map[string]string{
		"HTTP_ADDR": addr(6), "CATALOG_TARGET": "consul:///catalog", "ORDERS_TARGET": "consul:///orders",
		"FULFILLMENT_TARGET": "consul:///fulfillment", "CALL_TIMEOUT": "10s",
	}))
	s.gatewayURL = "http://" + addr(6)
	for _, p := range []*proc{s.catalog, s.payments, s.orders, s.gateway} {
		wait.For(t, 30*time.Second, p.ready)
	}
	// Consul has seen every instance pass its check — the callers' gRPC channels resolve lazily, on their
	// first call, and fail that call if Consul has no passing instance yet — and the gateway reaches its
	// dependencies: catalog answers the product list, orders a 404 for an order that does not exist.
	health := consulClient(t, s.consul.Addr).Health()
	wait.For(t, 30*time.Second, func() error {
		for _, name := range []string{"catalog", "payments", "orders", "gateway"} {
			entries, _, err := health.Service(name, "", true, nil)
			if err != nil || len(entries) == 0 {
				return fmt.Errorf("%s not passing in Consul: %d instances %w", name, len(entries), err)
			}
		}
		code, body, err := request(http.MethodGet, s.gatewayURL+"/v1/products", "", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("GET /v1/products: %d %s %w", code, body, err)
		}
		code, body, err = request(http.MethodGet, s.gatewayURL+"/v1/orders/ord_none", "", nil)
		if err != nil || code != http.StatusNotFound {
			return fmt.Errorf("GET /v1/orders/ord_none: %d %s %w, want 404 from orders", code, body, err)
		}
		return nil
	})
	return s
}

type orderResp struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	ChargeID string `json:"chargeId"`
	Error    string `json:"error"`
	Dep      string `json:"dependency"`
}

const orderBody = `{"items":[{"productId":"moka-pot","quantity":1},{"productId":"paper-filters","quantity":2}],"cardToken":"tok_visa"}`

// placeOrder posts orderBody with key and returns status, decoded body and headers.
func (s *shop) placeOrder(t *testing.T, key string) (int, orderResp, http.Header) {
	t.Helper()
	code, body, hdr, err := requestH(http.MethodPost, s.gatewayURL+"/v1/orders", orderBody, map[string]string{"Idempotency-Key": key})
	if err != nil {
		t.Fatalf("POST /v1/orders: %v", err)
	}
	var r orderResp
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("POST /v1/orders: %d, body %q is not JSON", code, body)
	}
	return code, r, hdr
}

func TestShop(t *testing.T) {
	began := time.Now()
	s := startShop(t)
	t.Logf("shop up (Consul, Loki, 4 services, discovery) in %s", time.Since(began).Round(time.Millisecond))

	t.Run("an order is stored once and charged once, also when retried with its key", func(t *testing.T) {
		code, first, hdr := s.placeOrder(t, "order-1")
		if code != http.StatusCreated || first.Status != "paid" || first.ChargeID == "" {
			t.Fatalf("first POST: got %d %+v, want 201 paid with a charge", code, first)
		}
		code, again, hdr2 := s.placeOrder(t, "order-1")
		if code != http.StatusCreated || again.ID != first.ID || again.ChargeID != first.ChargeID || hdr2.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry: got %d %+v replayed=%q, want 201 with order %s replayed", code, again, hdr2.Get("Idempotent-Replayed"), first.ID)
		}
		// Three concurrent retries of a second order still place one.
		ids := make([]string, 3)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				if c, r, _ := s.placeOrder(t, "order-2"); c == http.StatusCreated {
					ids[i] = r.ID
				}
			})
		}
		wg.Wait()
		if ids[0] == "" || ids[1] != ids[0] || ids[2] != ids[0] {
			t.Errorf("concurrent POSTs with one key: got order ids %v, want one id three times", ids)
		}
		if c, body, _ := request(http.MethodGet, s.gatewayURL+"/v1/orders/"+first.ID, "", nil); c != http.StatusOK || !strings.Contains(body, first.ChargeID) {
			t.Errorf("GET the order: got %d %s", c, body)
		}

		of, pf := s.orders.metrics(t), s.payments.metrics(t)
		got := map[string]float64{
			"orders placed":    of.Value("meshplane_orders_total", map[string]string{"result": "placed"}),
			"payments charged": pf.Value("meshplane_payments_charges_total", map[string]string{"result": "charged"}),
			"Charge calls":     pf.Value("grpc_server_handled_total", map[string]string{"grpc_method": "Charge"}),
		}
		want := map[string]float64{"orders placed": 2, "payments charged": 2, "Charge calls": 2}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: got %v want %v (all: %v)", k, got[k], v, got)
			}
		}

		// That request's logs, from every hop, arrive in Loki under its trace id.
		traceID := hdr.Get("X-Trace-Id")
		wait.For(t, 30*time.Second, func() error {
			services, err := lokiServices(s.loki.URL(), `{namespace="shop"} |= "`+traceID+`"`)
			if err != nil {
				return err
			}
			for _, want := range []string{"gateway", "orders", "payments"} {
				if !slices.Contains(services, want) {
					return fmt.Errorf("trace %s: lines from %v, want gateway, orders and payments", traceID, services)
				}
			}
			return nil
		})
	})

	t.Run("an order over orders' limits is a 400 from orders, naming the client's field", func(t *testing.T) {
		for body, field := range map[string]string{
			`{"items":[{"productId":"moka-pot","quantity":101}],"cardToken":"tok_visa"}`: "items[0].quantity",
			`{"items":[{"productId":"moka-pot","quantity":1}]}`:                          "cardToken",
			`{"items":[],"cardToken":"tok_visa"}`:                                        "items",
		} {
			code, resp, _, err := requestH(http.MethodPost, s.gatewayURL+"/v1/orders", body, nil)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Field string }
			if code != http.StatusBadRequest || json.Unmarshal([]byte(resp), &e) != nil || e.Field != field {
				t.Errorf("POST %s: got %d %s, want 400 naming field %q", body, code, resp, field)
			}
		}
	})

	t.Run("payments failing opens orders' breaker, which fails fast and closes after recovery", func(t *testing.T) {
		s.payments.setFaults(t, `[{"target":"Charge","errorRate":1}]`)
		state := func(p *proc, name, st string) float64 {
			return p.metrics(t).Value("meshplane_circuit_breaker_state", map[string]string{"name": name, "state": st})
		}
		n := 0
		wait.For(t, 20*time.Second, func() error {
			n++
			code, r, _ := s.placeOrder(t, fmt.Sprintf("fail-%d", n))
			if code != http.StatusServiceUnavailable || r.Dep != "payments" {
				return fmt.Errorf("POST: got %d %+v, want 503 naming payments", code, r)
			}
			if state(s.orders, "payments", "open") != 1 {
				return fmt.Errorf("orders' payments breaker not open yet after %d orders", n)
			}
			return nil
		})
		opened, failedOrders := time.Now(), n
		charges := s.payments.metrics(t).Value("grpc_server_started_total", map[string]string{"grpc_method": "Charge"})
		for i := range 5 {
			code, r, _ := s.placeOrder(t, fmt.Sprintf("fast-%d", i))
			if code != http.StatusServiceUnavailable || r.Dep != "payments" || !strings.Contains(r.Error, "circuit breaker open") {
				t.Errorf("POST while open: got %d %+v, want 503 naming payments, circuit breaker open", code, r)
			}
		}
		if after := s.payments.metrics(t).Value("grpc_server_started_total", map[string]string{"grpc_method": "Charge"}); after != charges {
			t.Errorf("Charge calls reaching payments while the breaker is open: %v before, %v after, want none", charges, after)
		}
		of := s.orders.metrics(t)
		if got := of.Value("meshplane_circuit_breaker_requests_total", map[string]string{"name": "payments", "result": "rejected_open"}); got < 5 {
			t.Errorf("rejected_open: got %v, want at least the 5 fast failures", got)
		}
		// The gateway's breaker for orders stays closed: orders answered; its dependency failed.
		if got := state(s.gateway, "orders", "closed"); got != 1 {
			t.Errorf("gateway's orders breaker closed: got %v want 1", got)
		}

		s.payments.setFaults(t, "")
		wait.For(t, 20*time.Second, func() error {
			n++
			if code, r, _ := s.placeOrder(t, fmt.Sprintf("recover-%d", n)); code != http.StatusCreated {
				return fmt.Errorf("POST after recovery: %d %+v", code, r)
			}
			return nil
		})
		t.Logf("payments breaker: open after %d failing orders (3 consecutive failures trip it), closed again %s after opening (open timeout 2s)",
			failedOrders, time.Since(opened).Round(10*time.Millisecond))
		of = s.orders.metrics(t)
		if got := state(s.orders, "payments", "closed"); got != 1 {
			t.Errorf("orders' payments breaker closed after recovery: got %v want 1", got)
		}
		for _, tr := range [][2]string{{"closed", "open"}, {"open", "half_open"}, {"half_open", "closed"}} {
			if got := of.Value("meshplane_circuit_breaker_transitions_total", map[string]string{"name": "payments", "from": tr[0], "to": tr[1]}); got < 1 {
				t.Errorf("transition %s→%s: got %v, want at least 1", tr[0], tr[1], got)
			}
		}
	})

	t.Run("with Loki down requests keep succeeding in the same latency class and drops are counted", func(t *testing.T) {
		const route = "/v1/products"
		labels := map[string]string{"http_route": route, "http_response_status_code": "200"}
		phase := func(n int) (fast, total float64, slowest time.Duration) {
			before := s.gateway.metrics(t)
			for range n {
				began := time.Now()
				code, body, err := request(http.MethodGet, s.gatewayURL+route, "", nil)
				if err != nil || code != http.StatusOK {
					t.Fatalf("GET %s: %d %s %v", route, code, body, err)
				}
				slowest = max(slowest, time.Since(began))
			}
			after := s.gateway.metrics(t)
			// Latency class: the histogram bucket le=0.25s. A logger waiting on Loki would push requests
			// out of it, since a push is retried with 250ms-2s back-off.
			fast = after.Bucket("http_server_request_duration_seconds", labels, 0.25) - before.Bucket("http_server_request_duration_seconds", labels, 0.25)
			total = after.Value("http_server_request_duration_seconds", labels) - before.Value("http_server_request_duration_seconds", labels)
			return fast, total, slowest
		}
		upFast, upTotal, upSlowest := phase(40)
		if err := s.loki.Stop(); err != nil {
			t.Fatal(err)
		}
		downFast, downTotal, downSlowest := phase(40)
		t.Logf("GET %s, 40 requests each: Loki up %v/%v within 250ms (slowest %s); Loki down %v/%v (slowest %s)",
			route, upFast, upTotal, upSlowest.Round(time.Microsecond), downFast, downTotal, downSlowest.Round(time.Microsecond))
		if upFast != upTotal || downFast != downTotal || downTotal != 40 {
			t.Errorf("requests within 250ms: Loki up %v of %v, Loki down %v of %v; want all", upFast, upTotal, downFast, downTotal)
		}
		wait.For(t, 30*time.Second, func() error {
			// Keep logging (each request logs on every hop) until the gateway's queue overflows.
			if code, _, err := request(http.MethodGet, s.gatewayURL+route, "", nil); err != nil || code != http.StatusOK {
				return fmt.Errorf("GET %s with Loki down: %d %w", route, code, err)
			}
			f := s.gateway.metrics(t)
			dropped := f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "queue_full"}) +
				f.Value("meshplane_log_lines_dropped_total", map[string]string{"reason": "send_failed"})
			if dropped == 0 {
				return fmt.Errorf("no log line dropped yet")
			}
			return nil
		})
	})

	t.Run("loadgen drives every scenario through the gateway and summarises", func(t *testing.T) {
		ports, err := devserver.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		lg := start(t, "loadgen", map[string]string{
			"TARGET_URL": s.gatewayURL, "RATE": "200", "REQUESTS": "60", "CONCURRENCY": "4", "SEED": "1",
			"SCENARIOS": "browse=4,product=2,order=1", "ADMIN_ADDR": "127.0.0.1:" + strconv.Itoa(ports[0]),
		})
		select {
		case <-lg.Done():
		case <-time.After(60 * time.Second):
			t.Fatal("loadgen did not finish 60 requests within 60s")
		}
		out := lg.LogTail(4000)
		_, exitErr := lg.Exited()
		if exitErr != nil || !strings.Contains(out, "loadgen: 60 runs") || !strings.Contains(out, ", 0 not 2xx") {
			t.Errorf("loadgen: exit %v, output:\n%s\nwant 60 runs, all 2xx", exitErr, out)
		}
		for _, sc := range []string{"browse", "product", "order"} {
			if !strings.Contains(out, "\n"+sc+" ") {
				t.Errorf("summary has no %s row:\n%s", sc, out)
			}
		}
	})

	t.Run("SIGTERM during an in-flight request: readiness fails first, the request completes, exit 0", func(t *testing.T) {
		// Hold GET /v1/products in catalog, so it is in flight in the gateway too.
		s.catalog.setFaults(t, `[{"target":"ListProducts","delay":"3s"}]`)
		type result struct {
			code int
			err  error
		}
		res := make(chan result, 1)
		go func() {
			code, _, err := request(http.MethodGet, s.gatewayURL+"/v1/products", "", nil)
			res <- result{code, err}
		}()
		inFlight := func() error {
			f := s.catalog.metrics(t)
			m := map[string]string{"grpc_method": "ListProducts"}
			if f.Value("grpc_server_started_total", m)-f.Value("grpc_server_handled_total", m) < 1 {
				return fmt.Errorf("request not in flight yet")
			}
			return nil
		}
		wait.For(t, 10*time.Second, inFlight)
		if err := s.gateway.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 5*time.Second, func() error {
			code, _, err := request(http.MethodGet, "http://"+s.gateway.admin+"/readyz", "", nil)
			if err != nil || code != http.StatusServiceUnavailable {
				return fmt.Errorf("gateway /readyz after SIGTERM: %d %w", code, err)
			}
			return nil
		})
		select {
		case r := <-res:
			t.Fatalf("the in-flight request finished (%d %v) before readiness was seen failing", r.code, r.err)
		default:
		}
		if r := <-res; r.err != nil || r.code != http.StatusOK {
			t.Errorf("in-flight request: got %d %v, want 200", r.code, r.err)
		}
		<-s.gateway.Done()
		if _, err := s.gateway.Exited(); err != nil {
			t.Errorf("gateway exit: got %v, want status 0", err)
		}
		entries, _, err := consulClient(t, s.consul.Addr).Health().Service("gateway", "", false, nil)
		if err != nil || len(entries) != 0 {
			t.Errorf("gateway in Consul after exit: got %d entries (%v), want it deregistered", len(entries), err)
		}
		s.catalog.setFaults(t, "")
	})

	for _, p := range []*proc{s.catalog, s.payments, s.orders} {
		if err := p.StopWithin(20 * time.Second); err != nil {
			t.Errorf("%s on SIGTERM: got %v, want exit status 0", p.Name, err)
		}
	}
	t.Logf("whole test: %s", time.Since(began).Round(time.Millisecond))
}

func consulClient(t *testing.T, addr string) *consul.Client {
	t.Helper()
	cfg := consul.DefaultConfig()
	cfg.Address = addr
	c, err := consul.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// lokiServices returns the service labels of the streams matching query in the last hour.
func lokiServices(base, query string) ([]string, error) {
	q := url.Values{
		"query": {query},
		"start": {strconv.FormatInt(time.Now().Add(-time.Hour).UnixNano(), 10)},
		"end":   {strconv.FormatInt(time.Now().Add(time.Minute).UnixNano(), 10)},
		"limit": {"100"},
	}
	code, body, err := request(http.MethodGet, base+"/loki/api/v1/query_range?"+q.Encode(), "", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("query_range: %d %s", code, body)
	}
	var r struct {
		Data struct {
			Result []struct {
				Stream map[string]string `json:"stream"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, err
	}
	var out []string
	for _, st := range r.Data.Result {
		if !slices.Contains(out, st.Stream["service"]) {
			out = append(out, st.Stream["service"])
		}
	}
	slices.Sort(out)
	return out, nil
}
