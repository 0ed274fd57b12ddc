package localplatform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
)

// ScenarioEvents is the events drill: the broker frozen under load, a fulfillment replica killed
// holding events, a poison event; then every order the clients placed checked for exactly one shipment.
const ScenarioEvents = "events"

// eventsFreeze is how long the events drill freezes the broker.
const eventsFreeze = 15 * time.Second

// eventCounters are the event flow's metrics from the processes' own /metrics: the gauges every instance
// reports whole (their max), and each instance's counters.
type eventCounters struct {
	outbox, pending, inFlight, lag float64
	instances                      map[string]consumerCounters
}

// consumerCounters are one fulfillment instance's counters.
type consumerCounters struct{ processed, redelivered, dead, duplicate float64 }

// since is how much the counters grew from prev, over every instance: a counter lower than before is a
// restarted instance's, counted from 0 (as Prometheus' increase does), and a killed instance's is not lost.
func (c eventCounters) since(prev eventCounters) consumerCounters {
	var d consumerCounters
	grew := func(now, before float64) float64 {
		if now < before {
			return now
		}
		return now - before
	}
	for key, now := range c.instances {
		before := prev.instances[key]
		d.processed += grew(now.processed, before.processed)
		d.redelivered += grew(now.redelivered, before.redelivered)
		d.dead += grew(now.dead, before.dead)
		d.duplicate += grew(now.duplicate, before.duplicate)
	}
	return d
}

func readEventCounters(ctx context.Context, st *State) eventCounters {
	c := eventCounters{instances: map[string]consumerCounters{}}
	consumer := map[string]string{"consumer": "fulfillment"}
	result := func(r string) map[string]string { return map[string]string{"consumer": "fulfillment", "result": r} }
	for _, in := range shopInstances() {
		if in.svc.name != "orders" && in.svc.name != "fulfillment" {
			continue
		}
		f, err := metricstest.Scrape(ctx, "http://"+st.Ports.Addr(in.key+"-admin")+"/metrics")
		if err != nil {
			continue // a killed replica: the others still count
		}
		c.outbox = max(c.outbox, f.Value("meshplane_outbox_pending", nil))
		c.pending = max(c.pending, f.Value("meshplane_events_consumer_pending", consumer))
		c.inFlight = max(c.inFlight, f.Value("meshplane_events_consumer_ack_pending", consumer))
		c.lag = max(c.lag, f.Value("meshplane_events_consumer_lag_seconds", consumer))
		if in.svc.name == "fulfillment" {
			c.instances[in.key] = consumerCounters{
				processed:   f.Value("meshplane_events_consumed_total", result("processed")),
				duplicate:   f.Value("meshplane_events_consumed_total", result("duplicate")),
				dead:        f.Value("meshplane_events_consumed_total", result("dead_lettered")),
				redelivered: f.Value("meshplane_events_redelivered_total", consumer),
			}
		}
	}
	return c
}

