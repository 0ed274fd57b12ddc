package shoptest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
)

// replicatedShop is the shop as a cluster runs it: two orders and two payments replicas over one
// PostgreSQL, found through Consul. Three gateways: one balancing over both orders replicas through
// Consul, and one pinned to each, so a test chooses which replica a request reaches.
type replicatedShop struct {
	consul   *devserver.Server
	postgres *devserver.Postgres
	catalog  *proc
	orders   [2]*proc
	payments [2]*proc
	// gateways[0] reaches orders through consul:///orders, gateways[1] and [2] reach orders[0] and [1].
	gateways [3]*proc
	urls     [3]string
	env      map[*proc]map[string]string
	// owner is the test that started the shop: processes started again belong to it, not to the
	// subtest that restarts them (whose end would stop them).
	owner *testing.T
}

const testLease = 2 * time.Second

// queryTimeout is the services' database deadline: a failure well within it failed fast, rather than
// waiting for the database until the deadline.
const queryTimeout = 3 * time.Second

func startReplicatedShop(t *testing.T) *replicatedShop {
	t.Helper()
	s := &replicatedShop{consul: devservertest.Consul(t), postgres: devservertest.Postgres(t, "orders", "payments"), env: map[*proc]map[string]string{}, owner: t}
	ports, err := devserver.FreePorts(17) // the last one's broker address, where nothing listens
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	common := func(admin string, extra ...map[string]string) map[string]string {
		return with(map[string]string{
			"ADMIN_ADDR": admin, "NAMESPACE": "shop", "LOG_LEVEL": "info",
			"CONSUL_HTTP_ADDR": s.consul.Addr, "CONSUL_REGISTER": "true", "CONSUL_CHECK_INTERVAL": "500ms",
			"BREAKER_CONSECUTIVE_FAILURES": "3", "BREAKER_FAILURE_RATIO": "0", "BREAKER_OPEN_TIMEOUT": "2s",
		}, extra...)
	}
	run := func(name string, env map[string]string) *proc {
		p := start(t, name, env)
		s.env[p] = env
		return p
	}
	s.catalog = run("catalog", common(addr(1), map[string]string{"GRPC_ADDR": addr(0)}))
	for i := range s.payments {
		s.payments[i] = run("payments", common(addr(3+2*i), map[string]string{"GRPC_ADDR": addr(2 + 2*i)}, databaseEnv(s.postgres, "payments"),
			map[string]string{"DATABASE_QUERY_TIMEOUT": queryTimeout.String()}))
	}
	for i := range s.orders {
		s.orders[i] = run("orders", common(addr(7+2*i), map[string]string{
			"GRPC_ADDR": addr(6 + 2*i), "CATALOG_TARGET": "consul:///catalog", "PAYMENTS_TARGET": "consul:///payments",
			"ORDER_LEASE": testLease.String(), "DATABASE_QUERY_TIMEOUT": queryTimeout.String(), "NATS_URL": "nats://" + addr(16),
		}, databaseEnv(s.postgres, "orders")))
	}
	targets := []string{"consul:///orders", addr(6), addr(8)}
	for i := range s.gateways {
		s.gateways[i] = run("gateway", common(addr(11+2*i), map[string]string{
			"HTTP_ADDR": addr(10 + 2*i), "CATALOG_TARGET": "consul:///catalog", "ORDERS_TARGET": targets[i], "CALL_TIMEOUT": "5s",
			"FULFILLMENT_TARGET": "consul:///fulfillment",
		}))
		s.urls[i] = "http://" + addr(10+2*i)
	}
	s.waitServing(t)
	return s
}

