package store_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/devservertest"
	"meshplane.dev/mesh/pgstore"

	"meshplane.dev/services/fulfillment/internal/store"
)

var shared *devserver.Postgres

func TestMain(m *testing.M) { os.Exit(devservertest.MainWithPostgres(m, &shared)) }

func open(t *testing.T) *store.Store {
	t.Helper()
	cfg := pgstore.DefaultDatabaseConfig(shared.URL(devservertest.PostgresDatabase(t, shared)))
	cfg.DatabasePassword = shared.Password
	db, err := pgstore.Open(context.Background(), cfg, pgstore.Options{Component: store.Component, Migrations: store.Migrations(),
		Operations: store.Operations, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return store.New(db)
}

func shipment(id, order string) store.Shipment {
	return store.Shipment{ID: id, OrderID: order, TotalCents: 1200, Currency: "EUR", OrderPlacedAt: time.Now(),
		Items: []store.Item{{ProductID: "cup", Quantity: 1}}}
}

// An event processed again — redelivered, concurrently on two replicas, or a second event about the same
// order — creates nothing more: one shipment per order, the first event's.
func TestProcessingAnEventTwiceChangesNothing(t *testing.T) {
	st := open(t)
	ctx := context.Background()
	delivery := store.Delivery{Subject: "orders.placed", StreamSequence: 7, Deliveries: 1}

	var wg sync.WaitGroup
	created := make([]bool, 8)
	for i := range created {
		wg.Go(func() {
			c, err := st.Process(ctx, "evt_1", delivery, shipment("shp_"+string(rune('a'+i)), "ord_1"))
			if err != nil {
				t.Error(err)
			}
			created[i] = c
		})
	}
	wg.Wait()
	n := 0
	for _, c := range created {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Errorf("eight concurrent deliveries of one event created %d shipments, want 1", n)
	}
	if c, err := st.Process(ctx, "evt_2", delivery, shipment("shp_z", "ord_1")); err != nil || c {
		t.Errorf("another event for the same order: created %v, %v; want nothing created", c, err)
	}
	sh, err := st.Shipment(ctx, "ord_1")
	if err != nil || sh.EventID != "evt_1" || sh.Status != store.StatusPreparing || sh.Deliveries != 1 || len(sh.Items) != 1 {
		t.Errorf("shipment of ord_1: %+v %v, want the first event's, preparing", sh, err)
	}
	if _, err := st.Shipment(ctx, "ord_none"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("shipment of an unknown order: %v, want ErrNotFound", err)
	}
}