// eventsDrill places orders through the gateway with clients that retry each with its key, and prints
// every interval what the clients saw beside the event flow's metrics: orders' outbox, the consumer's
// backlog and lag, shipments created, redeliveries and dead letters. It freezes NATS (SIGSTOP) for 15s —
// every publish times out, as with a broker cut off — and measures the drain once it resumes; slows
// fulfillment and kills fulfillment-2 holding events, which are delivered again; and publishes a poison
// event, which is dead-lettered with its reason while the others go on. It fails unless every order the
// clients were told was placed has exactly one shipment.
func eventsDrill(ctx context.Context, cfg Config, st *State, o DrillOptions, out io.Writer) error {
	gateway := "http://" + st.Ports.Addr("gateway")
	prefix := "evdrill-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "Events drill: %d clients place orders through the gateway (each retried with its Idempotency-Key until placed); orders relays\n", dbDrillClients)
	fmt.Fprintf(out, "each OrderPlaced event from its outbox to NATS, fulfillment's 2 replicas create a shipment per event. %s normal, then NATS\n", o.Baseline)
	fmt.Fprintf(out, "frozen (SIGSTOP) for %s, then fulfillment-2 slowed and killed holding events, then a poison event.\n", eventsFreeze)
	fmt.Fprintf(out, "outbox: events not yet acknowledged by NATS; pending/in flight: the consumer's not yet delivered/not yet acknowledged.\n\n")

	began := time.Now()
	var mu sync.Mutex
	placed := map[string]string{} // key → order id the gateway answered with
	var ok, failed int
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for c := range dbDrillClients {
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for n := 0; loadCtx.Err() == nil; n++ {
				key := fmt.Sprintf("%s-%d-%d", prefix, c, n)
				for {
					code, id, _ := postOrder(ctx, client, gateway, key)
					mu.Lock()
					if code == http.StatusCreated {
						placed[key] = id
						ok++
					} else {
						failed++
					}
					mu.Unlock()
					if code == http.StatusCreated || ctx.Err() != nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(time.Duration(float64(time.Second) * dbDrillClients / o.OrderRate))
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()

	const rowFormat = "%5s  %-22s  %6s  %6s  %6s  %7s  %9s  %5s  %7s  %11s  %4s\n"
	fmt.Fprintf(out, rowFormat, "t", "phase", "placed", "failed", "outbox", "pending", "in flight", "lag", "shipped", "redelivered", "dead")
	prev := readEventCounters(ctx, st)
	start := prev
	lastOK, lastFailed := 0, 0
	row := func(phase string) eventCounters {
		c := readEventCounters(ctx, st)
		mu.Lock()
		dOK, dFailed := ok-lastOK, failed-lastFailed
		lastOK, lastFailed = ok, failed
		mu.Unlock()
		d := c.since(prev)
		fmt.Fprintf(out, rowFormat, fmt.Sprintf("%.0fs", time.Since(began).Seconds()), phase, strconv.Itoa(dOK), strconv.Itoa(dFailed),
			whole(c.outbox), whole(c.pending), whole(c.inFlight), fmt.Sprintf("%.1fs", c.lag),
			whole(d.processed), whole(d.redelivered), whole(d.dead))
		prev = c
		return c
	}
	phase := func(name string, d time.Duration) error {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(o.Every, time.Until(end))):
			}
			row(name)
		}
		return nil
	}
	// until prints rows of phase name until done holds, at most limit, and returns how long that took:
	// done is checked every 250ms, a row printed every interval and when it holds.
	until := func(name string, limit time.Duration, done func(eventCounters) bool) (time.Duration, error) {
		t, lastRow := time.Now(), time.Now()
		for time.Since(t) < limit {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
			if c := readEventCounters(ctx, st); done(c) {
				took := time.Since(t)
				row(name)
				return took, nil
			}
			if time.Since(lastRow) >= o.Every {
				lastRow = time.Now()
				row(name)
			}
		}
		return 0, fmt.Errorf("%s: not done within %s", name, limit)
	}
	caughtUp := func(c eventCounters) bool { return c.outbox == 0 && c.pending == 0 && c.inFlight == 0 }

	var errs []error
	if err := phase("baseline", o.Baseline); err != nil {
		return err
	}

	// The broker frozen: its process stopped, connections open, nothing answered.
	if err := signalComponent(cfg, "nats", syscall.SIGSTOP); err != nil {
		return err
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = signalComponent(cfg, "nats", syscall.SIGCONT)
		}
	}
	defer resume()
	if err := phase("NATS frozen", eventsFreeze); err != nil {
		return err
	}
	frozen := prev
	resume()
	drain, err := until("NATS resumed", time.Minute, caughtUp)
	if err != nil {
		errs = append(errs, err)
	}
	if frozen.outbox == 0 {
		errs = append(errs, errors.New("the outbox did not grow while NATS was frozen"))
	}

	// fulfillment-2 slowed (2s per event), so that it holds several events — the other replica, fast,
	// holds next to none, so the consumer's in-flight count is fulfillment-2's — then killed holding them.
	faults := "http://" + st.Ports.Addr("fulfillment-2-admin") + "/admin/faults"
	defer func() { _ = send(context.Background(), http.MethodDelete, faults, nil) }()
	if err := send(ctx, http.MethodPut, faults, []byte(`[{"target":"orders.placed","delay":"2s"}]`)); err != nil {
		return fmt.Errorf("slow fulfillment-2: %w", err)
	}
	if _, err := until("fulfillment-2 slowed", 30*time.Second, func(c eventCounters) bool { return c.inFlight >= 3 }); err != nil {
		return fmt.Errorf("%w (fulfillment-2 never held 3 events)", err)
	}
	beforeKill := prev
	if err := signalComponent(cfg, "fulfillment-2", syscall.SIGKILL); err != nil {
		return err
	}
	if err := phase("fulfillment-2 killed", o.Every); err != nil {
		return err
	}
	if _, err := until("redelivery", time.Minute, func(c eventCounters) bool {
		return c.since(beforeKill).redelivered > 0 && caughtUp(c)
	}); err != nil {
		errs = append(errs, fmt.Errorf("%w (the killed replica's events were not delivered again, or the backlog did not drain)", err))
	}
	afterKill := readEventCounters(ctx, st).since(beforeKill)

	// A poison event: fails every delivery, is dead-lettered after the last, and the others go on.
	poisonID := "evt_poison_" + prefix
	if err := publishPoison(ctx, st, poisonID); err != nil {
		return err
	}
	var reason string
	if _, err := until("poison event", time.Minute, func(c eventCounters) bool { return c.since(start).dead > 0 }); err != nil {
		errs = append(errs, err)
	} else if reason, err = deadLetterReason(ctx, st, poisonID); err != nil {
		errs = append(errs, err)
	}

	stopLoad()
	wg.Wait() // each client finishes the order it holds: retried until placed
	if _, err := until("drain", time.Minute, caughtUp); err != nil {
		errs = append(errs, err)
	}

	mu.Lock()
	defer mu.Unlock()
	ids := make([]string, 0, len(placed))
	for _, id := range placed {
		ids = append(ids, id)
	}
	sh, err := drillShipments(ctx, cfg, st, ids)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	fmt.Fprintf(out, "\nNATS frozen %s: the outbox grew to %s events and drained %s after it resumed; orders never failed because of it.\n",
		eventsFreeze, whole(frozen.outbox), drain.Round(100*time.Millisecond))
	fmt.Fprintf(out, "fulfillment-2 killed holding events: %s deliveries were redeliveries, %s of them found already processed (nothing done twice).\n",
		whole(afterKill.redelivered), whole(afterKill.duplicate))
	fmt.Fprintf(out, "Poison event %s dead-lettered: \"%s\".\n", poisonID, reason)
	fmt.Fprintf(out, "Orders the clients were told were placed: %d. Shipments for them: %d, each order at most one (unique); order → shipment p50 %s, p99 %s.\n",
		len(placed), sh.shipments, sh.p50.Round(time.Millisecond), sh.p99.Round(time.Millisecond))
	if sh.shipments != len(placed) {
		errs = append(errs, fmt.Errorf("%d orders placed, %d shipments for them", len(placed), sh.shipments))
	}
	return errors.Join(errs...)
}