// waitServing waits until every process is ready, Consul lists each instance passing, and every
// gateway reaches orders.
func (s *replicatedShop) waitServing(t *testing.T) {
	t.Helper()
	for _, p := range s.procs() {
		wait.For(t, 60*time.Second, p.ready)
	}
	health := consulClient(t, s.consul.Addr).Health()
	wait.For(t, 30*time.Second, func() error {
		for name, want := range map[string]int{"catalog": 1, "payments": 2, "orders": 2, "gateway": 3} {
			entries, _, err := health.Service(name, "", true, nil)
			if err != nil || len(entries) != want {
				return fmt.Errorf("%s: %d instances passing in Consul, want %d %w", name, len(entries), want, err)
			}
		}
		for _, u := range s.urls {
			if code, body, err := request(http.MethodGet, u+"/v1/orders/ord_none", "", nil); err != nil || code != http.StatusNotFound {
				return fmt.Errorf("GET %s/v1/orders/ord_none: %d %s, want 404 from orders: %w", u, code, body, err)
			}
		}
		return nil
	})
}

func (s *replicatedShop) procs() []*proc {
	out := []*proc{s.catalog}
	out = append(out, s.payments[:]...)
	out = append(out, s.orders[:]...)
	return append(out, s.gateways[:]...)
}

// restart stops p (SIGTERM, or SIGKILL when kill is set) and starts it again with the same settings.
func (s *replicatedShop) restart(t *testing.T, p *proc, kill bool) *proc {
	t.Helper()
	if kill {
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.Done()
	} else if err := p.StopWithin(20 * time.Second); err != nil {
		t.Errorf("%s on SIGTERM: %v, want exit 0", p.Name, err)
	}
	env := s.env[p]
	q := start(s.owner, p.Name, env)
	s.env[q] = env
	return q
}

// place posts orderBody (or body) with key through gateway url.
func place(url, key, body string) (int, orderResp, http.Header, time.Duration, error) {
	began := time.Now()
	code, b, hdr, err := requestH(http.MethodPost, url+"/v1/orders", body, map[string]string{"Idempotency-Key": key})
	took := time.Since(began)
	if err != nil {
		return 0, orderResp{}, nil, took, err
	}
	var r orderResp
	if err := json.Unmarshal([]byte(b), &r); err != nil {
		return code, r, hdr, took, fmt.Errorf("%d, body %q is not JSON", code, b)
	}
	return code, r, hdr, took, nil
}

// ledger is what the databases hold: paid and pending orders, and charges.
type ledger struct {
	paid, pending, charges int
	// unmatched lists paid orders whose charge is missing, charges of no paid order, and charges
	// referencing one order twice.
	unmatched []string
}

