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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/wait"
	eventsv1 "meshplane.dev/services/proto/events/v1"
)

// eventShop is the shop with its event flow as a cluster runs it: two orders replicas relaying one
// outbox to NATS JetStream, two fulfillment replicas sharing one durable consumer, each service with its
// own database on one PostgreSQL, found through Consul, logging to Loki.
type eventShop struct {
	consul, loki *devserver.Server
	postgres     *devserver.Postgres
	nats         *devserver.NATS
	catalog      *proc
	payments     *proc
	orders       [2]*proc
	fulfillment  [2]*proc
	gateway      *proc
	gatewayURL   string
	env          map[*proc]map[string]string
	owner        *testing.T
	js           jetstream.JetStream
}

// Consumer settings of the test: an event is tried 3 times, a replica's unacknowledged events go to
// the other after 3s.
const (
	testMaxDeliveries = 3
	testAckWait       = 3 * time.Second
)

func startEventShop(t *testing.T) *eventShop {
	t.Helper()
	s := &eventShop{consul: devservertest.Consul(t), loki: devservertest.Loki(t), postgres: devservertest.Postgres(t, "orders", "payments", "fulfillment"),
		nats: devservertest.NATS(t), env: map[*proc]map[string]string{}, owner: t}
	ports, err := devserver.FreePorts(14)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	common := func(admin string, extra ...map[string]string) map[string]string {
		return with(map[string]string{
			"ADMIN_ADDR": admin, "NAMESPACE": "shop", "LOG_LEVEL": "info",
			"CONSUL_HTTP_ADDR": s.consul.Addr, "CONSUL_REGISTER": "true", "CONSUL_CHECK_INTERVAL": "500ms",
			"LOKI_URL": s.loki.URL(), "LOG_BATCH_WAIT": "200ms",
			"BREAKER_CONSECUTIVE_FAILURES": "3", "BREAKER_FAILURE_RATIO": "0", "BREAKER_OPEN_TIMEOUT": "2s",
			"NATS_URL": s.nats.ClientURL(), "NATS_RECONNECT_WAIT": "200ms",
		}, extra...)
	}
	run := func(name string, env map[string]string) *proc {
		p := start(t, name, env)
		s.env[p] = env
		return p
	}
	s.catalog = run("catalog", common(addr(1), map[string]string{"GRPC_ADDR": addr(0)}))
	s.payments = run("payments", common(addr(3), map[string]string{"GRPC_ADDR": addr(2)}, databaseEnv(s.postgres, "payments")))
	for i := range s.orders {
		s.orders[i] = run("orders", common(addr(5+2*i), map[string]string{
			"GRPC_ADDR": addr(4 + 2*i), "CATALOG_TARGET": "consul:///catalog", "PAYMENTS_TARGET": "consul:///payments",
			"OUTBOX_RELAY_INTERVAL": "200ms",
		}, databaseEnv(s.postgres, "orders")))
	}
	for i := range s.fulfillment {
		s.fulfillment[i] = run("fulfillment", common(addr(9+2*i), map[string]string{
			"GRPC_ADDR": addr(8 + 2*i), "CONSUMER_MAX_IN_FLIGHT": "8", "CONSUMER_MAX_DELIVERIES": strconv.Itoa(testMaxDeliveries),
			"CONSUMER_ACK_WAIT": testAckWait.String(), "CONSUMER_RETRY_DELAY": "200ms", "CONSUMER_LAG_INTERVAL": "250ms",
		}, databaseEnv(s.postgres, "fulfillment")))
	}
	s.gateway = run("gateway", common(addr(13), map[string]string{
		"HTTP_ADDR": addr(12), "CATALOG_TARGET": "consul:///catalog", "ORDERS_TARGET": "consul:///orders",
		"FULFILLMENT_TARGET": "consul:///fulfillment", "CALL_TIMEOUT": "5s",
	}))
	s.gatewayURL = "http://" + addr(12)
	s.waitServing(t)

	nc, err := nats.Connect(s.nats.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *eventShop) procs() []*proc {
	return []*proc{s.catalog, s.payments, s.orders[0], s.orders[1], s.fulfillment[0], s.fulfillment[1], s.gateway}
}

// waitServing waits until every process is ready, Consul lists every instance passing, and the gateway
// reaches orders.
func (s *eventShop) waitServing(t *testing.T) {
	t.Helper()
	for _, p := range s.procs() {
		wait.For(t, 60*time.Second, p.ready)
	}
	health := consulClient(t, s.consul.Addr).Health()
	wait.For(t, 30*time.Second, func() error {
		for name, want := range map[string]int{"catalog": 1, "payments": 1, "orders": 2, "fulfillment": 2, "gateway": 1} {
			entries, _, err := health.Service(name, "", true, nil)
			if err != nil || len(entries) != want {
				return fmt.Errorf("%s: %d instances passing in Consul, want %d %w", name, len(entries), want, err)
			}
		}
		if code, body, err := request(http.MethodGet, s.gatewayURL+"/v1/orders/ord_none", "", nil); err != nil || code != http.StatusNotFound {
			return fmt.Errorf("GET /v1/orders/ord_none: %d %s, want 404 from orders: %w", code, body, err)
		}
		return nil
	})
}

// sum adds metric name{labels} over ps.
func sum(t *testing.T, ps []*proc, name string, labels map[string]string) float64 {
	t.Helper()
	total := 0.0
	for _, p := range ps {
		total += p.metrics(t).Value(name, labels)
	}
	return total
}

// highest is the largest value of metric name{labels} over ps (a gauge every replica reports whole).
func highest(t *testing.T, ps []*proc, name string, labels map[string]string) float64 {
	t.Helper()
	m := 0.0
	for _, p := range ps {
		m = max(m, p.metrics(t).Value(name, labels))
	}
	return m
}

var fulfillmentConsumer = map[string]string{"consumer": "fulfillment"}

func consumed(result string) map[string]string {
	return map[string]string{"consumer": "fulfillment", "result": result}
}

// effects is what the databases and the stream hold.
type effects struct {
	paid, outbox, unsent, events, shipments, processed int
	// orphans lists paid orders without exactly one shipment and shipments of no paid order.
	orphans []string
}

func (s *eventShop) effects(t *testing.T) effects {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var e effects
	query := func(db, q string, dest ...any) {
		conn, err := s.postgres.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if err := conn.QueryRow(ctx, q).Scan(dest...); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(db, q string) []string {
		conn, err := s.postgres.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			out = append(out, id)
		}
		return out
	}
	query("orders", "SELECT (SELECT count(*) FROM orders WHERE status = 'paid'), (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
		&e.paid, &e.outbox, &e.unsent)
	query("fulfillment", "SELECT (SELECT count(*) FROM shipments), (SELECT count(*) FROM processed_events)", &e.shipments, &e.processed)
	paid := ids("orders", "SELECT id FROM orders WHERE status = 'paid'")
	shipped := ids("fulfillment", "SELECT order_id FROM shipments")
	count := map[string]int{}
	for _, id := range shipped {
		count[id]++
	}
	for _, id := range paid {
		if count[id] != 1 {
			e.orphans = append(e.orphans, fmt.Sprintf("paid order %s has %d shipments", id, count[id]))
		}
		delete(count, id)
	}
	for id := range count {
		e.orphans = append(e.orphans, "shipment of "+id+", which is not a paid order")
	}
	slices.Sort(e.orphans)
	info, err := s.js.Stream(ctx, eventsv1.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(ctx, jetstream.WithSubjectFilter(eventsv1.OrderPlacedSubject))
	if err != nil {
		t.Fatal(err)
	}
	e.events = int(si.State.Subjects[eventsv1.OrderPlacedSubject]) //nolint:gosec // a test's count
	return e
}

// waitOneShipmentPerOrder waits until every paid order has its one shipment, each event was published
// and processed once, and nothing is pending; it fails the test with what differs.
func (s *eventShop) waitOneShipmentPerOrder(t *testing.T, extraEvents int) effects {
	t.Helper()
	var e effects
	wait.For(t, 60*time.Second, func() error {
		e = s.effects(t)
		if e.paid == 0 || e.outbox != e.paid || e.unsent != 0 || e.events != e.paid+extraEvents || e.shipments != e.paid ||
			e.processed != e.paid || len(e.orphans) > 0 {
			return fmt.Errorf("%d paid orders, %d outbox events (%d unsent), %d in the stream (want %d), %d shipments, %d events processed, mismatches %v",
				e.paid, e.outbox, e.unsent, e.events, e.paid+extraEvents, e.shipments, e.processed, e.orphans)
		}
		return nil
	})
	return e
}

// load places orders through the gateway from workers until stop is closed, each key retried until
// placed (as a client honouring Idempotency-Key does); it returns every response that was not a 201.
func (s *eventShop) load(prefix string, workers int, stop <-chan struct{}) func() (placed int, failures []string) {
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		n        int
		failures []string
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, r, _, _, err := place(s.gatewayURL, fmt.Sprintf("%s-%d-%d", prefix, w, i), orderBody)
				mu.Lock()
				if code == http.StatusCreated {
					n++
				} else {
					failures = append(failures, fmt.Sprintf("%d %+v %v", code, r, err))
				}
				mu.Unlock()
			}
		})
	}
	return func() (int, []string) {
		wg.Wait()
		return n, failures
	}
}

