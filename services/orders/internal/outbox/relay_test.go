package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/devkit/metricstest"
	"meshplane.dev/mesh/devkit/wait"
	"meshplane.dev/mesh/events"
	"meshplane.dev/mesh/pgstore"
	eventsv1 "meshplane.dev/services/proto/events/v1"

	"meshplane.dev/services/orders/internal/outbox"
	"meshplane.dev/services/orders/internal/store"
)

var shared *devserver.Postgres

func TestMain(m *testing.M) { os.Exit(devservertest.MainWithPostgres(m, &shared)) }

var settings = outbox.Settings{Interval: 100 * time.Millisecond, BatchSize: 16, PublishTimeout: time.Second,
	Retention: time.Hour, StreamReplicas: 1, DuplicateWindow: 10 * time.Minute}

// replica is one orders process's store and relay over the shared database.
type replica struct {
	store *store.Store
	relay *outbox.Relay
	reg   *prometheus.Registry
}

func newReplica(t *testing.T, db, natsURL string) replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := pgstore.DefaultDatabaseConfig(shared.URL(db))
	cfg.DatabasePassword = shared.Password
	logger := slog.New(slog.DiscardHandler)
	pool, err := pgstore.Open(context.Background(), cfg, pgstore.Options{Component: store.Component, Migrations: store.Migrations(),
		Operations: store.Operations, Logger: logger, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	nc, err := events.Connect("orders", events.Config{NATSURL: natsURL, NATSReconnectWait: 100 * time.Millisecond}, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st := store.New(pool)
	r, err := outbox.New(logger, reg, st, nc, settings)
	if err != nil {
		t.Fatal(err)
	}
	return replica{store: st, relay: r, reg: reg}
}

// run runs the relay until the test ends.
func (r replica) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (r replica) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	f, err := metricstest.Gather(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	return f.Value(name, labels)
}

// placeOrders records n orders as paid through st, each with its event in the outbox, as PlaceOrder does,
// and returns their event ids. It may run in a goroutine of its own: a failure is reported, not fatal.
func placeOrders(t *testing.T, st *store.Store, prefix string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		o := store.Order{ID: fmt.Sprintf("ord_%s_%d", prefix, i), IdempotencyKey: fmt.Sprintf("%s-%d", prefix, i), Fingerprint: "f",
			Currency: "EUR", TotalCents: 100, Items: []store.Item{{ProductID: "cup", Quantity: 1, UnitPriceCents: 100}}}
		if _, _, err := st.Create(ctx, o, time.Minute); err != nil {
			t.Error(err)
			return ids
		}
		ev := store.Event{ID: "evt_" + o.ID, Subject: eventsv1.OrderPlacedSubject, Type: eventsv1.OrderPlacedType, Payload: []byte(o.ID)}
		if _, paid, err := st.MarkPaid(ctx, o.ID, "ch_"+o.ID, ev); err != nil || !paid {
			t.Errorf("mark %s paid: %v %v", o.ID, paid, err)
			return ids
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

// streamMessages returns how many messages the ORDERS stream holds with each Nats-Msg-Id.
func streamMessages(t *testing.T, natsURL string) map[string]int {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, eventsv1.OrdersStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range info.NumPending {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got[m.Headers().Get(eventsv1.HeaderMsgID)]++
	}
	return got
}

func checkEachOnce(t *testing.T, natsURL string, ids []string) {
	t.Helper()
	got := streamMessages(t, natsURL)
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s: %d messages in the stream, want 1", id, got[id])
		}
	}
	if len(got) != len(ids) {
		t.Errorf("stream holds %d distinct events, want %d", len(got), len(ids))
	}
}

// Two replicas relay one outbox at once: every event reaches the stream once, and together they
// published each once (FOR UPDATE SKIP LOCKED: neither published a row the other had locked).
func TestTwoRelaysPublishEachEventOnce(t *testing.T) {
	n := devservertest.NATS(t)
	db := devservertest.PostgresDatabase(t, shared)
	a, b := newReplica(t, db, n.ClientURL()), newReplica(t, db, n.ClientURL())
	a.run(t)
	b.run(t)
	var ids []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, r := range []replica{a, b} {
		wg.Go(func() {
			got := placeOrders(t, r.store, fmt.Sprint("r", i), 100)
			mu.Lock()
			ids = append(ids, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	wait.For(t, 30*time.Second, func() error {
		if p := a.metric(t, outbox.MetricPending, nil); p != 0 {
			return fmt.Errorf("%s: %v, want 0", outbox.MetricPending, p)
		}
		return nil
	})
	published := a.metric(t, outbox.MetricPublished, map[string]string{"result": "ok"}) + b.metric(t, outbox.MetricPublished, map[string]string{"result": "ok"})
	if published != 200 {
		t.Errorf("published by both relays: %v, want 200 (each event once)", published)
	}
	t.Logf("relay a published %v, b %v", a.metric(t, outbox.MetricPublished, map[string]string{"result": "ok"}), b.metric(t, outbox.MetricPublished, map[string]string{"result": "ok"}))
	checkEachOnce(t, n.ClientURL(), ids)
}

// A relay that published a batch but died before recording it (its transaction rolled back) leaves the
// rows pending; they are published again with the same ids, and the stream keeps one copy of each. With
// the broker down, orders are still paid and their events wait in the outbox — the backlog gauges grow —
// and once it is back the relay drains them, each reaching the stream once.
func TestBrokerOutageGrowsTheBacklogThenDrains(t *testing.T) {
	n := devservertest.NATS(t)
	db := devservertest.PostgresDatabase(t, shared)
	r := newReplica(t, db, n.ClientURL())
	ctx := context.Background()
	ids := placeOrders(t, r.store, "before", 5)

	// The stream exists once a relay has run; this one publishes, then loses its transaction.
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: eventsv1.OrdersStream, Subjects: []string{eventsv1.OrdersSubjects},
		Duplicates: settings.DuplicateWindow}); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("relay died before committing")
	locked, _, err := r.store.Relay(ctx, 10, func(ctx context.Context, evs []store.Event) ([]string, error) {
		for _, e := range evs {
			msg := nats.NewMsg(e.Subject)
			msg.Data = e.Payload
			msg.Header.Set(eventsv1.HeaderMsgID, e.ID)
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				return nil, err
			}
		}
		return nil, crash
	})
	if err != nil || locked != 5 {
		t.Fatalf("the crashing relay: %d events locked, %v; want 5 published and left pending", locked, err)
	}
	r.run(t)
	wait.For(t, 10*time.Second, func() error {
		if p := r.metric(t, outbox.MetricPublished, map[string]string{"result": "ok"}); p != 5 {
			return fmt.Errorf("published: %v, want the 5 left pending published again", p)
		}
		return nil
	})
	checkEachOnce(t, n.ClientURL(), ids)

	if err := n.StopWithin(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, placeOrders(t, r.store, "during", 40)...)
	wait.For(t, 10*time.Second, func() error {
		if p := r.metric(t, outbox.MetricPending, nil); p != 40 {
			return fmt.Errorf("%s with the broker down: %v, want 40", outbox.MetricPending, p)
		}
		if age := r.metric(t, outbox.MetricOldestAge, nil); age <= 0 {
			return fmt.Errorf("%s with the broker down: %v, want > 0", outbox.MetricOldestAge, age)
		}
		return nil
	})
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	wait.For(t, 30*time.Second, func() error {
		if p := r.metric(t, outbox.MetricPending, nil); p != 0 {
			return fmt.Errorf("%s after the broker returned: %v, want 0", outbox.MetricPending, p)
		}
		return nil
	})
	t.Logf("40 events drained %s after the broker returned", time.Since(began).Round(time.Millisecond))
	if age := r.metric(t, outbox.MetricOldestAge, nil); age != 0 {
		t.Errorf("%s once drained: %v, want 0", outbox.MetricOldestAge, age)
	}
	checkEachOnce(t, n.ClientURL(), ids)
}