func (s *replicatedShop) ledger(t *testing.T) ledger {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	oc, err := s.postgres.Connect(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = oc.Close(ctx) }()
	pc, err := s.postgres.Connect(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close(ctx) }()
	orders := map[string]string{} // paid order id → charge id
	var l ledger
	rows, err := oc.Query(ctx, "SELECT id, status, coalesce(charge_id, '') FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, st, charge string
		if err := rows.Scan(&id, &st, &charge); err != nil {
			t.Fatal(err)
		}
		if st == "paid" {
			l.paid++
			orders[id] = charge
		} else {
			l.pending++
		}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	charged := map[string]string{} // order id (the charge's reference) → charge id
	rows, err = pc.Query(ctx, "SELECT id, reference FROM charges")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, ref string
		if err := rows.Scan(&id, &ref); err != nil {
			t.Fatal(err)
		}
		l.charges++
		if prev, dup := charged[ref]; dup {
			l.unmatched = append(l.unmatched, fmt.Sprintf("order %s charged twice: %s and %s", ref, prev, id))
		}
		charged[ref] = id
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	for id, charge := range orders {
		if charged[id] != charge {
			l.unmatched = append(l.unmatched, fmt.Sprintf("paid order %s has charge %s, payments has %q", id, charge, charged[id]))
		}
	}
	for ref, id := range charged {
		if _, ok := orders[ref]; !ok {
			l.unmatched = append(l.unmatched, fmt.Sprintf("charge %s is for %s, which is not a paid order", id, ref))
		}
	}
	slices.Sort(l.unmatched)
	return l
}

// count runs a count query on database db, on a connection of its own (a transaction would cache
// pg_stat_activity).
func (s *replicatedShop) count(ctx context.Context, db, query string) (int, error) {
	conn, err := s.postgres.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int
	err = conn.QueryRow(ctx, query).Scan(&n)
	return n, err
}

// checkOneChargePerOrder fails the test unless every order is paid with exactly one charge.
func (s *replicatedShop) checkOneChargePerOrder(t *testing.T, wantOrders int) {
	t.Helper()
	l := s.ledger(t)
	if l.paid != wantOrders || l.pending != 0 || l.charges != wantOrders || len(l.unmatched) > 0 {
		t.Errorf("databases: %d paid, %d pending orders, %d charges, mismatches %v; want %d paid orders, each with its one charge",
			l.paid, l.pending, l.charges, l.unmatched, wantOrders)
	}
}

func TestReplicasKeepOnePromise(t *testing.T) {
	began := time.Now()
	s := startReplicatedShop(t)
	t.Logf("shop up (Consul, PostgreSQL, catalog, 2 payments, 2 orders, 3 gateways) in %s", time.Since(began).Round(time.Millisecond))
	placed := map[string]string{} // key → order id of every order placed so far

	t.Run("the same key on two orders replicas places one order and charges once", func(t *testing.T) {
		code, first, _, _, err := place(s.urls[1], "two-replicas", orderBody)
		if err != nil || code != http.StatusCreated || first.Status != "paid" {
			t.Fatalf("POST on replica 0: %d %+v %v", code, first, err)
		}
		code, again, hdr, _, err := place(s.urls[2], "two-replicas", orderBody)
		if err != nil || code != http.StatusCreated || again.ID != first.ID || again.ChargeID != first.ChargeID || hdr.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry on replica 1: got %d %+v replayed=%q %v, want order %s replayed", code, again, hdr.Get("Idempotent-Replayed"), err, first.ID)
		}
		placed["two-replicas"] = first.ID
		s.checkOneChargePerOrder(t, len(placed))
	})

	t.Run("eight concurrent requests with one key over both replicas place one order", func(t *testing.T) {
		ids := make([]string, 8)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				code, r, _, _, err := place(s.urls[1+i%2], "eight-at-once", orderBody)
				if err != nil || code != http.StatusCreated {
					t.Errorf("request %d: %d %+v %v", i, code, r, err)
				}
				ids[i] = r.ID
			})
		}
		wg.Wait()
		if ids[0] == "" || slices.ContainsFunc(ids, func(id string) bool { return id != ids[0] }) {
			t.Errorf("order ids: got %v, want one id eight times", ids)
		}
		placed["eight-at-once"] = ids[0]
		s.checkOneChargePerOrder(t, len(placed))
	})

	t.Run("a key reused for another order is refused with 409 on any replica and charges nothing", func(t *testing.T) {
		other := strings.Replace(orderBody, `"quantity":1`, `"quantity":3`, 1)
		for _, u := range s.urls[1:] {
			code, r, _, _, err := place(u, "two-replicas", other)
			if err != nil || code != http.StatusConflict || !strings.Contains(r.Error, "different order") {
				t.Errorf("POST %s with a reused key: got %d %+v %v, want 409 naming the conflict", u, code, r, err)
			}
		}
		code, r, _, _, err := place(s.urls[1], strings.Repeat("k", 256), orderBody)
		if err != nil || code != http.StatusBadRequest || !strings.Contains(r.Error, "longer than 255") {
			t.Errorf("POST with a 256-byte key: got %d %+v %v, want 400 naming the limit", code, r, err)
		}
		s.checkOneChargePerOrder(t, len(placed))
	})

	t.Run("an orders replica killed with an order in flight: the retry on the other replica charges it once", func(t *testing.T) {
		// The charge takes a second, so the order is in flight at orders[0]; a row lock taken by the
		// test holds orders[0] after payments has charged and before it records the order paid — the
		// worst moment to die. Then orders[0] is killed.
		for _, p := range s.payments {
			p.setFaults(t, `[{"target":"Charge","delay":"1s"}]`)
		}
		ctx := context.Background()
		conn, err := s.postgres.Connect(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		done := make(chan int, 1)
		go func() {
			code, _, _, _, _ := place(s.urls[1], "killed-in-flight", orderBody)
			done <- code
		}()
		var orderID string
		wait.For(t, 10*time.Second, func() error {
			return conn.QueryRow(ctx, "SELECT id FROM orders WHERE idempotency_key = 'killed-in-flight'").Scan(&orderID)
		})
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", orderID); err != nil {
			t.Fatal(err)
		}
		waitingToMarkPaid := func(want int) func() error {
			return func() error {
				n, err := s.count(ctx, "orders", `SELECT count(*) FROM pg_stat_activity
					WHERE application_name = 'orders' AND wait_event_type = 'Lock' AND query LIKE 'UPDATE orders SET status%'`)
				if err != nil || n != want {
					return fmt.Errorf("sessions waiting to mark %s paid: %d, want %d %w", orderID, n, want, err)
				}
				return nil
			}
		}
		wait.For(t, 10*time.Second, waitingToMarkPaid(1))
		s.orders[0] = s.restart(t, s.orders[0], true)
		t.Logf("orders[0] killed after charging %s, before marking it paid", orderID)
		// PostgreSQL notices the dead client (client_connection_check_interval) and ends its session.
		wait.For(t, 10*time.Second, waitingToMarkPaid(0))
		if code := <-done; code == http.StatusCreated {
			t.Errorf("the request to the killed replica: got 201, want it to fail")
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		for _, p := range s.payments {
			p.setFaults(t, "")
		}
		code, r, _, took, err := place(s.urls[2], "killed-in-flight", orderBody)
		if err != nil || code != http.StatusCreated || r.ID != orderID || r.Status != "paid" {
			t.Errorf("retry on orders[1]: got %d %+v %v, want order %s paid", code, r, err, orderID)
		}
		t.Logf("retry on the other replica resumed %s in %s", orderID, took.Round(time.Millisecond))
		placed["killed-in-flight"] = orderID
		s.checkOneChargePerOrder(t, len(placed))
		duplicates := 0.0
		for _, p := range s.payments {
			duplicates += p.metrics(t).Value("meshplane_payments_charges_total", map[string]string{"result": "duplicate"})
		}
		if duplicates < 1 {
			t.Errorf("payments duplicates: %v, want the resumed charge answered as a duplicate of the first", duplicates)
		}
		s.waitServing(t)
	})

	t.Run("every order reads back on every replica", func(t *testing.T) {
		s.checkOrdersReadable(t, placed)
	})

	t.Run("PostgreSQL stopped for 10s under load: fast 503s naming it, then every order placed once", func(t *testing.T) {
		const workers = 4
		type attempt struct {
			code int
			dep  string
			took time.Duration
			err  error
		}
		var (
			mu       sync.Mutex
			attempts []attempt
			loadKeys = map[string]string{}
			stop     = make(chan struct{})
			wg       sync.WaitGroup
		)
		for w := range workers {
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					// Each key is retried until placed, as a client honouring Idempotency-Key does.
					key := fmt.Sprintf("load-%d-%d", w, n)
					for {
						code, r, _, took, err := place(s.urls[0], key, orderBody)
						mu.Lock()
						attempts = append(attempts, attempt{code, r.Dep, took, err})
						if code == http.StatusCreated {
							loadKeys[key] = r.ID
						}
						mu.Unlock()
						if code == http.StatusCreated {
							break
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
			})
		}
		time.Sleep(2 * time.Second)
		if err := s.postgres.Stop(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		mu.Lock()
		before := len(attempts)
		mu.Unlock()
		wait.For(t, 10*time.Second, func() error {
			code, body, err := request(http.MethodGet, "http://"+s.orders[1].admin+"/readyz", "", nil)
			if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "postgres") {
				return fmt.Errorf("orders[1] /readyz with PostgreSQL down: %d %q, want 503 naming postgres: %w", code, body, err)
			}
			return nil
		})
		time.Sleep(10*time.Second - time.Since(stopped))
		mu.Lock()
		during := slices.Clone(attempts[before:])
		mu.Unlock()
		if err := s.postgres.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		// Orders succeed again; then the workers finish the keys they hold.
		wait.For(t, 30*time.Second, func() error {
			key := fmt.Sprintf("after-outage-%d", time.Now().UnixNano())
			code, r, _, _, err := place(s.urls[0], key, orderBody)
			if err != nil || code != http.StatusCreated {
				return fmt.Errorf("POST after PostgreSQL returned: %d %+v: %w", code, r, err)
			}
			mu.Lock()
			loadKeys[key] = r.ID
			mu.Unlock()
			return nil
		})
		recovered := time.Since(restarted)
		time.Sleep(2 * time.Second)
		close(stop)
		wg.Wait()

		var failed, named, slowest, slowestFailure = 0, 0, time.Duration(0), time.Duration(0)
		for _, a := range during {
			slowest = max(slowest, a.took)
			if a.code == http.StatusCreated {
				continue
			}
			failed++
			slowestFailure = max(slowestFailure, a.took)
			if (a.code == http.StatusServiceUnavailable || a.code == http.StatusGatewayTimeout) && a.dep == "postgres" {
				named++
			} else {
				t.Errorf("during the outage: %d dependency %q %v, want 503 naming postgres", a.code, a.dep, a.err)
			}
		}
		overall := time.Duration(0)
		for _, a := range attempts {
			overall = max(overall, a.took)
		}
		t.Logf("PostgreSQL down 10s: %d requests during the outage, %d failed (%d naming postgres), slowest failure %s, slowest request %s; "+
			"first order placed %s after it returned; %d requests in all, slowest %s; %d orders placed by the load",
			len(during), failed, named, slowestFailure.Round(time.Millisecond), slowest.Round(time.Millisecond),
			recovered.Round(time.Millisecond), len(attempts), overall.Round(time.Millisecond), len(loadKeys))
		if named == 0 {
			t.Errorf("no request failed naming postgres during the outage")
		}
		if slowestFailure > queryTimeout/2 {
			t.Errorf("slowest failure during the outage: %s, want under %s, half the database deadline (fail fast)", slowestFailure, queryTimeout/2)
		}
		if overall > 5*time.Second {
			t.Errorf("slowest request: %s, want none past the gateway's 5s deadline", overall)
		}
		for k, id := range loadKeys {
			placed[k] = id
		}
		s.checkOneChargePerOrder(t, len(placed))
		s.checkOrdersReadable(t, placed)
	})

	t.Run("every service restarted: every order is still there", func(t *testing.T) {
		began := time.Now()
		for i := range s.orders {
			s.orders[i] = s.restart(t, s.orders[i], false)
		}
		for i := range s.payments {
			s.payments[i] = s.restart(t, s.payments[i], false)
		}
		s.catalog = s.restart(t, s.catalog, false)
		s.waitServing(t)
		t.Logf("orders, payments and catalog restarted and serving in %s", time.Since(began).Round(time.Millisecond))
		s.checkOrdersReadable(t, placed)
		s.checkOneChargePerOrder(t, len(placed))
		code, r, _, _, err := place(s.urls[0], "after-restart", orderBody)
		if err != nil || code != http.StatusCreated {
			t.Errorf("POST after the restart: %d %+v %v", code, r, err)
		}
	})
}

// checkOrdersReadable fails the test unless GET /v1/orders/{id} answers every order, paid, through the
// gateways pinned to each orders replica.
func (s *replicatedShop) checkOrdersReadable(t *testing.T, placed map[string]string) {
	t.Helper()
	for _, u := range s.urls[1:] {
		for _, id := range placed {
			code, body, err := request(http.MethodGet, u+"/v1/orders/"+id, "", nil)
			if err != nil || code != http.StatusOK || !strings.Contains(body, `"status":"paid"`) {
				t.Errorf("GET %s/v1/orders/%s: %d %s %v, want 200 paid", u, id, code, body, err)
				return
			}
		}
	}
}