// latencies returns the p50 and p99 of order-to-shipment latency over every shipment, from the
// databases' own timestamps (orders' placed time in the event, fulfillment's commit).
func (s *eventShop) latencies(t *testing.T) (p50, p99 time.Duration) {
	t.Helper()
	ctx := context.Background()
	conn, err := s.postgres.Connect(ctx, "fulfillment")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var a, b float64
	if err := conn.QueryRow(ctx, `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
		FROM (SELECT extract(epoch FROM created_at - order_placed_at) * 1000 AS ms FROM shipments) l`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	return time.Duration(a * float64(time.Millisecond)), time.Duration(b * float64(time.Millisecond))
}

// kill SIGKILLs p and starts it again with the same settings.
func (s *eventShop) kill(t *testing.T, p *proc) *proc {
	t.Helper()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	env := s.env[p]
	q := start(s.owner, p.Name, env)
	s.env[q] = env
	return q
}

func TestEventsReachFulfilmentOnce(t *testing.T) {
	began := time.Now()
	s := startEventShop(t)
	t.Logf("shop up (Consul, Loki, PostgreSQL, NATS, catalog, payments, 2 orders, 2 fulfillment, gateway) in %s", time.Since(began).Round(time.Millisecond))

	t.Run("N orders under load over two orders replicas make N shipments over two fulfillment replicas", func(t *testing.T) {
		stop := make(chan struct{})
		finish := s.load("load", 4, stop)
		wait.For(t, 60*time.Second, func() error {
			if n := sum(t, s.orders[:], "meshplane_orders_total", map[string]string{"result": "placed"}); n < 60 {
				return fmt.Errorf("%v orders placed, want 60", n)
			}
			return nil
		})
		close(stop)
		placed, failures := finish()
		if len(failures) > 0 {
			t.Errorf("%d of %d orders failed: %v", len(failures), placed+len(failures), failures[:min(len(failures), 5)])
		}
		e := s.waitOneShipmentPerOrder(t, 0)
		t.Logf("%d orders placed → %d events → %d shipments", e.paid, e.events, e.shipments)
		for i, p := range s.orders {
			if n := p.metrics(t).Value("meshplane_orders_total", map[string]string{"result": "placed"}); n == 0 {
				t.Errorf("orders[%d] placed no order: want the load over both replicas", i)
			}
		}
		for i, p := range s.fulfillment {
			if n := p.metrics(t).Value("meshplane_events_consumed_total", consumed("processed")); n == 0 {
				t.Errorf("fulfillment[%d] processed no event: want the events shared by both replicas", i)
			}
		}
		if dup := sum(t, s.fulfillment[:], "meshplane_events_consumed_total", consumed("duplicate")); dup != 0 {
			t.Errorf("duplicates with nothing failing: %v, want 0", dup)
		}
		wait.For(t, 10*time.Second, func() error {
			for _, m := range []string{"meshplane_events_consumer_pending", "meshplane_events_consumer_ack_pending", "meshplane_events_consumer_lag_seconds"} {
				if v := highest(t, s.fulfillment[:], m, fulfillmentConsumer); v != 0 {
					return fmt.Errorf("%s caught up: %v, want 0", m, v)
				}
			}
			if v := highest(t, s.orders[:], "meshplane_outbox_pending", nil); v != 0 {
				return fmt.Errorf("meshplane_outbox_pending: %v, want 0", v)
			}
			return nil
		})
		p50, p99 := s.latencies(t)
		t.Logf("order → shipment latency over %d orders: p50 %s, p99 %s", e.shipments, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	})

	t.Run("one order's log lines join across the asynchronous hop under its trace id", func(t *testing.T) {
		code, body, hdr, err := requestH(http.MethodPost, s.gatewayURL+"/v1/orders", orderBody, map[string]string{"Idempotency-Key": "traced"})
		if err != nil || code != http.StatusCreated {
			t.Fatalf("POST: %d %s %v", code, body, err)
		}
		var o orderResp
		_ = json.Unmarshal([]byte(body), &o)
		traceID := hdr.Get("X-Trace-Id")
		wait.For(t, 30*time.Second, func() error {
			services, err := lokiServices(s.loki.URL(), `{namespace="shop"} |= "`+traceID+`"`)
			if err != nil {
				return err
			}
			if !slices.Contains(services, "gateway") || !slices.Contains(services, "orders") || !slices.Contains(services, "fulfillment") {
				return fmt.Errorf("trace %s: lines from %v, want gateway, orders and fulfillment", traceID, services)
			}
			return nil
		})
		// The gateway shows the order's fulfilment.
		wait.For(t, 10*time.Second, func() error {
			code, body, err := request(http.MethodGet, s.gatewayURL+"/v1/orders/"+o.ID, "", nil)
			if err != nil || code != http.StatusOK || !strings.Contains(body, `"fulfillment":{"status":"preparing","shipmentId":"shp_`) {
				return fmt.Errorf("GET /v1/orders/%s: %d %s, want its shipment preparing: %w", o.ID, code, body, err)
			}
			return nil
		})
	})

	t.Run("a declined order publishes no event", func(t *testing.T) {
		before := s.effects(t)
		declined := strings.Replace(orderBody, "tok_visa", "tok_decline", 1)
		code, r, _, _, err := place(s.gatewayURL, "declined", declined)
		if err != nil || code != http.StatusPaymentRequired {
			t.Fatalf("POST with a declined card: %d %+v %v, want 402", code, r, err)
		}
		// An order placed after it has its event relayed and processed: by then the declined one would
		// have been too.
		if code, r, _, _, err := place(s.gatewayURL, "after-declined", orderBody); err != nil || code != http.StatusCreated {
			t.Fatalf("POST: %d %+v %v", code, r, err)
		}
		after := s.waitOneShipmentPerOrder(t, 0)
		if after.outbox != before.outbox+1 || after.events != before.events+1 || after.shipments != before.shipments+1 {
			t.Errorf("after a declined and a paid order: outbox %d → %d, stream %d → %d, shipments %d → %d; want one more each (the paid one)",
				before.outbox, after.outbox, before.events, after.events, before.shipments, after.shipments)
		}
	})

	var drain time.Duration
	t.Run("broker stopped 15s under load: orders keep succeeding, the outbox grows, then drains, N shipments", func(t *testing.T) {
		stop := make(chan struct{})
		finish := s.load("outage", 4, stop)
		time.Sleep(time.Second) // load before the outage
		if err := s.nats.StopWithin(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		placedBefore := sum(t, s.orders[:], "meshplane_orders_total", map[string]string{"result": "placed"})
		var backlog []float64 // meshplane_outbox_pending, sampled through the outage
		for time.Since(stopped) < 15*time.Second {
			backlog = append(backlog, highest(t, s.orders[:], "meshplane_outbox_pending", nil))
			time.Sleep(time.Second)
		}
		placedDuring := sum(t, s.orders[:], "meshplane_orders_total", map[string]string{"result": "placed"}) - placedBefore
		connected := highest(t, append(s.orders[:], s.fulfillment[:]...), "meshplane_events_broker_connected", nil)
		if err := s.nats.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		close(stop)
		placed, failures := finish()
		if len(failures) > 0 {
			t.Errorf("%d of %d orders failed during the outage, want none: %v", len(failures), placed+len(failures), failures[:min(len(failures), 5)])
		}
		if placedDuring == 0 || connected != 0 {
			t.Errorf("during the outage: %v orders placed, broker_connected %v; want orders placed and every process disconnected", placedDuring, connected)
		}
		if !slices.IsSorted(backlog) || backlog[len(backlog)-1] < placedDuring*0.8 {
			t.Errorf("meshplane_outbox_pending through the outage: %v, want it growing to about the %v orders placed meanwhile", backlog, placedDuring)
		}
		var peakConsumerPending float64
		wait.For(t, 60*time.Second, func() error {
			peakConsumerPending = max(peakConsumerPending, highest(t, s.fulfillment[:], "meshplane_events_consumer_pending", fulfillmentConsumer)+
				highest(t, s.fulfillment[:], "meshplane_events_consumer_ack_pending", fulfillmentConsumer))
			if v := highest(t, s.orders[:], "meshplane_outbox_pending", nil); v != 0 {
				return fmt.Errorf("meshplane_outbox_pending after the broker returned: %v, want 0", v)
			}
			if e := s.effects(t); e.shipments != e.paid {
				return fmt.Errorf("%d shipments of %d paid orders", e.shipments, e.paid)
			}
			return nil
		})
		drain = time.Since(restarted)
		e := s.waitOneShipmentPerOrder(t, 0)
		t.Logf("broker down 15s: %v orders placed meanwhile (none failed), outbox backlog %v; drained and every order shipped %s after the broker returned (consumer backlog peaked at %v seen); %d orders → %d shipments",
			placedDuring, backlog, drain.Round(time.Millisecond), peakConsumerPending, e.paid, e.shipments)
		if oldest := highest(t, s.orders[:], "meshplane_outbox_oldest_pending_age_seconds", nil); oldest != 0 {
			t.Errorf("meshplane_outbox_oldest_pending_age_seconds once drained: %v, want 0", oldest)
		}
	})

	t.Run("a fulfillment replica SIGKILLed mid-batch: its events are delivered again, each still has one effect", func(t *testing.T) {
		for _, p := range s.fulfillment {
			p.setFaults(t, `[{"target":"orders.placed","delay":"300ms"}]`)
		}
		redeliveredBefore := sum(t, s.fulfillment[:], "meshplane_events_redelivered_total", fulfillmentConsumer)
		processedBefore := s.fulfillment[0].metrics(t).Value("meshplane_events_consumed_total", consumed("processed"))
		stop := make(chan struct{})
		finish := s.load("killed", 4, stop)
		// Mid-batch: the replica has processed some of this load and holds more, unacknowledged.
		wait.For(t, 30*time.Second, func() error {
			m := s.fulfillment[0].metrics(t)
			if m.Value("meshplane_events_consumed_total", consumed("processed")) < processedBefore+2 || m.Value("meshplane_events_consumer_ack_pending", fulfillmentConsumer) == 0 {
				return fmt.Errorf("fulfillment[0] has not processed part of the load while holding more")
			}
			return nil
		})
		s.fulfillment[0] = s.kill(t, s.fulfillment[0])
		killed := time.Now()
		time.Sleep(time.Second)
		close(stop)
		placed, failures := finish()
		if len(failures) > 0 {
			t.Errorf("%d of %d orders failed: %v", len(failures), placed+len(failures), failures[:min(len(failures), 5)])
		}
		s.fulfillment[1].setFaults(t, "")
		wait.For(t, 30*time.Second, s.fulfillment[0].ready)
		e := s.waitOneShipmentPerOrder(t, 0)
		redelivered := sum(t, s.fulfillment[:], "meshplane_events_redelivered_total", fulfillmentConsumer) - redeliveredBefore
		t.Logf("fulfillment[0] killed holding events; %v redelivered (ack wait %s), every order shipped once %s after the kill: %d orders → %d shipments",
			redelivered, testAckWait, time.Since(killed).Round(time.Millisecond), e.paid, e.shipments)
		if redelivered == 0 {
			t.Errorf("meshplane_events_redelivered_total grew by 0, want the killed replica's unacknowledged events delivered again")
		}
	})

	t.Run("a poison event is dead-lettered after the configured deliveries with its reason; the others carry on", func(t *testing.T) {
		ctx := context.Background()
		failedBefore := sum(t, s.fulfillment[:], "meshplane_events_consumed_total", consumed("failed"))
		msg := nats.NewMsg(eventsv1.OrderPlacedSubject)
		msg.Data = []byte("not a protobuf \xff\xff\xff")
		msg.Header.Set(eventsv1.HeaderMsgID, "evt_poison")
		msg.Header.Set(eventsv1.HeaderEventType, eventsv1.OrderPlacedType)
		if _, err := s.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if code, r, _, _, err := place(s.gatewayURL, fmt.Sprint("beside-poison-", i), orderBody); err != nil || code != http.StatusCreated {
				t.Fatalf("POST: %d %+v %v", code, r, err)
			}
		}
		s.waitOneShipmentPerOrder(t, 1) // the stream holds the poison event besides the orders' events
		var dead *jetstream.RawStreamMsg
		wait.For(t, 30*time.Second, func() error {
			m, err := s.js.Stream(ctx, eventsv1.DeadLetterStream)
			if err != nil {
				return err
			}
			dead, err = m.GetLastMsgForSubject(ctx, eventsv1.DeadLetterSubject("fulfillment", eventsv1.OrderPlacedSubject))
			if err != nil {
				return err
			}
			return nil
		})
		var got struct{ id, reason, deliveries string }
		got.id, got.reason, got.deliveries = dead.Header.Get(eventsv1.HeaderMsgID), dead.Header.Get(eventsv1.HeaderDeadLetterReason), dead.Header.Get(eventsv1.HeaderDeliveries)
		if got.id != "evt_poison" || !strings.Contains(got.reason, "decode meshplane.events.v1.OrderPlaced") || got.deliveries != strconv.Itoa(testMaxDeliveries) {
			t.Errorf("dead letter: id %q, reason %q, after %q deliveries; want evt_poison, the decoding error, after %d", got.id, got.reason, got.deliveries, testMaxDeliveries)
		}
		wait.For(t, 10*time.Second, func() error {
			if n := sum(t, s.fulfillment[:], "meshplane_events_consumed_total", consumed("dead_lettered")); n != 1 {
				return fmt.Errorf("dead_lettered: %v, want 1", n)
			}
			return nil
		})
		if n := sum(t, s.fulfillment[:], "meshplane_events_consumed_total", consumed("failed")) - failedBefore; n != testMaxDeliveries-1 {
			t.Errorf("failed deliveries of the poison event: %v, want %d (then the last one dead-lettered it)", n, testMaxDeliveries-1)
		}
		t.Logf("poison event dead-lettered after %s deliveries: %q", got.deliveries, got.reason)
	})

	p50, p99 := s.latencies(t)
	t.Logf("order → shipment latency over every order of the test (outage and kill included): p50 %s, p99 %s; drain after a 15s outage %s",
		p50.Round(time.Millisecond), p99.Round(time.Millisecond), drain.Round(time.Millisecond))
}