// whole prints a count read from a metric.
func whole(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// publishPoison publishes an OrderPlaced that cannot be decoded, with event id id.
func publishPoison(ctx context.Context, st *State, id string) error {
	nc, err := nats.Connect("nats://" + st.Ports.Addr("nats"))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	msg := nats.NewMsg("orders.placed")
	msg.Data = []byte("not a protobuf \xff\xff")
	msg.Header.Set("Nats-Msg-Id", id)
	msg.Header.Set("Meshplane-Event-Type", "meshplane.events.v1.OrderPlaced")
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(pctx, msg); err != nil {
		return fmt.Errorf("publish the poison event: %w", err)
	}
	return nil
}

// deadLetterReason reads the reason fulfillment gave for dead-lettering event id.
func deadLetterReason(ctx context.Context, st *State, id string) (string, error) {
	nc, err := nats.Connect("nats://" + st.Ports.Addr("nats"))
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(pctx, "DEADLETTER")
	if err != nil {
		return "", fmt.Errorf("dead-letter stream: %w", err)
	}
	m, err := s.GetLastMsgForSubject(pctx, "deadletter.fulfillment.orders.placed")
	if err != nil {
		return "", fmt.Errorf("dead letter: %w", err)
	}
	if got := m.Header.Get("Nats-Msg-Id"); got != id {
		return "", fmt.Errorf("last dead letter is %s, want %s", got, id)
	}
	return m.Header.Get("Meshplane-Dead-Letter-Reason") + " (after " + m.Header.Get("Meshplane-Deliveries") + " deliveries)", nil
}

// shipmentsOf is what fulfillment's database holds of the drill's orders.
type shipmentsOf struct {
	shipments int
	p50, p99  time.Duration
}

// drillShipments counts the shipments of orders ids, waiting for them (up to a minute) while fewer
// than len(ids) exist, and the latency percentiles of those orders. Fewer shipments than orders after
// the minute is not an error here: the caller reports the difference.
func drillShipments(ctx context.Context, cfg Config, st *State, ids []string) (shipmentsOf, error) {
	var s shipmentsOf
	password, err := pgpassPassword(cfg.pgpassPath())
	if err != nil {
		return s, err
	}
	c, err := pgx.ParseConfig("postgres://" + devserver.PostgresSuperuser + "@" + st.Ports.Addr("postgres") + "/fulfillment?sslmode=disable")
	if err != nil {
		return s, err
	}
	c.Password = password
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = wait.Until(wctx, 500*time.Millisecond, func(ctx context.Context) error {
		conn, err := pgx.ConnectConfig(ctx, c)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close(context.Background()) }()
		var p50, p99 *float64
		if err := conn.QueryRow(ctx, `SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
			FROM (SELECT extract(epoch FROM created_at - order_placed_at) * 1000 AS ms FROM shipments WHERE order_id = ANY($1)) l`, ids).
			Scan(&s.shipments, &p50, &p99); err != nil {
			return err
		}
		if p50 != nil && p99 != nil {
			s.p50, s.p99 = time.Duration(*p50*float64(time.Millisecond)), time.Duration(*p99*float64(time.Millisecond))
		}
		if s.shipments < len(ids) {
			return fmt.Errorf("%d shipments of %d orders", s.shipments, len(ids))
		}
		return nil
	})
	if err != nil && s.shipments == 0 && len(ids) > 0 {
		return s, fmt.Errorf("fulfillment's database: %w", err)
	}
	return s, nil
}
